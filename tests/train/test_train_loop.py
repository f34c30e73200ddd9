"""The training loop's machinery on a toy module: resume equality, atomic checkpoints, kill -9, bad
batches."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from reg2rg_lib.errors import KitError
from reg2rg_lib.train.checkpoints import COMPLETE, latest_checkpoint, list_checkpoints
from reg2rg_lib.train.loop import TrainSettings, epoch_batches, fit, read_train_log, warmup_constant

sys.path.insert(0, str(Path(__file__).parent))
import toyloop  # noqa: E402


def test_epoch_batches_cover_data_and_shard_evenly():
    one = epoch_batches(10, epoch=0, seed=0, rank=0, world_size=1, batch_size=3)
    assert sorted(i for b in one for i in b) == list(range(10))
    assert [len(b) for b in one] == [3, 3, 3, 1]
    assert one != epoch_batches(10, epoch=1, seed=0, rank=0, world_size=1, batch_size=3)
    r0 = epoch_batches(7, 0, 0, rank=0, world_size=2, batch_size=2)
    r1 = epoch_batches(7, 0, 0, rank=1, world_size=2, batch_size=2)
    assert len(r0) == len(r1)  # equal step counts on every rank, or DDP would hang
    assert {i for b in r0 + r1 for i in b} == set(range(7))


def test_warmup_then_constant():
    f = warmup_constant(4)
    assert [f(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_constant(0)(0) == 1.0


def test_cosine_schedule_warms_up_decays_to_zero_and_rejects_unknown_names():
    from reg2rg_lib.errors import KitError
    from reg2rg_lib.train.loop import lr_multiplier

    assert lr_multiplier("constant", 2, 10)(9) == 1.0
    f = lr_multiplier("cosine", 2, 10)
    values = [f(s) for s in range(10)]
    assert values[:2] == [0.5, 1.0]  # the warm-up is the constant schedule's
    assert all(a > b for a, b in zip(values[1:], values[2:]))  # then strictly decreasing
    assert values[-1] == pytest.approx(0.0, abs=1e-12)  # the last step runs at lr 0
    assert values[5] == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 8)))
    with pytest.raises(KitError, match="lr_schedule"):
        lr_multiplier("linear", 0, 10)


def test_resumed_run_logs_the_same_losses(tmp_path):
    full = toyloop.run(tmp_path / "full", max_steps=7, save_every=3)
    assert full.steps == 7 and len(full.losses) == 7
    toyloop.run(tmp_path / "cut", max_steps=4, save_every=3)  # checkpoints at 3 and 4
    # pretend the run died after step 4 but before anything else: drop the newest checkpoint, so resume
    # starts from step 3 and must re-log step 4 identically (mid-epoch, mid grad-accumulation boundary)
    step4 = latest_checkpoint(tmp_path / "cut" / "checkpoints")
    (step4 / COMPLETE).unlink()
    resumed = toyloop.run(tmp_path / "cut", max_steps=7, save_every=3, resume=True)
    assert resumed.resumed_from == 3
    a = read_train_log(tmp_path / "full")
    b = read_train_log(tmp_path / "cut")
    assert [r["step"] for r in b] == list(range(1, 8))
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    assert [r["lr"] for r in a] == [r["lr"] for r in b]
    assert resumed.weights_sha256 == full.weights_sha256
    assert a[0]["lr"] == pytest.approx(0.025) and a[-1]["lr"] == pytest.approx(0.05)


def test_checkpoints_are_atomic_and_pruned(tmp_path):
    run = tmp_path / "run"
    toyloop.run(run, max_steps=6, save_every=2)
    ckpts = list_checkpoints(run / "checkpoints")
    assert [s for s, _ in ckpts] == [4, 6]  # keep_last=2
    for _, folder in ckpts:
        assert {"trainable.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json", COMPLETE} <= {
            p.name for p in folder.iterdir()}
        assert (folder / "rng" / "rank0.pt").is_file()
    # a half-written folder (no marker) and a crashed temp folder are never picked
    (run / "checkpoints" / "step-00000099").mkdir()
    (run / "checkpoints" / ".tmp-step-00000100").mkdir()
    assert latest_checkpoint(run / "checkpoints").name == "step-00000006"
    assert list(run.glob("tensorboard/events.*")), "no TensorBoard events"


def test_resume_rejects_a_changed_batch_size(tmp_path):
    toyloop.run(tmp_path / "r", max_steps=2, save_every=2)
    with pytest.raises(KitError, match="resume must keep"):
        toyloop.run(tmp_path / "r", max_steps=4, save_every=2, resume=True, grad_accum=1)


def test_resume_rejects_a_changed_region_dropout(tmp_path):
    # region dropout decides which regions each sample keeps: resuming with another rate would change the data
    toyloop.run(tmp_path / "r", max_steps=2, save_every=2, region_dropout=0.3)
    with pytest.raises(KitError, match="region_dropout"):
        toyloop.run(tmp_path / "r", max_steps=4, save_every=2, resume=True)
    assert (
        toyloop.run(tmp_path / "r", max_steps=4, save_every=2, resume=True, region_dropout=0.3).resumed_from
        == 2
    )


def test_bad_batch_names_the_case(tmp_path):
    def broken(model, batch):
        raise RuntimeError("shape mismatch in splice")

    settings = TrainSettings(max_steps=1, batch_size=2, save_every=1)
    with pytest.raises(KitError, match=r"case\d, case\d: RuntimeError: shape mismatch"):
        fit(
            toyloop.Toy(),
            toyloop.ToyData(),
            toyloop.collate,
            broken,
            settings,
            tmp_path / "r",
            progress=False,
        )

    def nan_loss(model, batch):
        return toyloop.step_fn(model, batch) * float("nan")

    with pytest.raises(KitError, match="non-finite loss .* case"):
        fit(
            toyloop.Toy(),
            toyloop.ToyData(),
            toyloop.collate,
            nan_loss,
            settings,
            tmp_path / "r2",
            progress=False,
        )


def test_kill_9_loses_only_steps_since_the_last_checkpoint(tmp_path):
    run = tmp_path / "run"
    script = Path(toyloop.__file__)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(run), "12", "2", "--sleep", "0.05"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and len(list_checkpoints(run / "checkpoints")) < 2:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    survivors = list_checkpoints(run / "checkpoints")
    assert survivors and survivors[-1][0] < 12
    for _, folder in survivors:  # whatever survived is loadable
        state = torch.load(folder / "optimizer.pt", weights_only=False)
        assert state["state"]
    resumed = toyloop.run(run, max_steps=12, save_every=2, resume=True)
    full = toyloop.run(tmp_path / "full", max_steps=12, save_every=2)
    assert resumed.weights_sha256 == full.weights_sha256
    assert [r["loss"] for r in read_train_log(run)] == [r["loss"] for r in read_train_log(tmp_path / "full")]


def test_gradient_checkpointing_on_a_model_without_an_llm_is_an_error(tmp_path):
    with pytest.raises(KitError, match="gradient_checkpointing"):
        toyloop.run(tmp_path / "gc", max_steps=1, save_every=1, gradient_checkpointing=True)
