"""The training loop: accelerate for devices, precision and distribution; resumable, atomic checkpoints.

The paper trains the Perceiver, the geometry encoder, the projections, the new token embeddings and LoRA
adapters with AdamW, a short linear warm-up and then a constant learning rate, under DeepSpeed ZeRO-2 with
gradient checkpointing. `fit` runs that recipe unchanged in one CPU process, under `torchrun` (gloo) and under
`accelerate launch` on GPUs (DDP, DeepSpeed, FSDP: configs/accelerate/).

Reproducible resume: the data order is a pure function of (seed, epoch, rank) (`epoch_batches`), region
shuffling is a pure function of (seed, epoch, case), and the RNG states, optimizer and scheduler are
checkpointed, so a run resumed from step k logs the same losses as an uninterrupted one.

`fit` knows nothing about Reg2RG: it takes a model, a dataset, a collate function and a
`step_fn(model, batch)` that returns the loss. `run.train_run` wires in the real model and the prep cache for
`reg2rg train`.

`fit` reads top-down: `_setup` (run length, optimizer, schedule, accelerate), `_resume` or `_fresh_start`,
then `_run_epoch` until the step budget is spent, each micro-batch an `_update`, each update finished by
`_optimizer_step` (log, `_save`). `Updates` runs the same update one batch at a time, without data loader, log
or checkpoints (`reg2rg bench train-demo` alternates two training paths with it).

One file over 500 lines: `fit`'s steps share the private `_Run` and `_TrainState`, and `TrainSettings`, the
schedule and `train_log.csv` are what those steps read and write; split, private state would become an API.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from reg2rg_lib.errors import KitError
from reg2rg_lib.io import AppendOnlyCSV, read_complete_csv, write_json_atomic
from reg2rg_lib.model.llm import compile_decoder_layers, set_gradient_checkpointing
from reg2rg_lib.paths import RunFolder
from reg2rg_lib.profiles import TrainSection
from reg2rg_lib.samples.device import batch_names, to_device
from reg2rg_lib.train.checkpoints import (
    CheckpointWriter,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    remove_checkpoint,
    rng_state,
    safe_torch_load,
    set_rng_state,
    step_dir_name,
    weights_digest,
)

logger = logging.getLogger(__name__)

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
    # torch.compile each LLM decoder layer (GPU throughput; compiles on first steps)
    compile_layers: bool = False
    # P(a training sample loses 1-3 regions); the paper: 0 (samples.dataset.ReportDataset.kept_regions)
    region_dropout: float = 0.0
    region_dropout_max: int = 3  # the most regions a dropped sample loses (9: down to a single region)
    region_few: float = 0.0  # P(a training sample keeps only 1-3 regions), before region dropout
    # P(a region's texture tokens are zeroed in a training sample), else P(its geometry token); the paper: 0
    branch_dropout: float = 0.0
    # P(a region's geometry token alone is zeroed in a training sample), on top of branch_dropout's; paper: 0
    geometry_dropout: float = 0.0
    # train.run: the fast path (train.fast) where it applies; the same loss up to rounding
    fast_path: bool = True
    region_name_weight: float = 1.0  # loss weight of the organ-name tokens of RRA targets (the paper: 1)
    # weight of the region label head's loss (`Reg2RGConfig.label_head`, `run.region_label_loss`); paper: 0
    label_weight: float = 0.0
    num_workers: int = 0  # DataLoader workers; 0 is fastest when the inputs are cached tensors
    # AdamW's fused kernel: one call updates every tensor (the same update up to
    fused_optimizer: bool = False
                                   # float rounding; ~1.5 ms a step less on the demo's 61 tensors, one core)
    # torch CPU threads while training (None: torch's default); 1 = the same numbers
    threads: int | None = None
                                # on any machine with the same torch build, whatever its core count

    @classmethod
    def from_profile(cls, section: TrainSection, **overrides: Any) -> TrainSettings:
        """The profile's `train` settings; `overrides` that are not None win (e.g. `--max-steps`)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in asdict(section).items() if k in known}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def sampling(self) -> dict[str, Any]:
        """The `ReportDataset` arguments that decide what a training sample holds (its seed, the regions it
        keeps, the branches zeroed): one list for `train_run` and the training benches."""
        return {"seed": self.seed, "region_dropout": self.region_dropout,
                "region_dropout_max": self.region_dropout_max, "region_few": self.region_few,
                "branch_dropout": self.branch_dropout, "geometry_dropout": self.geometry_dropout,
                "region_labels": self.label_weight > 0}

    def order_key(self, world_size: int) -> dict[str, Any]:
        """The settings that fix the data order and the update rule: a resume must not change them."""
        key = {"seed": self.seed, "batch_size": self.batch_size, "grad_accum": self.grad_accum,
               "world_size": world_size}
        if self.lr_schedule != "constant":  # a decaying schedule is fixed by its length too
            key |= {"lr_schedule": self.lr_schedule, "max_steps": self.max_steps, "epochs": self.epochs}
        if self.region_dropout:  # which regions each sample keeps
            key["region_dropout"] = self.region_dropout
            if self.region_dropout_max != 3:  # keyed only when set, so older checkpoints still resume
                key["region_dropout_max"] = self.region_dropout_max
        if self.region_few:  # keyed only when set, so older checkpoints still resume
            key["region_few"] = self.region_few
        if self.branch_dropout:  # keyed only when set, so older checkpoints still resume
            key["branch_dropout"] = self.branch_dropout
        if self.geometry_dropout:  # keyed only when set, so older checkpoints still resume
            key["geometry_dropout"] = self.geometry_dropout
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


def make_accelerator(settings: TrainSettings) -> Accelerator:
    """An `Accelerator` for this process. Without CUDA it is told `cpu=True`: only then does it treat a
    `torchrun` launch (RANK/WORLD_SIZE in the environment) as multi-process CPU training with gloo.

    A launch that asks for FSDP or DeepSpeed (`accelerate launch --config_file configs/accelerate/fsdp.yaml`
    sets ACCELERATE_USE_FSDP / ACCELERATE_USE_DEEPSPEED) without CUDA is refused: accelerate (1.16) enables
    either only on GPUs and would otherwise train every process unsharded, as plain DDP over gloo, without a
    word."""
    engines = [
        name
        for name, var in (("FSDP", "ACCELERATE_USE_FSDP"), ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED"))
        if os.environ.get(var, "false").lower() == "true"
    ]
    if engines and not torch.cuda.is_available():
        raise KitError(
            f"the launch asks for {engines[0]}, which needs GPUs (accelerate would train unsharded on "
            "CPUs); on CPUs launch with torchrun or configs/accelerate/cpu_2proc.yaml"
        )
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
    """LR multiplier per optimizer step: linear warm-up, then constant (the paper) or a cosine decay that
    reaches 0 after the last of `total_steps` steps (settles a small model trained from scratch: it stops
    hopping between solutions late in training)."""
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


class TrainLog:
    """`train_log.csv` (step, epoch, loss, lr, elapsed_s), appended and flushed one row per optimizer step.

    On resume the rows after the checkpoint's step are dropped (they belong to the lost steps), as is a last
    line cut short by a crash."""

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        rows = self.read(path) if resume_step is not None and path.exists() else []
        rows = [r for r in rows if int(r["step"]) <= (resume_step or 0)]
        self._csv = AppendOnlyCSV(path, LOG_COLUMNS, rows)

    @staticmethod
    def read(path: Path) -> list[dict[str, str]]:
        """The complete rows of a training log (every column filled)."""
        _, rows = read_complete_csv(path)
        return [r for r in rows if all(r.get(c) not in (None, "") for c in LOG_COLUMNS)]

    def write(self, step: int, epoch: int, loss: float, lr: float, elapsed_s: float) -> None:
        """One optimizer step's row; floats as `repr` (exact), the time to the millisecond."""
        self._csv.write([step, epoch, repr(loss), repr(lr), f"{elapsed_s:.3f}"])

    def close(self) -> None:
        self._csv.close()


@dataclass
class _Run:
    """What one `fit` call builds before its first step and keeps unchanged to its end."""

    acc: Accelerator
    settings: TrainSettings
    model: torch.nn.Module  # as prepared by accelerate (DDP / DeepSpeed / FSDP wrapper): what steps run
    core: torch.nn.Module  # the unwrapped model: what checkpoints save and load
    params: list[torch.nn.Parameter]  # the trainable ones, for gradient clipping
    optimizer: torch.optim.Optimizer  # the bare optimizer: checkpoints store its state
    prepared_opt: Any  # accelerate's wrapper of `optimizer`: steps only at accumulation boundaries
    scheduler: torch.optim.lr_scheduler.LambdaLR
    per_epoch: int  # micro-batches per epoch on each rank
    total: int  # optimizer steps of the whole run
    engine: bool  # DeepSpeed / FSDP: they own the weights and optimizer state on disk
    writer: CheckpointWriter
    export: Callable[[torch.nn.Module, Path], None] | None
    on_checkpoint: Callable[[int, Path], None] | None = None  # see `fit`


@dataclass
class _TrainState:
    """Where the loop stands: restored from a checkpoint on resume, advanced by every micro-batch."""

    device: torch.device
    step: int = 0  # optimizer steps done
    micro: int = 0  # micro-batches done: fixes the epoch and the position in it
    resumed_from: int | None = None
    samples: int = 0  # samples this rank has trained on in this call
    losses: list[float] = field(default_factory=list)  # mean loss of each optimizer step of this call
    running: torch.Tensor = field(init=False)  # loss summed over the current step's micro-batches

    def __post_init__(self) -> None:
        self.running = torch.zeros((), device=self.device)


@dataclass
class _Monitor:
    """Where each optimizer step is reported: the CSV log and TensorBoard (main process only) and the bar."""

    log: TrainLog | None
    board: SummaryWriter | None
    bar: tqdm
    start: float  # perf_counter() when training started

    def record(self, step: int, epoch: int, loss: float, lr: float) -> None:
        if self.log is not None:
            self.log.write(step, epoch, loss, lr, time.perf_counter() - self.start)
            self.board.add_scalar("train/loss", loss, step)
            self.board.add_scalar("train/lr", lr, step)
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.4f}", epoch=epoch)

    def close(self) -> None:
        self.bar.close()
        if self.log is not None:
            self.log.close()
            self.board.close()


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
    accelerator: Accelerator | None = None,
    progress: bool = True,
    on_checkpoint: Callable[[int, Path], None] | None = None,
) -> TrainResult:
    """Train `model` on `dataset` and checkpoint into `run_dir/checkpoints/`; see the module docstring.

    `step_fn(model, batch)` returns the scalar loss of one micro-batch (already on the device). If the dataset
    has `set_epoch(epoch)`, it is called before each epoch (region shuffling for RRA depends on it).
    `export(model, folder)` adds the model's own `save_pretrained` export to each checkpoint. The model must
    be built with the same seed on every rank; the caller seeds with `settings.seed` before building it.
    `on_checkpoint(step, folder)` (optional; the main process only) runs after each checkpoint is complete and
    before an older one is pruned next time, e.g. to score it (notebook 03's region accuracy against step);
    the RNGs are restored after it, so training goes on exactly as without it.
    """
    run_dir = Path(run_dir)
    acc = accelerator or make_accelerator(settings)
    if acc.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        logger.info(f"[train] world_size {acc.num_processes}, device {acc.device}, distributed "
                    f"{acc.distributed_type.value}, precision {settings.precision}")
    acc.wait_for_everyone()
    run = _setup(model, len(dataset), settings, acc, RunFolder(run_dir).checkpoints, export)
    run.on_checkpoint = on_checkpoint
    state = _resume(run) if resume else _fresh_start(run)
    monitor = _open_monitor(run, state, run_dir, progress)
    run.model.train()
    try:
        while state.step < run.total:
            _run_epoch(run, state, dataset, collate_fn, step_fn, monitor)
    finally:
        monitor.close()
    return _finish(run, state, run_dir, time.perf_counter() - monitor.start)


def _setup(model: torch.nn.Module, n_samples: int, settings: TrainSettings, acc: Accelerator, ckpt_root: Path,
           export: Callable[[torch.nn.Module, Path], None] | None) -> _Run:
    """The run's length, the LLM's memory/speed switches, AdamW + the LR schedule, all prepared by
    accelerate."""
    rank, world = acc.process_index, acc.num_processes
    per_epoch = len(epoch_batches(n_samples, 0, settings.seed, rank, world, settings.batch_size))
    if settings.max_steps is not None:
        total = int(settings.max_steps)
    elif settings.epochs is not None:
        total = math.ceil(settings.epochs * per_epoch / settings.grad_accum)
    else:
        raise KitError("train settings need max_steps or epochs")
    _switch_llm(model, settings)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise KitError("the model has no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay,
                                  fused=True if settings.fused_optimizer else None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_multiplier(settings.lr_schedule, settings.warmup_steps, total))
    # The scheduler is stepped by hand once per optimizer step: accelerate's wrapper would step it once per
    # process, which makes the warm-up depend on the world size.
    if acc.distributed_type.value == "DEEPSPEED":  # no prepared DataLoader to read the micro-batch size from
        ds = acc.state.deepspeed_plugin.deepspeed_config
        ds["train_micro_batch_size_per_gpu"] = settings.batch_size
        if ds.get("gradient_accumulation_steps") not in (None, "auto", settings.grad_accum):
            raise KitError(
                f"the DeepSpeed config accumulates {ds['gradient_accumulation_steps']} micro-batches, "
                f"the profile's train.grad_accum is {settings.grad_accum}: make them equal"
            )
    prepared, prepared_opt = acc.prepare(model, optimizer)
    writer = CheckpointWriter(ckpt_root, rank=rank, barrier=acc.wait_for_everyone,
                              keep_last=settings.keep_checkpoints)
    return _Run(acc=acc, settings=settings, model=prepared, core=acc.unwrap_model(prepared), params=params,
                optimizer=optimizer, prepared_opt=prepared_opt, scheduler=scheduler, per_epoch=per_epoch,
                total=total, engine=acc.distributed_type.value in ("DEEPSPEED", "FSDP"), writer=writer,
                export=export)


def _switch_llm(model: torch.nn.Module, settings: TrainSettings) -> None:
    """Gradient checkpointing and per-layer compilation of the model's LLM, when the settings ask for them."""
    llm = getattr(model, "lang_model", model)  # a Reg2RG's (peft-wrapped) LLM, or a bare LLM
    if settings.gradient_checkpointing:
        if not any(hasattr(llm, f"{kind}_checkpointing_enable") for kind in ("gradient", "activation")):
            raise KitError(f"gradient_checkpointing: {type(model).__name__} has no transformers LLM to "
                           "recompute the activations of")
        set_gradient_checkpointing(llm, True)  # transformers renamed the switch in 5.x: one helper for both
    if settings.compile_layers:
        compile_decoder_layers(llm)


def _resume(run: _Run) -> _TrainState:
    """Restore the newest complete checkpoint (weights, optimizer, scheduler, RNG, scaler); refuse one written
    with another data order or update rule. Without a checkpoint the run starts from step 0."""
    acc, root = run.acc, run.writer.root
    latest = latest_checkpoint(root)
    if latest is None:
        if acc.is_main_process:
            logger.info(f"[train] --resume: no complete checkpoint in {root}; starting from step 0")
        return _TrainState(acc.device)
    saved = load_checkpoint(latest, run.core, run.optimizer, run.scheduler, rank=acc.process_index,
                            engine_load=acc.load_state if run.engine else None)
    order_key = run.settings.order_key(acc.num_processes)
    if saved.get("order_key") != order_key:
        raise KitError(f"{latest}: checkpoint was written with {saved.get('order_key')}, this run has "
                       f"{order_key}; a resume must keep them (or start a new run folder)")
    if acc.scaler is not None and (latest / "scaler.pt").is_file():
        acc.scaler.load_state_dict(safe_torch_load(latest / "scaler.pt"))
    if acc.is_main_process:
        logger.info(f"[train] resumed from {latest} (step {saved['step']})")
    return _TrainState(acc.device, step=saved["step"], micro=saved["micro_step"], resumed_from=saved["step"])


def _fresh_start(run: _Run) -> _TrainState:
    """Delete the run folder's old checkpoints (a fresh run must not resume into them) and seed each rank."""
    acc = run.acc
    if acc.is_main_process:
        for _old_step, folder in list_checkpoints(run.writer.root):
            remove_checkpoint(folder)
    acc.wait_for_everyone()
    # dropout masks differ per rank, as in DDP training
    seed_everything(run.settings.seed + acc.process_index)
    return _TrainState(acc.device)


def _open_monitor(run: _Run, state: _TrainState, run_dir: Path, progress: bool) -> _Monitor:
    """The log (continued after the resumed step), TensorBoard (its later events purged) and the progress
    bar."""
    main = run.acc.is_main_process
    log = TrainLog(RunFolder(run_dir).train_log, state.resumed_from) if main else None
    board = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=state.step + 1) if main else None
    start = time.perf_counter()
    bar = tqdm(total=run.total, initial=state.step, desc="train", disable=not (progress and main),
               dynamic_ncols=True)
    return _Monitor(log, board, bar, start)


def _run_epoch(
    run: _Run,
    state: _TrainState,
    dataset: torch.utils.data.Dataset,
    collate_fn: Callable[[list[Any]], Any],
    step_fn: Callable[[torch.nn.Module, Any], torch.Tensor],
    monitor: _Monitor,
) -> None:
    """This rank's batches of the current epoch from where `state` stands, until the epoch or the run ends."""
    acc, settings = run.acc, run.settings
    epoch, offset = divmod(state.micro, run.per_epoch)
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    batches = epoch_batches(len(dataset), epoch, settings.seed, acc.process_index, acc.num_processes,
                            settings.batch_size)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=batches[offset:], collate_fn=collate_fn,
        num_workers=settings.num_workers, generator=torch.Generator(),  # keeps the global RNG untouched
    )
    for batch in loader:
        _update(run, state, batch, step_fn)
        if not acc.sync_gradients:
            continue
        _optimizer_step(run, state, epoch, monitor)
        if state.step >= run.total:
            break


def _update(run: _Run, state: _TrainState, batch: Any,
            step_fn: Callable[[torch.nn.Module, Any], torch.Tensor]) -> torch.Tensor:
    """One micro-batch: forward + backward, and at an accumulation boundary the clipped optimizer update."""
    acc, settings = run.acc, run.settings
    with acc.accumulate(run.model):
        loss = _micro_step(acc, run.model, step_fn, batch, state.step)
        if acc.sync_gradients and settings.max_grad_norm:
            _check_grad_norm(acc, acc.clip_grad_norm_(run.params, settings.max_grad_norm), state.step, batch)
        run.prepared_opt.step()
        run.prepared_opt.zero_grad(set_to_none=True)
    state.running += loss.detach().float()
    state.micro += 1
    state.samples += len(batch["names"]) if isinstance(batch, dict) and "names" in batch else 1
    return loss


def _step_done(run: _Run, state: _TrainState) -> tuple[float, float]:
    """After an update: the schedule steps; returns the step's loss averaged over ranks and the rate it
    used."""
    lr = run.scheduler.get_last_lr()[0]  # the rate this update used
    run.scheduler.step()
    state.step += 1
    mean_loss = run.acc.reduce(state.running / run.settings.grad_accum, reduction="mean").item()
    state.running.zero_()
    state.losses.append(mean_loss)
    return mean_loss, lr


def _optimizer_step(run: _Run, state: _TrainState, epoch: int, monitor: _Monitor) -> None:
    """Bookkeeping after an update: the schedule, the step's loss averaged over ranks, the log, a
    checkpoint."""
    mean_loss, lr = _step_done(run, state)
    monitor.record(state.step, epoch, mean_loss, lr)
    if state.step % run.settings.save_every == 0 or state.step == run.total:
        _save(run, state)
        if run.on_checkpoint is not None:
            if run.acc.is_main_process:
                rngs = rng_state()
                run.on_checkpoint(state.step, run.writer.root / step_dir_name(state.step))
                set_rng_state(rngs)
            run.acc.wait_for_everyone()


class Updates:
    """`fit`'s optimizer updates, one batch at a time, without its data loader, log and checkpoints: what
    `reg2rg bench train-demo` times, so that two training paths can alternate step by step in one process.

    `updates(batch, step_fn)` runs a micro-batch as `fit` does (AdamW + the schedule of `settings` over a run
    of `n_samples` samples, gradient clipping, accumulation) and returns the loss of the step it completed
    (None between accumulation boundaries)."""

    def __init__(self, model: torch.nn.Module, settings: TrainSettings, n_samples: int,
                 accelerator: Accelerator | None = None) -> None:
        acc = accelerator or make_accelerator(settings)
        self.run = _setup(model, n_samples, settings, acc, Path(os.devnull) / "checkpoints", None)
        self.state = _TrainState(acc.device)
        self.run.model.train()

    @property
    def model(self) -> torch.nn.Module:
        return self.run.model

    def __call__(self, batch: Any, step_fn: Callable[[torch.nn.Module, Any], torch.Tensor]) -> float | None:
        _update(self.run, self.state, batch, step_fn)
        if not self.run.acc.sync_gradients:
            return None
        return _step_done(self.run, self.state)[0]


def _save(run: _Run, state: _TrainState) -> None:
    """Checkpoint `step-N/`: weights, optimizer, scheduler, RNG, the loop's position and settings (+
    scaler)."""
    acc = run.acc
    trainer_state = {"step": state.step, "micro_step": state.micro,
                     "order_key": run.settings.order_key(acc.num_processes), "settings": asdict(run.settings),
                     "total_steps": run.total}
    run.writer.save(state.step, run.core, run.optimizer, run.scheduler, trainer_state, export=run.export,
                    engine_save=acc.save_state if run.engine else None,
                    extra={"scaler.pt": acc.scaler.state_dict()} if acc.scaler is not None else None)  # fp16


def _finish(run: _Run, state: _TrainState, run_dir: Path, seconds: float) -> TrainResult:
    """The result (each rank logs its weights' digest: equal digests show the ranks stayed in sync), and
    `train_summary.json`."""
    acc = run.acc
    digest = weights_digest(run.core)
    logger.info(f"[train] rank {acc.process_index} weights_sha256 {digest}")
    result = TrainResult(
        steps=state.step,
        final_loss=state.losses[-1] if state.losses else float("nan"),
        seconds=seconds,
        samples_per_s=state.samples * acc.num_processes / seconds if seconds > 0 else 0.0,
        world_size=acc.num_processes,
        weights_sha256=digest,
        resumed_from=state.resumed_from,
        losses=state.losses,
    )
    if acc.is_main_process:
        write_json_atomic(
            RunFolder(run_dir).train_summary, {k: v for k, v in asdict(result).items() if k != "losses"}
        )
    acc.wait_for_everyone()
    return result


def _micro_step(
    acc: Accelerator, model: torch.nn.Module, step_fn: Callable, batch: Any, step: int
) -> torch.Tensor:
    """Forward + backward of one micro-batch; failures name the cases in the batch."""
    batch = to_device(batch, acc.device)
    try:
        loss = step_fn(model, batch)
        if not torch.isfinite(loss.detach()).all():
            raise KitError(
                f"non-finite loss {loss.item()} at step {step + 1} on case(s) {batch_names(batch)}; "
                "lower train.lr or check these cases' inputs"
            )
        acc.backward(loss)
    except torch.OutOfMemoryError as err:
        raise KitError(f"out of memory at step {step + 1} on case(s) {batch_names(batch)}: reduce "
                       "train.batch_size (raise grad_accum to keep the global batch), enable "
                       f"gradient_checkpointing, or use bf16 ({str(err).splitlines()[0]})") from err
    except (RuntimeError, ValueError, IndexError, TypeError) as err:
        raise KitError(f"training step {step + 1} failed on case(s) {batch_names(batch)}: "
                       f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from err
    return loss


def _check_grad_norm(acc: Accelerator, norm: torch.Tensor | float | None, step: int, batch: Any) -> None:
    """Stop before a NaN/inf gradient reaches the weights (a finite loss can still have one). Under fp16 the
    gradient scaler skips such steps itself, so they pass."""
    if norm is None or acc.scaler is not None or math.isfinite(float(norm)):
        return
    raise KitError(
        f"non-finite gradient norm {float(norm)} at step {step + 1} on case(s) {batch_names(batch)}; "
        "the weights were not updated and the newest checkpoint is still the last good one; lower "
        "train.lr or check these cases' inputs"
    )


def read_train_log(run_dir: str | os.PathLike[str]) -> list[dict[str, float]]:
    """`train_log.csv` of a run as a list of rows with float values (for plots and tests)."""
    path = RunFolder(run_dir).train_log
    if not path.is_file():
        raise KitError(f"{path}: no training log; train the run first (`reg2rg train`)")
    return [{k: float(v) for k, v in row.items()} for row in TrainLog.read(path)]


def summary(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    path = RunFolder(run_dir).train_summary
    return json.loads(path.read_text()) if path.is_file() else {}
