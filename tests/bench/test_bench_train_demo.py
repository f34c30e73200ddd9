"""`reg2rg bench train-demo`: its figures and the agreement of the two paths' losses (not its timings)."""

from __future__ import annotations

import json

import pytest

from reg2rg_lib.cli import main as cli_main


def test_bench_train_demo_prints_both_paths_and_their_losses(smoke, capsys):
    assert (
        cli_main(
            [
                "bench",
                "train-demo",
                "--profile",
                "smoke",
                "--work",
                str(smoke.root),
                "--batch-size",
                "2",
                "3",
                "--steps",
                "2",
                "--warmup",
                "1",
                "--check",
                "2",
                "--threads",
                "1",
                "--breakdown",
                "--json",
            ]
        )
        == 0
    )
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["profile"] == "smoke" and figures["threads"] == 1 and figures["cpu_model"]
    assert [r["batch_size"] for r in figures["rows"]] == [2, 3]
    for row in figures["rows"]:
        assert row["old_samples_per_s"] > 0 and row["new_samples_per_s"] > 0 and row["steps"] == 2
        assert row["speedup"] == row["new_samples_per_s"] / row["old_samples_per_s"]
        assert row["trajectory_max_abs_diff"] < 1e-3  # both copies train on the same batches in lockstep
        assert figures[f"speedup_at_batch_{row['batch_size']}"] == round(row["speedup"], 3)
        assert row["fallback_items"] == 0
    # the same weights and batches: the same loss and gradients, float rounding apart
    assert figures["check_batches"] == 2 and len(figures["loss_old"]) == len(figures["loss_new"]) == 2
    assert figures["loss_max_abs_diff"] <= 1e-5 * max(map(abs, figures["loss_old"]))
    assert figures["grad_max_rel_diff"] <= 1e-4
    assert figures["today_batch_size"] == 2 and figures["best_batch_size"] in (2, 3)
    parts = figures["breakdown_ms"]
    assert {"data: collate", "bwd: LLM decoder", "AdamW step + zero_grad"} <= set(parts)
    assert all(v >= 0 for v in parts.values())


def test_bench_train_demo_prints_a_table(smoke, capsys):
    assert cli_main(["bench", "train-demo", "--profile", "smoke", "--work", str(smoke.root), "--steps", "1",
                     "--warmup", "0", "--check", "1", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "today samples/s" in out and "loss_max_abs_diff" in out and "GFLOP" not in out


def test_bench_train_demo_roofline_counts_todays_work_against_the_matmul_peak(smoke, capsys):
    assert cli_main(["bench", "train-demo", "--profile", "smoke", "--work", str(smoke.root), "--steps", "1",
                     "--warmup", "0", "--check", "1", "--threads", "1", "--roofline", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    (row,) = figures["rows"]
    f = row["roofline"]
    assert f["gflop_per_sample"] > 0 and 0 < f["attention_share"] < 1  # the CPU attention kernel is counted
    assert f["old_gflops"] == pytest.approx(f["gflop_per_sample"] * row["old_samples_per_s"])
    assert f["bound_vs_today"] == pytest.approx(1 / f["old_share_of_peak"])


def test_bench_train_demo_with_model_changes(smoke, capsys):
    """Re-reference (placeholders again in the target) and coverage masks (floats): the same losses too."""
    assert cli_main(["bench", "train-demo", "--profile", "smoke", "--work", str(smoke.root), "--steps", "1",
                     "--warmup", "0", "--check", "2", "--threads", "1", "--set", "rereference=true", "--set",
                     "mask_coverage=true", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["rereference"] is True
    assert figures["model_changes"] == {"rereference": True, "mask_coverage": True}
    assert figures["loss_max_abs_diff"] <= 1e-5 * max(map(abs, figures["loss_old"]))
    assert figures["grad_max_rel_diff"] <= 1e-4


def test_the_bench_builds_the_demos_standardised_recipe(smoke):
    """Under the demo's vision switches and geometry dropout the bench's model carries the train split's
    feature statistics, as `train_run`'s does (before, its first forward pass refused: no statistics), and its
    two training paths agree on the loss."""
    from reg2rg_lib.bench.train_demo import build_setup, loss_check
    from reg2rg_lib.profiles import load_profile

    demo_switches = {"model.vision_patch_norm": False, "model.vision_standardize": True,
                     "train.geometry_dropout": 0.3}
    profile = load_profile("smoke", overrides=demo_switches)
    setup = build_setup(profile, smoke, batch_size=2)
    el = setup.model.embedding_layer
    assert el.feature_count.tolist()[0] > 0 and el.feature_count.tolist()[1] > 0
    assert setup.dataset.geometry_dropout == 0.3
    check = loss_check(setup, [[0, 1]])
    assert check["loss_max_abs_diff"] <= 1e-5 * abs(check["loss_old"][0])
