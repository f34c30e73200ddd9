"""Notebook 03's training story (`report.training_story`): every sentence follows the run's files, and a
learning rate off the stated schedule shows a warning."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

from reg2rg_lib.report.training_story import loss_trend, schedule_check, training_story
from reg2rg_lib.train.loop import LOG_COLUMNS


def _copy_run(trained: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in ("run_config.json", "train_log.csv"):
        shutil.copy(trained / name, dest / name)
    return dest


def _edit_config(run: Path, **settings) -> None:
    config = json.loads((run / "run_config.json").read_text())
    config["settings"].update(settings)
    (run / "run_config.json").write_text(json.dumps(config))


def _edit_log(run: Path, step: int, **values) -> None:
    with open(run / "train_log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        if int(row["step"]) == step:
            row.update({k: repr(v) for k, v in values.items()})
    with open(run / "train_log.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(LOG_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)


def test_training_story_follows_the_run_files(trained: Path, tmp_path: Path) -> None:
    run = _copy_run(trained, tmp_path / "run")
    story = training_story(run, "smoke")
    assert "stayed constant at 0.001" in story and "plain next-token cross-entropy" in story  # smoke's recipe
    assert "cosine" not in story and "weighted" not in story
    first = float(next(csv.DictReader(open(run / "train_log.csv")))["loss"])
    assert f"{first:.4f}" in story  # the logged loss, not a fixed sentence
    _edit_config(run, lr_schedule="cosine", region_name_weight=10.0, region_dropout=0.3)
    _edit_log(run, 1, loss=7.125)
    changed = training_story(run, "smoke")
    assert "cosine decay to 0 at step 4" in changed and "constant at" not in changed
    assert "weighted 10x" in changed and "Region dropout: 30%" in changed
    assert "from 7.1250 at step 1" in changed


def test_schedule_check_compares_the_log_with_the_schedule(trained: Path, tmp_path: Path) -> None:
    run = _copy_run(trained, tmp_path / "run")
    assert schedule_check(run, "smoke").ok is True  # the real smoke run follows its own schedule
    _edit_log(run, 3, lr=0.5)
    failed = schedule_check(run, "smoke")
    assert failed.ok is False and "Warning:" in failed._repr_markdown_() and "step 3" in failed.measured


def _write_run(run: Path, losses: list[float], **settings) -> Path:
    run.mkdir(parents=True)
    base = {"lr": 1e-3, "warmup_steps": 2, "lr_schedule": "constant", "max_steps": len(losses),
            "region_name_weight": 1.0, "region_dropout": 0.0}
    (run / "run_config.json").write_text(json.dumps({"settings": base | settings, "model": {"rra": True}}))
    with open(run / "train_log.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(LOG_COLUMNS)
        writer.writerows([s + 1, 0, repr(loss), repr(1e-3), "0.1"] for s, loss in enumerate(losses))
    return run


def test_plateau_is_computed_from_the_curve(tmp_path: Path) -> None:
    falling = [5.0 - 0.04 * s for s in range(100)]
    flat = [5.0 - 0.04 * s for s in range(80)] + [1.8 + 0.001 * (s % 2) for s in range(20)]
    assert loss_trend(falling)["verdict"] == "falling" and loss_trend(flat)["verdict"] == "plateau"
    assert "it is still falling" in training_story(_write_run(tmp_path / "a", falling))
    assert "it has plateaued" in training_story(_write_run(tmp_path / "b", flat))
    assert "Too few steps" in training_story(_write_run(tmp_path / "c", [3.0, 2.0]))


def test_loss_without_rra_says_the_weight_has_nothing_to_weigh(tmp_path: Path) -> None:
    run = _write_run(tmp_path / "r", [3.0, 2.0], region_name_weight=10.0)
    config = json.loads((run / "run_config.json").read_text())
    assert "weighted 10x" in training_story(run)
    config["model"]["rra"] = False
    (run / "run_config.json").write_text(json.dumps(config))
    assert "no organ names to weigh" in training_story(run)


def test_loss_names_the_label_head_only_when_the_run_trained_one(tmp_path: Path) -> None:
    plain = training_story(_write_run(tmp_path / "a", [3.0, 2.0], label_weight=0.0))
    assert "label loss" not in plain
    headed = training_story(_write_run(tmp_path / "b", [3.0, 2.0], label_weight=0.5))
    assert "0.5 x a region label loss" in headed and "`train.label_weight`" in headed
