"""Inference: batched generation into the released predictions CSV (Sec. IV; notebook 04).

    generate.py     decoding settings, `generate_predictions` over a split of the prep cache, `generate_run`
    predictions.py  the predictions CSV (`AccNum, Question, GT_combined_report, Pred_combined_report`): read,
                    append row by row (resume), side-by-side views
"""
