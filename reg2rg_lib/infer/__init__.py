"""Inference: batched generation into the released predictions CSV (Sec. IV; notebook 04).

    generate.py     decoding settings, `generate_predictions` over a split of the prep cache, `generate_run`,
                    and `decode_engine` (HF generate for sampling and models the kit's loops do not cover)
    decoder.py      the kit's greedy loops (`greedy_generate`: a KV cache allocated once, identical to HF
                    generate; `greedy_generate_rereference` for re-reference models)
    beam.py         beam search on the same pieces (`beam_generate`, `generate.num_beams > 1`)
    predictions.py  the predictions CSV (`AccNum, Question, GT_combined_report, Pred_combined_report`): read,
                    append row by row (resume), side-by-side views
    report.py       one case of a user's CT: the paper's preprocessing + generation (`reg2rg report`; the
                    files are written by report/case_report.py: they need the labeler, a later stage than
                    inference)
"""
