"""Training checkpoints that a `kill -9` can never leave half-written, and `--resume` that finds the newest one.

A checkpoint is a folder `RUN/checkpoints/step-00000100/`:

    trainable.safetensors   the trainable parameters only (the frozen ViT and the frozen LLM base are rebuilt
                            from the model config, so a 7B run does not rewrite 13 GB every K steps)
    optimizer.pt            AdamW state (identical on every DDP rank, written by rank 0)
    scheduler.pt            learning-rate scheduler state
    rng/rank<r>.pt          python, numpy, torch (and CUDA) RNG states of each rank
    trainer_state.json      global step, micro-batches consumed, the settings that fix the data order
    model/                  optional: the model's own `save_pretrained` export (what `reg2rg generate` loads)
    COMPLETE                written last; a folder without it is never loaded

It is written into a hidden sibling `.tmp-step-00000100/`, every file is fsynced, the marker comes last, and
one `os.rename` makes it visible. `latest_checkpoint` only looks at visible folders with the marker, so a crash at
any moment leaves either the previous checkpoints or the new complete one. Stale temporary folders are removed by
the next writer.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from reg2rg_lib.errors import BadInputError

COMPLETE = "COMPLETE"
_STEP_DIR = re.compile(r"^step-(\d{8})$")


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def fsync_tree(folder: Path) -> None:
    """fsync every file under `folder` and then the folders themselves, so a rename publishes durable bytes."""
    for root, _dirs, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(root))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_checkpoints(ckpt_root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under `ckpt_root` as (step, folder), oldest first."""
    if not ckpt_root.is_dir():
        return []
    found = []
    for child in ckpt_root.iterdir():
        m = _STEP_DIR.match(child.name)
        if m and child.is_dir() and (child / COMPLETE).is_file():
            found.append((int(m.group(1)), child))
    return sorted(found)


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    found = list_checkpoints(ckpt_root)
    return found[-1][1] if found else None


def remove_checkpoint(folder: Path) -> None:
    """Delete a checkpoint folder, dropping its COMPLETE marker first: a crash half-way through the delete
    leaves a folder that resume ignores."""
    marker = folder / COMPLETE
    if marker.exists():
        marker.unlink()
        _fsync_dir(folder)
    shutil.rmtree(folder, ignore_errors=True)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that train (requires_grad), detached and contiguous on the CPU."""
    return {n: p.detach().to("cpu").contiguous() for n, p in model.named_parameters() if p.requires_grad}


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 over the trainable parameters' bytes in name order: equal digests mean equal weights."""
    h = hashlib.sha256()
    for name, t in sorted(trainable_state(model).items()):
        h.update(name.encode())
        h.update(t.float().numpy().tobytes())
    return h.hexdigest()


class CheckpointWriter:
    """Writes checkpoints atomically from every rank of a (possibly distributed) run.

    `barrier` is the collective that keeps ranks in step (accelerate's `wait_for_everyone`); rank 0 owns the
    shared files and the final rename, each rank writes its own RNG state.
    """

    def __init__(self, ckpt_root: Path, rank: int = 0, barrier: Callable[[], None] = lambda: None,
                 keep_last: int = 2) -> None:
        self.root, self.rank, self.barrier, self.keep_last = Path(ckpt_root), rank, barrier, keep_last

    def save(
        self,
        step: int,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        trainer_state: dict[str, Any],
        export: Callable[[torch.nn.Module, Path], None] | None = None,
        engine_save: Callable[[Path], None] | None = None,
    ) -> Path:
        """Write checkpoint `step`; returns its final folder. Every rank must call this.

        `engine_save(folder)` replaces the weights/optimizer/RNG files when a sharding engine (DeepSpeed, FSDP)
        owns them: accelerate's `save_state` then writes its shards into `engine/` from every rank."""
        final = self.root / step_dir_name(step)
        tmp = self.root / f".tmp-{step_dir_name(step)}"
        if self.rank == 0:
            self.root.mkdir(parents=True, exist_ok=True)
            for stale in self.root.glob(".tmp-step-*"):  # left by a crash
                shutil.rmtree(stale, ignore_errors=True)
            tmp.mkdir()
        self.barrier()
        if engine_save is not None:
            engine_save(tmp / "engine")
        else:
            (tmp / "rng").mkdir(exist_ok=True)
            torch.save(rng_state(), tmp / "rng" / f"rank{self.rank}.pt")
        if self.rank == 0:
            if engine_save is None:
                save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
                torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
            (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=2) + "\n")
            if export is not None:
                export(model, tmp / "model")
        self.barrier()
        if self.rank == 0:
            fsync_tree(tmp)
            (tmp / COMPLETE).write_text(f"step {step}\n")
            fsync_tree(tmp)
            if final.exists():  # an older run's folder of the same step: replace it
                remove_checkpoint(final)
            os.rename(tmp, final)
            _fsync_dir(self.root)
            self._prune()
        self.barrier()
        return final

    def _prune(self) -> None:
        found = list_checkpoints(self.root)
        for _step, folder in found[: max(0, len(found) - self.keep_last)]:
            remove_checkpoint(folder)



def load_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    rank: int = 0,
    engine_load: Callable[[Path], None] | None = None,
) -> dict[str, Any]:
    """Restore trainable weights, optimizer, scheduler and this rank's RNG state; returns the trainer state.

    `engine_load(folder)` (accelerate's `load_state`) restores what `engine_save` wrote."""
    folder = Path(folder)
    if not (folder / COMPLETE).is_file():
        raise BadInputError(folder, "not a complete checkpoint (no COMPLETE marker); it was never finished")
    if engine_load is not None:
        if not (folder / "engine").is_dir():
            raise BadInputError(folder, "written without a sharding engine; resume it with the same launcher")
        engine_load(folder / "engine")
        if scheduler is not None:
            scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=False))
        return json.loads((folder / "trainer_state.json").read_text())
    if not (folder / "trainable.safetensors").is_file():
        raise BadInputError(folder, "holds sharded engine state (DeepSpeed/FSDP); resume it with the same launcher")
    weights = load_file(str(folder / "trainable.safetensors"))
    expected = {n for n, p in model.named_parameters() if p.requires_grad}
    missing, unexpected = expected - weights.keys(), weights.keys() - expected
    if missing or unexpected:
        raise BadInputError(folder / "trainable.safetensors",
                            f"does not match the model: missing {sorted(missing)[:3]}, unexpected "
                            f"{sorted(unexpected)[:3]} (was it trained with another config?)")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=False))
    if scheduler is not None:
        scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=False))
    rng_file = folder / "rng" / f"rank{rank}.pt"
    if rng_file.is_file():
        set_rng_state(torch.load(rng_file, weights_only=False))
    return json.loads((folder / "trainer_state.json").read_text())
