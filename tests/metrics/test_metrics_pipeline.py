"""evaluate_predictions (notebooks 04/05), compare (paired bootstrap), bad input, the benchmark's exact
labels."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from reg2rg_lib.cli import main
from reg2rg_lib.errors import BadInputError
from reg2rg_lib.metrics import evaluate_predictions
from reg2rg_lib.metrics.pipeline import compare_predictions
from reg2rg_lib.metrics.stats import bootstrap_indices, paired_test, percentile_ci
from reg2rg_lib.regions import LABELS

PARAS = {
    "heart": [
        "The heart is enlarged (cardiomegaly).",
        "Heart size is normal and there is no pericardial effusion.",
    ],
    "lung": [
        "A 12 mm solid nodule is seen in the right upper lobe.",
        "Both lungs are clear, with no nodule.",
    ],
    "pleura": ["There is a left pleural effusion measuring 20 mm.", "There is no pleural effusion."],
    "trachea and bronchie": [
        "The trachea and both main bronchi are open.",
        "The trachea and bronchi are open.",
    ],
}


def _report(choice: list[int], names: list[str]) -> str:
    return " ".join(f"The region {i} is {n}: {PARAS[r][c]}" for i, (r, c, n) in
                    enumerate(zip(PARAS, choice, names)))


def _write_case_files(tmp_path, n=12, seed=0, damage=0.5):
    rng = np.random.default_rng(seed)
    regions = list(PARAS)
    rows, labels = [], []
    for k in range(n):
        gt_choice = list(rng.integers(0, 2, len(PARAS)))
        pred_choice = [c if rng.random() > damage else 1 - c for c in gt_choice]
        names = list(regions)
        if rng.random() < damage:
            names[1], names[2] = names[2], names[1]  # the model swaps lung and pleura
        rows.append(
            {
                "AccNum": f"valid_{k + 1}_a_1",
                "Question": "q",
                "GT_combined_report": _report(gt_choice, regions),
                "Pred_combined_report": _report(pred_choice, names),
            }
        )
        lab = dict.fromkeys(LABELS, 0)
        lab["Cardiomegaly"], lab["Lung nodule"], lab["Pleural effusion"] = (
            int(gt_choice[0] == 0),
            int(gt_choice[1] == 0),
            int(gt_choice[2] == 0),
        )
        labels.append({"VolumeName": f"valid_{k + 1}_a_1.nii.gz", **lab})
    pred = tmp_path / f"pred_{seed}_{damage}.csv"
    pd.DataFrame(rows).to_csv(pred, index=False)
    lab_csv = tmp_path / "valid_predicted_labels.csv"
    pd.DataFrame(labels).to_csv(lab_csv, index=False)
    return pred, lab_csv


def test_evaluate_predictions_writes_everything(nltk_ready, tmp_path):
    pred, labels = _write_case_files(tmp_path)
    out = tmp_path / "metrics"
    head = evaluate_predictions(pred, out, labels=labels, by_region=True, bootstrap=100)
    for name in ("nlg_evaluation_results.csv", "nlg_per_sample.csv", "nlg_evaluation.json", "ce_labels.csv",
                 "ce_metrics.csv", "ce_classification_report.txt", "ce_metrics.json", "region_metrics.json",
                 "region_classification_report.txt", "summary.json", "nlg_by_region.csv"):
        assert (out / name).is_file(), name
    assert head["n"] == 12 and 0 < head["region_accuracy"] < 1
    for key in ("BLEU-1", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "Overall_BLEU-4", "CE_micro_F1"):
        assert 0 <= head[key] <= 10, key
    ce = json.loads((out / "ce_metrics.json").read_text())
    assert ce["reference_labels"].endswith("valid_predicted_labels.csv")
    by_region = pd.read_csv(out / "nlg_by_region.csv")
    assert set(by_region["region"]) == {"all", *PARAS}
    # the labeler reproduces the exact reference labels from the reference text
    same = evaluate_predictions(pred, tmp_path / "m2", bootstrap=0)
    assert same["CE_micro_F1"] == pytest.approx(head["CE_micro_F1"])


def test_empty_and_malformed_predictions(nltk_ready, tmp_path):
    pred, _ = _write_case_files(tmp_path, n=4)
    table = pd.read_csv(pred)
    table.loc[0, "Pred_combined_report"] = ""
    table.to_csv(tmp_path / "empty_one.csv", index=False)
    with pytest.warns(UserWarning, match="empty_one.csv: 1 of 4 predictions are empty"):
        head = evaluate_predictions(tmp_path / "empty_one.csv", tmp_path / "o", bootstrap=0)
    assert np.isfinite(head["BLEU-4"])
    table.drop(columns=["Pred_combined_report"]).to_csv(tmp_path / "nopred.csv", index=False)
    with pytest.raises(BadInputError, match="nopred.csv: no report columns found"):
        evaluate_predictions(tmp_path / "nopred.csv", tmp_path / "o")
    with pytest.raises(BadInputError, match="lacks column\\(s\\) 'Prediction'"):
        evaluate_predictions(pred, tmp_path / "o", pred_column="Prediction")
    with pytest.raises(BadInputError, match="not found"):
        evaluate_predictions(tmp_path / "absent.csv", tmp_path / "o")
    assert (
        main(["evaluate", "nlg", "--predictions", str(tmp_path / "nopred.csv"), "--out", str(tmp_path)]) == 2
    )


def test_bootstrap_and_paired_test_basics():
    idx = bootstrap_indices(50, 400, seed=1)
    values = np.linspace(0, 1, 50)
    low, high = percentile_ci(values[idx].mean(1))
    assert low < values.mean() < high and high - low < 0.3
    same = paired_test(values[idx].mean(1), values[idx].mean(1), 0.5, 0.5)
    assert same["delta"] == 0 and same["p_value"] == 1.0
    better = paired_test(values[idx].mean(1), (values + 0.2)[idx].mean(1), 0.5, 0.7)
    assert better["p_value"] == 0.0 and better["ci95"][0] == pytest.approx(0.2)


def test_compare_two_prediction_files(nltk_ready, tmp_path):
    good, _ = _write_case_files(tmp_path, n=16, seed=3, damage=0.0)
    bad, _ = _write_case_files(tmp_path, n=16, seed=3, damage=0.6)
    table = compare_predictions(bad, good, n_resamples=200).set_index("metric")
    assert table.loc["BLEU-4", "delta"] > 0 and table.loc["BLEU-4", "p_value"] < 0.05
    assert table.loc["region_accuracy", "B"] == 1.0
    assert (
        main(
            [
                "evaluate",
                "compare",
                str(bad),
                str(good),
                "--resamples",
                "50",
                "--out",
                str(tmp_path / "c"),
                "--json",
            ]
        )
        == 0
    )
    assert (tmp_path / "c" / "compare.csv").is_file()


def test_labeler_on_the_embedded_benchmark_reports(tmp_path):
    """The benchmark's reports come with exact labels: the rules should reproduce them (goal >= 0.95 macro
    F1)."""
    pytest.importorskip("reg2rg_lib.data.synth.build")
    from reg2rg_lib.data.synth.build import synthesize
    from reg2rg_lib.env.assets import find_ct_source
    from reg2rg_lib.errors import KitError
    from reg2rg_lib.metrics.labeler import RuleLabeler, agreement

    try:
        find_ct_source()
    except KitError as err:
        pytest.skip(str(err))
    synthesize(tmp_path / "bench", n_train=0, n_test=6, seed=0, shape=(64, 64, 16), progress=False)
    reports = pd.read_csv(tmp_path / "bench" / "valid_region_report.csv")
    whole = reports[reports.iloc[:, 1].isna()]
    truth = pd.read_csv(tmp_path / "bench" / "valid_predicted_labels.csv")
    merged = whole.merge(truth, left_on=reports.columns[0], right_on="VolumeName")
    got = RuleLabeler().label(merged.iloc[:, 2].tolist())
    table = agreement(merged[list(LABELS)].astype(int).reset_index(drop=True), got).set_index("label")
    assert table.loc["macro (present labels) avg", "f1"] >= 0.95
