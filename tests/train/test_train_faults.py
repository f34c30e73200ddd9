"""Training faults: a NaN/inf loss or gradient stops the run naming the step and cases, a full disk while
writing a checkpoint leaves the last complete one newest; both keep every complete checkpoint and the log
intact."""

from __future__ import annotations

import errno
import sys
from pathlib import Path

import pytest
import torch

from reg2rg_lib.errors import KitError
from reg2rg_lib.io import DiskFullError
from reg2rg_lib.train import checkpoints
from reg2rg_lib.train.checkpoints import list_checkpoints, load_checkpoint, weights_digest
from reg2rg_lib.train.loop import TrainSettings, fit, read_train_log, seed_everything

sys.path.insert(0, str(Path(__file__).resolve().parent))
import toyloop  # noqa: E402


def _fit(run_dir: Path, step_fn, max_steps: int = 6, resume: bool = False, **kw):
    seed_everything(0)
    settings = TrainSettings(
        seed=0, max_steps=max_steps, batch_size=3, grad_accum=1, lr=0.05, save_every=2, **kw
    )
    return fit(toyloop.Toy(), toyloop.ToyData(), toyloop.collate, step_fn, settings, run_dir, resume=resume,
               progress=False)


def _poisoned(at_call: int, value: float, where: str = "loss"):
    """A toy step whose `at_call`-th micro-batch (1-based) has a `value` loss, or a finite loss with a `value`
    gradient (`where="grad"`)."""
    calls = {"n": 0}

    def step(model, batch):
        calls["n"] += 1
        loss = toyloop.step_fn(model, batch)
        if calls["n"] != at_call:
            return loss
        if where == "loss":
            return loss * value
        core = model.module if hasattr(model, "module") else model
        w = core.head[1].weight.sum()
        return loss + (w - w.detach()).abs().sqrt()  # finite (0), but d sqrt(|x|) at 0 is nan
    return step


def _state(run: Path) -> tuple[list[int], str]:
    found = list_checkpoints(run / "checkpoints")
    model = toyloop.Toy()
    load_checkpoint(found[-1][1], model)
    return [s for s, _ in found], weights_digest(model)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_loss_stops_naming_the_step_and_cases_and_keeps_the_last_good_checkpoint(
    tmp_path, value
):
    good = tmp_path / "good"
    _fit(good, toyloop.step_fn, max_steps=4)  # the same run without the fault, to step 4
    run = tmp_path / "run"
    with pytest.raises(KitError) as err:
        _fit(run, _poisoned(5, value))
    message = str(err.value)
    assert f"non-finite loss {value} at step 5 on case(s) case" in message, message
    assert "\n" not in message
    steps, digest = _state(run)
    assert steps == [2, 4], "the last good checkpoint stays the newest"
    assert digest == _state(good)[1], "the kept checkpoint holds the weights of the good run at step 4"
    assert [int(r["step"]) for r in read_train_log(run)] == [1, 2, 3, 4], "the log keeps the good steps only"
    resumed = _fit(run, toyloop.step_fn, resume=True)  # the cause fixed: resume from step 4 completes
    assert resumed.resumed_from == 4 and resumed.steps == 6


def test_a_non_finite_gradient_with_a_finite_loss_never_reaches_the_weights(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(KitError, match=r"non-finite gradient norm nan at step 3 on case\(s\) case\d"):
        _fit(run, _poisoned(3, 0.0, where="grad"))
    steps, digest = _state(run)
    assert steps == [2]
    assert torch.isfinite(torch.cat([p.flatten() for p in checkpoints.load_file(
        str(run / "checkpoints" / "step-00000002" / "trainable.safetensors")).values()])).all()


def _full_disk_on(monkeypatch, name: str, real, at_call: int):
    """Make `checkpoints.<name>` (a writer) fail with ENOSPC on its `at_call`-th call, after writing part of
    it."""
    calls = {"n": 0}

    def writer(first, second, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == at_call:
            # save_file(tensors, path), write_small(path, text)
            path = second if name == "save_file" else first
            Path(path).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(first, second, *args, **kwargs)
    monkeypatch.setattr(checkpoints, name, writer)


@pytest.mark.parametrize("name", ["save_file", "write_small"])
def test_a_full_disk_while_writing_a_checkpoint_keeps_the_last_complete_one(tmp_path, monkeypatch, name):
    real = getattr(checkpoints, name)
    # save_file: once per checkpoint; write_small: trainer_state + COMPLETE per checkpoint -> the 2nd's marker
    _full_disk_on(monkeypatch, name, real, at_call=2 if name == "save_file" else 4)
    run = tmp_path / "run"
    with pytest.raises(DiskFullError) as err:
        _fit(run, toyloop.step_fn)
    message = str(err.value)
    assert "the disk is full" in message and "step-00000004" in message and "still step-00000002" in message
    assert not list((run / "checkpoints").glob(".tmp-*")), (
        "the partial checkpoint is removed (frees its space)"
    )
    steps, _ = _state(run)
    assert steps == [2]
    monkeypatch.setattr(checkpoints, name, real)  # space freed: the same command with --resume completes
    resumed = _fit(run, toyloop.step_fn, resume=True)
    assert resumed.resumed_from == 2 and [s for s, _ in list_checkpoints(run / "checkpoints")] == [4, 6]
    uninterrupted = _fit(tmp_path / "clean", toyloop.step_fn)
    assert resumed.weights_sha256 == uninterrupted.weights_sha256, "nothing was lost"


def test_a_full_disk_in_torch_save_is_reported_the_same_way(tmp_path, monkeypatch):
    real = torch.save
    calls = {"n": 0}

    def save(obj, f, *args, **kwargs):  # torch's zip writer reports ENOSPC as a RuntimeError
        calls["n"] += 1
        if calls["n"] == 4:  # rng, optimizer, scheduler per checkpoint: the 2nd checkpoint's optimizer
            raise RuntimeError(
                "[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0: file write failed"
            )
        return real(obj, f, *args, **kwargs)
    monkeypatch.setattr(checkpoints.torch, "save", save)
    run = tmp_path / "run"
    with pytest.raises(KitError, match=r"step-00000004.*could not be written .*still step-00000002"):
        _fit(run, toyloop.step_fn)
    monkeypatch.setattr(checkpoints.torch, "save", real)
    assert _state(run)[0] == [2]
