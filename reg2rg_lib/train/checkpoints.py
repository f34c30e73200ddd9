"""Training checkpoints that a `kill -9` can never leave half-written, and `--resume` that finds the newest
one.

A checkpoint is a folder `RUN/checkpoints/step-00000100/`:

    trainable.safetensors   the trainable parameters only (the frozen ViT and the frozen LLM base are rebuilt
                            from the model config, so a 7B run does not rewrite 13 GB every K steps)
    optimizer.pt            AdamW state (identical on every DDP rank, written by rank 0)
    scheduler.pt            learning-rate scheduler state
    rng/rank<r>.pt          python, numpy, torch (and CUDA) RNG states of each rank, as tensors and numbers
    trainer_state.json      global step, micro-batches consumed, the settings that fix the data order
    model/                  optional: the model's own `save_pretrained` export (what `reg2rg generate` loads;
                            its LLM also loads with transformers / peft alone: `paths.ModelFolder`)
    COMPLETE                written last; a folder without it is never loaded

It is written into a hidden sibling `.tmp-step-00000100/`, every file is fsynced, the marker comes last, and
one `os.rename` makes it visible. `latest_checkpoint` only looks at visible folders with the marker, so a
crash at any moment leaves either the previous checkpoints or the new complete one. Stale temporary folders
are removed by the next writer; a write that fails (a full disk) removes its own and raises a one-line error.

Loading never runs code from a file: the `.pt` files hold only tensors, numbers, strings and containers, and
are read with `torch.load(weights_only=True)` (`safe_torch_load`); a file that holds anything else (a pickled
object whose unpickling would run code) is refused with a message naming it.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
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
from reg2rg_lib.io import write_error, write_failed
from reg2rg_lib.paths import COMPLETE, latest_checkpoint, list_checkpoints, step_dir_name


def fsync_tree(folder: Path) -> None:
    """fsync every file under `folder` and then the folders themselves, so a rename publishes durable
    bytes."""
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


def remove_checkpoint(folder: Path) -> None:
    """Delete a checkpoint folder, dropping its COMPLETE marker first: a crash half-way through the delete
    leaves a folder that resume ignores."""
    marker = folder / COMPLETE
    if marker.exists():
        marker.unlink()
        _fsync_dir(folder)
    shutil.rmtree(folder, ignore_errors=True)


def safe_torch_load(path: Path, *, allow_numpy: bool = False, **kwargs: Any) -> Any:
    """`torch.load(path, weights_only=True)`: tensors, numbers, strings and containers only. A file holding
    any other pickled object (whose unpickling could run code) is refused with `BadInputError` naming it;
    nothing in it is executed. `allow_numpy` also admits plain numpy arrays (RNG files of kit versions before
    0.x stored numpy's state as an array), which carry data only."""
    allowed = _NUMPY_ARRAY_TYPES if allow_numpy else []
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, weights_only=True, **kwargs)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL [\w.]+|Unsupported operand \S+", str(err))
        why = found.group(0) if found else str(err).strip().splitlines()[0][:160]
        raise BadInputError(
            path,
            f"refused: it holds pickled objects other than tensors and numbers, whose "
            f"loading could run code ({why}); nothing was loaded. Only resume checkpoints you "
            "trust",
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else ""
        raise BadInputError(path, f"unreadable ({type(err).__name__}: {first})") from None


_NUMPY_ARRAY_TYPES = [np._core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def rng_state() -> dict[str, Any]:
    """Every RNG a training step draws from, as tensors, numbers and strings (what `weights_only` loads)."""
    version, internal, gauss = random.getstate()
    kind, key, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "kind": str(kind),
            "key": torch.from_numpy(key.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py, npy = state["python"], state["numpy"]
    if isinstance(py, dict):  # tensors and numbers (older files hold the getstate() tuples themselves)
        py = (py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"])
    if isinstance(npy, dict):
        npy = (npy["kind"], npy["key"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["cached"])
    random.setstate(py)
    np.random.set_state(npy)
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
        extra: dict[str, Any] | None = None,
    ) -> Path:
        """Write checkpoint `step`; returns its final folder. Every rank must call this.

        `extra` maps more state files of rank 0 (`scaler.pt`) to their state dicts, written before the marker.

        `engine_save(folder)` replaces the weights/optimizer/RNG files when a sharding engine (DeepSpeed,
        FSDP) owns them: accelerate's `save_state` then writes its shards into `engine/` from every rank."""
        final = self.root / step_dir_name(step)
        tmp = self.root / f".tmp-{step_dir_name(step)}"
        try:
            self._write(step, tmp, final, model, optimizer, scheduler, trainer_state, export, engine_save,
                        extra or {})
        except Exception as exc:
            err = write_error(exc)
            if err is None:
                raise
            if self.rank == 0:
                shutil.rmtree(tmp, ignore_errors=True)  # frees the space the partial checkpoint took
            newest = latest_checkpoint(self.root)
            kept = (f"the newest complete checkpoint is still {newest.name}" if newest is not None
                    else "no complete checkpoint was written yet")
            target = final / Path(err.filename).name if err.filename else final
            raise write_failed(target, err, f"checkpoint {final.name} was not written and its partial folder "
                               f"was removed; {kept} (continue from it with --resume)") from exc
        self.barrier()
        return final

    def _write(
        self,
        step: int,
        tmp: Path,
        final: Path,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        trainer_state: dict[str, Any],
        export: Callable[[torch.nn.Module, Path], None] | None,
        engine_save: Callable[[Path], None] | None,
        extra: dict[str, Any],
    ) -> None:
        """Everything `save` writes, into `tmp`, then published as `final` (rank 0)."""
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
            for name, state in extra.items():
                torch.save(state, tmp / name)
            write_small(tmp / "trainer_state.json", json.dumps(trainer_state, indent=2) + "\n")
            if export is not None:
                export(model, tmp / "model")
        self.barrier()
        if self.rank == 0:
            fsync_tree(tmp)
            write_small(tmp / COMPLETE, f"step {step}\n")
            fsync_tree(tmp)
            if final.exists():  # an older run's folder of the same step: replace it
                remove_checkpoint(final)
            os.rename(tmp, final)
            _fsync_dir(self.root)
            self._prune()

    def _prune(self) -> None:
        found = list_checkpoints(self.root)
        for _step, folder in found[: max(0, len(found) - self.keep_last)]:
            remove_checkpoint(folder)



def write_small(path: Path, text: str) -> None:
    """A small text file of a checkpoint (trainer state, the COMPLETE marker)."""
    path.write_text(text)


#: model-config fields a resume may change: run-time switches and where initial weights came from
RESUME_MAY_CHANGE = frozenset(
    {"gradient_checkpointing", "llm_path", "vision_checkpoint", "perceiver_checkpoint"}
)


def check_resume_config(ckpt_root: Path, config: dict[str, Any]) -> None:
    """Refuse to resume the newest checkpoint under `ckpt_root` with another model configuration than the one
    it was trained with (its `model/config.json`): the weights could load and the run would silently mix two
    models (an ablation switch such as `rra` changes no parameter)."""
    latest = latest_checkpoint(Path(ckpt_root))
    saved_path = latest / "model" / "config.json" if latest is not None else None
    if saved_path is None or not saved_path.is_file():
        return
    try:
        saved = json.loads(saved_path.read_text())
    except ValueError:
        raise BadInputError(saved_path, "not valid JSON; the checkpoint is damaged") from None
    now = json.loads(json.dumps(config))  # tuples as lists, as in the file
    # fields a later kit version added are not in older files: only those both sides have are compared
    differ = [k for k in sorted(set(saved) & set(now)) if k not in RESUME_MAY_CHANGE and saved[k] != now[k]]
    if differ:
        shown = ", ".join(f"{k}={saved.get(k)!r} there, {now.get(k)!r} here" for k in differ[:3])
        raise BadInputError(
            saved_path,
            f"checkpoint of another configuration ({shown}); resume with the settings "
            "it was trained with, or train into a new run folder",
        )


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
            scheduler.load_state_dict(safe_torch_load(folder / "scheduler.pt"))
        return json.loads((folder / "trainer_state.json").read_text())
    if not (folder / "trainable.safetensors").is_file():
        raise BadInputError(
            folder, "holds sharded engine state (DeepSpeed/FSDP); resume it with the same launcher"
        )
    weights = load_file(str(folder / "trainable.safetensors"))
    expected = {n for n, p in model.named_parameters() if p.requires_grad}
    missing, unexpected = expected - weights.keys(), weights.keys() - expected
    if missing or unexpected:
        raise BadInputError(folder / "trainable.safetensors",
                            f"does not match the model: missing {sorted(missing)[:3]}, unexpected "
                            f"{sorted(unexpected)[:3]} (was it trained with another config?)")
    params = dict(model.named_parameters())
    wrong = [f"{n} {tuple(v.shape)} there, {tuple(params[n].shape)} here" for n, v in weights.items()
             if v.shape != params[n].shape]
    if wrong:
        raise BadInputError(
            folder / "trainable.safetensors",
            f"does not match the model: {len(wrong)} tensor(s) of "
            f"another shape, e.g. {wrong[0]} (was it trained with another config?)",
        )
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)
    if optimizer is not None:
        optimizer.load_state_dict(safe_torch_load(folder / "optimizer.pt", map_location="cpu"))
    if scheduler is not None:
        scheduler.load_state_dict(safe_torch_load(folder / "scheduler.pt"))
    rng_file = folder / "rng" / f"rank{rank}.pt"
    if rng_file.is_file():
        set_rng_state(safe_torch_load(rng_file, allow_numpy=True))
    return json.loads((folder / "trainer_state.json").read_text())
