"""Training checkpoints load without unpickling code: a malicious `.pt` is refused, names itself, runs
nothing."""

from __future__ import annotations

import pickle
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from reg2rg_lib.errors import BadInputError, KitError
from reg2rg_lib.train.checkpoints import (
    COMPLETE,
    latest_checkpoint,
    rng_state,
    safe_torch_load,
    set_rng_state,
    weights_digest,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import toyloop  # noqa: E402


class Touch:
    """Unpickling this object would create `marker`: what a hostile checkpoint file does with any code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture()
def checkpointed(tmp_path) -> Path:
    """A toy run folder with complete checkpoints at steps 2 and 4."""
    run = tmp_path / "run"
    toyloop.run(run, max_steps=4, save_every=2)
    return run


def _digests(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.mark.parametrize("name", ["optimizer.pt", "scheduler.pt", "rng/rank0.pt"])
@pytest.mark.parametrize("form", ["torch.save", "raw pickle"])
def test_a_malicious_pickle_in_a_checkpoint_is_refused_and_never_runs(checkpointed, tmp_path, name, form):
    latest = latest_checkpoint(checkpointed / "checkpoints")
    marker = tmp_path / "pwned"
    hostile = {"state": Touch(marker), "param_groups": []}
    if form == "torch.save":
        torch.save(hostile, latest / name)
    else:
        (latest / name).write_bytes(pickle.dumps(hostile, protocol=2))
    before = _digests(checkpointed / "checkpoints")
    with pytest.raises(BadInputError) as err:
        toyloop.run(checkpointed, max_steps=6, save_every=2, resume=True)
    message = str(err.value)
    assert not marker.exists(), "unpickling ran the file's code"
    assert message.startswith(str(latest / name)), message
    assert "refused" in message and "\n" not in message
    assert _digests(checkpointed / "checkpoints") == before, "a refused resume must change no checkpoint"
    assert latest_checkpoint(checkpointed / "checkpoints") == latest


def test_scaler_and_any_other_state_file_go_through_the_same_check(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "scaler.pt"
    torch.save({"scale": Touch(marker)}, bad)
    with pytest.raises(BadInputError, match=r"scaler\.pt: refused"):
        safe_torch_load(bad)
    assert not marker.exists()
    good = tmp_path / "ok.pt"
    torch.save({"scale": 65536.0, "_growth_tracker": 3, "t": torch.ones(2)}, good)
    assert safe_torch_load(good)["_growth_tracker"] == 3
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:40])
    with pytest.raises(BadInputError, match=r"cut\.pt: unreadable"):
        safe_torch_load(tmp_path / "cut.pt")


def test_rng_state_is_tensors_and_numbers_and_restores_every_generator(tmp_path):
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    path = tmp_path / "rng.pt"
    torch.save(rng_state(), path)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_rng_state(safe_torch_load(path))  # weights_only: no numpy object inside
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    old = tmp_path / "old.pt"  # the format of earlier kit versions: getstate() tuples with a numpy array
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    torch.save(
        {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}, old
    )
    random.seed(9), np.random.seed(9)
    set_rng_state(safe_torch_load(old, allow_numpy=True))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    with pytest.raises(BadInputError, match="refused"):
        safe_torch_load(old)  # numpy arrays only where asked for


def test_resume_after_the_safe_load_equals_an_uninterrupted_run(tmp_path):
    full = toyloop.run(tmp_path / "full", max_steps=6, save_every=2)
    toyloop.run(tmp_path / "cut", max_steps=4, save_every=2)
    resumed = toyloop.run(tmp_path / "cut", max_steps=6, save_every=2, resume=True)
    assert resumed.resumed_from == 4
    assert resumed.weights_sha256 == full.weights_sha256
    assert (latest_checkpoint(tmp_path / "cut" / "checkpoints") / COMPLETE).is_file()


def test_a_checkpoint_of_another_model_is_refused_by_name(checkpointed):
    latest = latest_checkpoint(checkpointed / "checkpoints")

    class Other(toyloop.Toy):
        def __init__(self) -> None:
            super().__init__()
            self.extra = torch.nn.Linear(2, 2)

    from reg2rg_lib.train.checkpoints import load_checkpoint

    model = Other()
    before = weights_digest(model)
    with pytest.raises(KitError, match=r"trainable\.safetensors: does not match the model: missing \['extra"):
        load_checkpoint(latest, model)
    assert weights_digest(model) == before


def test_extra_state_files_are_written_inside_the_atomic_checkpoint(tmp_path):
    from reg2rg_lib.train.checkpoints import CheckpointWriter

    model = toyloop.Toy()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    scaler = {"scale": 1024.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
              "_growth_tracker": 7}
    final = CheckpointWriter(tmp_path / "ckpt").save(3, model, opt, sched, {"step": 3},
                                                     extra={"scaler.pt": scaler})
    assert (final / COMPLETE).is_file() and safe_torch_load(final / "scaler.pt") == scaler
