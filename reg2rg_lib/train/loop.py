"""The training loop: accelerate for devices, precision and distribution; resumable, atomic checkpoints.

The paper trains the Perceiver, the geometry encoder, the projections, the new token embeddings and LoRA adapters
with AdamW, a short linear warm-up and then a constant learning rate, under DeepSpeed ZeRO-2 with gradient
checkpointing. `fit` runs that recipe unchanged in one CPU process, under `torchrun` (gloo) and under
`accelerate launch` on GPUs (DDP, DeepSpeed, FSDP: configs/accelerate/).

Reproducible resume: the data order is a pure function of (seed, epoch, rank) (`epoch_batches`), region shuffling
is a pure function of (seed, epoch, case), and the RNG states, optimizer and scheduler are checkpointed, so a run
resumed from step k logs the same losses as an uninterrupted one.

`fit` knows nothing about Reg2RG: it takes a model, a dataset, a collate function and a `step_fn(model, batch)`
that returns the loss. `train_run` (bottom) wires in the real model and the prep cache for `reg2rg train`.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reg2rg_lib.errors import KitError
from reg2rg_lib.io import atomic_path, write_json_atomic
from reg2rg_lib.train.checkpoints import (
    CheckpointWriter,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    remove_checkpoint,
    weights_digest,
)

LOG_COLUMNS = ("step", "epoch", "loss", "lr", "elapsed_s")


@dataclass
class TrainSettings:
    """Optimisation settings; `from_profile` fills them from a profile's `train` section."""

    seed: int = 0
    max_steps: int | None = None  # optimizer steps; None: `epochs` decides
    epochs: int | None = None
    batch_size: int = 1  # per process
    grad_accum: int = 1
    lr: float = 1e-3
    warmup_steps: int = 0  # linear warm-up from 0, then `lr_schedule`
    lr_schedule: str = "constant"  # "constant" (the paper) | "cosine" (decay to 0 at the last step)
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    save_every: int = 100  # optimizer steps between checkpoints (the last step is always saved)
    keep_checkpoints: int = 2  # older complete checkpoints are deleted
    precision: str = "no"  # "no" | "bf16" | "fp16" (accelerate mixed precision)
    gradient_checkpointing: bool = False
    compile_layers: bool = False  # torch.compile each LLM decoder layer (GPU throughput; compiles on first steps)
    region_dropout: float = 0.0  # P(a training sample loses 1-3 regions); the paper: 0 (data.dataset.kept_regions)
    region_name_weight: float = 1.0  # loss weight of the organ-name tokens of RRA targets (the paper: 1)
    num_workers: int = 0  # DataLoader workers; 0 is fastest when the inputs are cached tensors
    threads: int | None = None  # torch CPU threads while training (None: torch's default); 1 = the same numbers
                                # on any machine with the same torch build, whatever its core count

    @classmethod
    def from_profile(cls, section: Mapping[str, Any], **overrides: Any) -> TrainSettings:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in dict(section).items() if k in known}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def order_key(self, world_size: int) -> dict[str, Any]:
        """The settings that fix the data order and the update rule: a resume must not change them."""
        key = {"seed": self.seed, "batch_size": self.batch_size, "grad_accum": self.grad_accum,
               "world_size": world_size}
        if self.lr_schedule != "constant":  # a decaying schedule is fixed by its length too
            key |= {"lr_schedule": self.lr_schedule, "max_steps": self.max_steps, "epochs": self.epochs}
        if self.region_dropout:  # which regions each sample keeps
            key["region_dropout"] = self.region_dropout
        return key


@dataclass
class TrainResult:
    steps: int
    final_loss: float
    seconds: float
    samples_per_s: float
    world_size: int
    weights_sha256: str
    resumed_from: int | None = None
    losses: list[float] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_accelerator(settings: TrainSettings) -> Any:
    """An `Accelerator` for this process. Without CUDA it is told `cpu=True`: only then does it treat a
    `torchrun` launch (RANK/WORLD_SIZE in the environment) as multi-process CPU training with gloo."""
    from accelerate import Accelerator

    return Accelerator(mixed_precision=settings.precision, gradient_accumulation_steps=settings.grad_accum,
                       cpu=not torch.cuda.is_available())


def epoch_batches(n: int, epoch: int, seed: int, rank: int, world_size: int, batch_size: int,
                  shuffle: bool = True) -> list[list[int]]:
    """This rank's batches of dataset indices for `epoch`: a seeded permutation, padded by wrap-around to a
    multiple of the world size (as DistributedSampler does) so every rank runs the same number of steps."""
    if n == 0:
        raise KitError("the training set is empty")
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=g).tolist() if shuffle else list(range(n))
    per_rank = math.ceil(n / world_size)
    order += (order * world_size)[: per_rank * world_size - n]
    mine = order[rank::world_size]
    return [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]


def warmup_constant(warmup_steps: int) -> Callable[[int], float]:
    """LR multiplier: linear warm-up over `warmup_steps` optimizer steps, then 1."""
    return lambda step: min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


def lr_multiplier(schedule: str, warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """LR multiplier per optimizer step: linear warm-up, then constant (the paper) or a cosine decay that reaches 0
    after the last of `total_steps` steps (settles a small model trained from scratch: it stops hopping between
    solutions late in training)."""
    warm = warmup_constant(warmup_steps)
    if schedule == "constant":
        return warm
    if schedule != "cosine":
        raise KitError(f"train.lr_schedule must be 'constant' or 'cosine', not {schedule!r}")
    span = max(1, total_steps - warmup_steps)

    def cosine(step: int) -> float:
        if step < warmup_steps:
            return warm(step)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step + 1 - warmup_steps) / span)))
    return cosine


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def batch_names(batch: Any) -> str:
    names = batch.get("names") if isinstance(batch, dict) else None
    return ", ".join(map(str, names)) if names else "<unnamed batch>"


class TrainLog:
    """`train_log.csv` (step, epoch, loss, lr, elapsed_s), appended and flushed one row per optimizer step.

    On resume the rows after the checkpoint's step are dropped (they belong to the lost steps), as is a last line
    cut short by a crash."""

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        rows = self.read(path) if resume_step is not None and path.exists() else []
        rows = [r for r in rows if int(r["step"]) <= (resume_step or 0)]
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=LOG_COLUMNS)
            w.writeheader()
            w.writerows(rows)
        self._file = open(path, "a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=LOG_COLUMNS)

    @staticmethod
    def read(path: Path) -> list[dict[str, str]]:
        text = Path(path).read_text()
        if text and not text.endswith("\n"):
            text = text[: text.rfind("\n") + 1]
        rows = list(csv.DictReader(text.splitlines()))
        return [r for r in rows if all(r.get(c) not in (None, "") for c in LOG_COLUMNS)]

    def write(self, **row: Any) -> None:
        self._writer.writerow(row)
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def fit(
    model: torch.nn.Module,
    dataset: torch.utils.data.Dataset,
    collate_fn: Callable[[list[Any]], Any],
    step_fn: Callable[[torch.nn.Module, Any], torch.Tensor],
    settings: TrainSettings,
    run_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    export: Callable[[torch.nn.Module, Path], None] | None = None,
    accelerator: Any = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train `model` on `dataset` and checkpoint into `run_dir/checkpoints/`; see the module docstring.

    `step_fn(model, batch)` returns the scalar loss of one micro-batch (already on the device). If the dataset has
    `set_epoch(epoch)`, it is called before each epoch (region shuffling for RRA depends on it). `export(model,
    folder)` adds the model's own `save_pretrained` export to each checkpoint. The model must be built with the
    same seed on every rank; the caller seeds with `settings.seed` before building it.
    """
    from tqdm.auto import tqdm

    run_dir = Path(run_dir)
    acc = accelerator or make_accelerator(settings)
    rank, world = acc.process_index, acc.num_processes
    if acc.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        log(f"[train] world_size {world}, device {acc.device}, distributed {acc.distributed_type.value}, "
            f"precision {settings.precision}")
    acc.wait_for_everyone()

    per_epoch = len(epoch_batches(len(dataset), 0, settings.seed, rank, world, settings.batch_size))
    if settings.max_steps is not None:
        total = int(settings.max_steps)
    elif settings.epochs is not None:
        total = math.ceil(settings.epochs * per_epoch / settings.grad_accum)
    else:
        raise KitError("train settings need max_steps or epochs")

    llm = getattr(model, "lang_model", model)  # a Reg2RG's (peft-wrapped) LLM, or a bare LLM
    if settings.gradient_checkpointing:
        from reg2rg_lib.model.llm import set_gradient_checkpointing

        if not any(hasattr(llm, f"{kind}_checkpointing_enable") for kind in ("gradient", "activation")):
            raise KitError(f"gradient_checkpointing: {type(model).__name__} has no transformers LLM to "
                           "recompute the activations of")
        set_gradient_checkpointing(llm, True)  # transformers renamed the switch in 5.x: one helper for both
    if settings.compile_layers:
        from reg2rg_lib.model.llm import compile_decoder_layers

        compile_decoder_layers(llm)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise KitError("the model has no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_multiplier(settings.lr_schedule, settings.warmup_steps, total))
    # The scheduler is stepped by hand once per optimizer step: accelerate's wrapper would step it once per
    # process, which makes the warm-up depend on the world size.
    engine = acc.distributed_type.value in ("DEEPSPEED", "FSDP")  # they own weights/optimizer state on disk
    if acc.distributed_type.value == "DEEPSPEED":  # no prepared DataLoader to read the micro-batch size from
        ds = acc.state.deepspeed_plugin.deepspeed_config
        ds["train_micro_batch_size_per_gpu"] = settings.batch_size
        if ds.get("gradient_accumulation_steps") not in (None, "auto", settings.grad_accum):
            raise KitError(f"the DeepSpeed config accumulates {ds['gradient_accumulation_steps']} micro-batches, "
                           f"the profile's train.grad_accum is {settings.grad_accum}: make them equal")
    model, prepared_opt = acc.prepare(model, optimizer)
    core = acc.unwrap_model(model)
    engine_save = acc.save_state if engine else None
    engine_load = acc.load_state if engine else None

    ckpt_root = run_dir / "checkpoints"
    writer = CheckpointWriter(ckpt_root, rank=rank, barrier=acc.wait_for_everyone,
                              keep_last=settings.keep_checkpoints)
    step, micro, resumed_from = 0, 0, None
    if resume:
        latest = latest_checkpoint(ckpt_root)
        if latest is None:
            if acc.is_main_process:
                log(f"[train] --resume: no complete checkpoint in {ckpt_root}; starting from step 0")
        else:
            state = load_checkpoint(latest, core, optimizer, scheduler, rank=rank, engine_load=engine_load)
            if state.get("order_key") != settings.order_key(world):
                raise KitError(f"{latest}: checkpoint was written with {state.get('order_key')}, this run has "
                               f"{settings.order_key(world)}; a resume must keep them (or start a new run folder)")
            if acc.scaler is not None and (latest / "scaler.pt").is_file():
                acc.scaler.load_state_dict(torch.load(latest / "scaler.pt", weights_only=False))
            step, micro, resumed_from = state["step"], state["micro_step"], state["step"]
            if acc.is_main_process:
                log(f"[train] resumed from {latest} (step {step})")
    else:
        if acc.is_main_process:
            for _old_step, folder in list_checkpoints(ckpt_root):  # a fresh run must not resume into old ones
                remove_checkpoint(folder)
        acc.wait_for_everyone()
        seed_everything(settings.seed + rank)  # dropout masks differ per rank, as in DDP training

    tlog = TrainLog(run_dir / "train_log.csv", resumed_from) if acc.is_main_process else None
    tb = _tensorboard(run_dir / "tensorboard", purge_step=step + 1) if acc.is_main_process else None

    def save_checkpoint() -> None:
        state = {"step": step, "micro_step": micro, "order_key": settings.order_key(world),
                 "settings": asdict(settings), "total_steps": total}
        final = writer.save(step, core, optimizer, scheduler, state, export=export, engine_save=engine_save)
        if acc.scaler is not None and acc.is_main_process:
            torch.save(acc.scaler.state_dict(), final / "scaler.pt")

    losses: list[float] = []
    start = time.perf_counter()
    samples = 0
    bar = tqdm(total=total, initial=step, desc="train", disable=not (progress and acc.is_main_process),
               dynamic_ncols=True)
    running = torch.zeros((), device=acc.device)
    model.train()
    try:
        while step < total:
            epoch, offset = divmod(micro, per_epoch)
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)
            batches = epoch_batches(len(dataset), epoch, settings.seed, rank, world, settings.batch_size)
            loader = torch.utils.data.DataLoader(
                dataset, batch_sampler=batches[offset:], collate_fn=collate_fn,
                num_workers=settings.num_workers, generator=torch.Generator(),  # keeps the global RNG untouched
            )
            for batch in loader:
                with acc.accumulate(model):
                    loss = _micro_step(acc, model, step_fn, batch, step)
                    if acc.sync_gradients and settings.max_grad_norm:
                        acc.clip_grad_norm_(params, settings.max_grad_norm)
                    prepared_opt.step()
                    prepared_opt.zero_grad(set_to_none=True)
                running += loss.detach().float()
                micro += 1
                samples += len(batch["names"]) if isinstance(batch, dict) and "names" in batch else 1
                if not acc.sync_gradients:
                    continue
                lr = scheduler.get_last_lr()[0]  # the rate this update used
                scheduler.step()
                step += 1
                mean_loss = acc.reduce(running / settings.grad_accum, reduction="mean").item()
                running.zero_()
                losses.append(mean_loss)
                if tlog is not None:
                    tlog.write(step=step, epoch=epoch, loss=repr(mean_loss), lr=repr(lr),
                               elapsed_s=f"{time.perf_counter() - start:.3f}")
                    tb.add_scalar("train/loss", mean_loss, step)
                    tb.add_scalar("train/lr", lr, step)
                bar.update(1)
                bar.set_postfix(loss=f"{mean_loss:.4f}", epoch=epoch)
                if step % settings.save_every == 0 or step == total:
                    save_checkpoint()
                if step >= total:
                    break
    finally:
        bar.close()
        if tlog is not None:
            tlog.close()
            tb.close()

    seconds = time.perf_counter() - start
    digest = weights_digest(core)
    log(f"[train] rank {rank} weights_sha256 {digest}")
    result = TrainResult(
        steps=step, final_loss=losses[-1] if losses else float("nan"), seconds=seconds,
        samples_per_s=samples * world / seconds if seconds > 0 else 0.0, world_size=world,
        weights_sha256=digest, resumed_from=resumed_from, losses=losses,
    )
    if acc.is_main_process:
        write_json_atomic(run_dir / "train_summary.json", {k: v for k, v in asdict(result).items() if k != "losses"})
    acc.wait_for_everyone()
    return result


def _micro_step(acc: Any, model: torch.nn.Module, step_fn: Callable, batch: Any, step: int) -> torch.Tensor:
    """Forward + backward of one micro-batch; failures name the cases in the batch."""
    batch = to_device(batch, acc.device)
    try:
        loss = step_fn(model, batch)
        if not torch.isfinite(loss.detach()).all():
            raise KitError(f"non-finite loss {loss.item()} at step {step + 1} on case(s) {batch_names(batch)}; "
                           "lower train.lr or check these cases' inputs")
        acc.backward(loss)
    except torch.OutOfMemoryError as err:
        raise KitError(f"out of memory at step {step + 1} on case(s) {batch_names(batch)}: reduce "
                       "train.batch_size (raise grad_accum to keep the global batch), enable "
                       f"gradient_checkpointing, or use bf16 ({str(err).splitlines()[0]})") from err
    except (RuntimeError, ValueError, IndexError, TypeError) as err:
        raise KitError(f"training step {step + 1} failed on case(s) {batch_names(batch)}: "
                       f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from err
    return loss


def _tensorboard(folder: Path, purge_step: int) -> Any:
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(folder), purge_step=purge_step)


def read_train_log(run_dir: str | os.PathLike[str]) -> list[dict[str, float]]:
    """`train_log.csv` of a run as a list of rows with float values (for plots and tests)."""
    path = Path(run_dir) / "train_log.csv"
    if not path.is_file():
        raise KitError(f"{path}: no training log; train the run first (`reg2rg train`)")
    return [{k: float(v) for k, v in row.items()} for row in TrainLog.read(path)]


def summary(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(run_dir) / "train_summary.json"
    return json.loads(path.read_text()) if path.is_file() else {}
