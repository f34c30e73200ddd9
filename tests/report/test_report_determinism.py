"""Every table and figure of a smoke-profile run, regenerated twice from the same files, is byte-identical.

The run folder is built here without training: predictions written by hand for two runs, evaluated with the
real `evaluate_predictions`, a training log per run, and the ablation summary and stats from
`reg2rg_lib.experiments.runner`.
"""

from __future__ import annotations

import filecmp

import pandas as pd
import pytest

from reg2rg_lib.experiments.ablation_stats import ablation_stats
from reg2rg_lib.experiments.summary import write_summary
from reg2rg_lib.paths import RunPaths
from reg2rg_lib.report.regenerate import Inputs, regenerate

GT = [
    "The region 0 is heart: Heart size is normal. The region 1 is lung: A nodule is seen in the right "
    "upper lobe. Emphysema is present.",
    "The region 0 is lung: Bilateral pleural effusion. The region 1 is pleura: Pleural thickening on the "
    "left.",
    "The region 0 is bone: No destruction. The region 1 is heart: Cardiomegaly. Pericardial effusion is "
    "seen.",
    "The region 0 is lung: No nodule. Lung fields are clear. The region 1 is mediastinum: No "
    "lymphadenopathy.",
]
PRED = {
    "full": [
        "The region 0 is heart: Heart size is normal. The region 1 is lung: A nodule is seen in the left "
        "lobe.",
        "The region 0 is lung: Bilateral pleural effusion. The region 1 is pleura: Normal pleura.",
        "The region 0 is bone: No destruction. The region 1 is heart: Cardiomegaly.",
        "The region 0 is lung: Emphysema. The region 1 is heart: No lymphadenopathy.",
    ],
    "no_rra": [
        "Heart size is normal. No nodule.",
        "Pleural effusion.",
        "Cardiomegaly.",
        "Lung fields are clear.",
    ],
}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    from reg2rg_lib.env.nltk import wordnet_source
    from reg2rg_lib.metrics import evaluate_predictions

    if wordnet_source().kind == "missing":
        pytest.skip("NLTK WordNet not installed (`reg2rg assets fetch`): METEOR cannot be computed")
    paths = RunPaths(tmp_path_factory.mktemp("smoke_out"))
    results = {}
    for run, preds in PRED.items():
        folder = paths.run(run)
        folder.mkdir(parents=True)
        pd.DataFrame({"AccNum": [f"valid_{i}_a_1" for i in range(len(GT))], "Question": "q",
                      "GT_combined_report": GT if run == "full" else [p.split(": ", 1)[-1] for p in GT],
                      "Pred_combined_report": preds}).to_csv(folder / "predictions.csv", index=False)
        results[run] = evaluate_predictions(folder / "predictions.csv", folder / "metrics", bootstrap=50)
        (folder / "train_log.csv").write_text(
            "step,epoch,loss,lr,elapsed_s\n1,0,6.5,0.001,0.1\n2,0,6.1,0.001,0.2\n"
            "3,1,5.2,0.001,0.3\n4,1,4.9,0.001,0.4\n"
        )
    write_summary(paths, "smoke", results)
    stats = ablation_stats(paths, list(PRED), n_resamples=50)
    stats.to_csv(paths.ablation_stats, index=False)
    return paths


def test_smoke_tables_and_figures_are_byte_identical_on_rerun(smoke_run, tmp_path):
    written = []
    for name in ("first", "second"):
        inp = Inputs.from_profile("smoke", smoke_run.root, tmp_path / name, release_dir="")
        assert inp.release_dir is None and inp.runs() == ["full", "no_rra"]
        written.append(regenerate(inp))
    files = sorted(p.relative_to(tmp_path / "first") for p in (tmp_path / "first").rglob("*") if p.is_file())
    names = {p.name for p in files}
    assert {"table1_nlg.csv", "table2_ce.tex", "table3_region_recognition.md", "table6_rra.csv",
            "paper_fig2_report_length.png", "paper_fig3_case_study.pdf", "kit_fig4_training_curves.png",
            "kit_fig6_ablation_bars.png"} <= names
    assert written[0]["make_paper_fig4"] is None  # no benchmark NIfTI in this run folder: skipped, not faked
    match, mismatch, errors = filecmp.cmpfiles(tmp_path / "first", tmp_path / "second", files, shallow=False)
    assert not mismatch and not errors, f"differ on rerun: {mismatch + errors}"
    table1 = pd.read_csv(tmp_path / "first" / "tables" / "table1_nlg.csv")
    # said, not dropped
    assert (table1["source"] == "authors' release: left out (release_dir=\"\")").sum() == 1
    table6 = pd.read_csv(tmp_path / "first" / "tables" / "table6_rra.csv")
    assert list(table6["run"]) == ["full", "no_rra"] and table6["source"].str.contains("kit run").all()
