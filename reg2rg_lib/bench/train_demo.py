"""`reg2rg bench train-demo`: samples/s of today's training loop against the fast path.

Both arms train the profile's model (the same initial weights, seed, recipe: `train_run`'s model, dataset and
settings) on the same batches, in one process, step by step alternately (which goes first alternates too), so
a change in the machine's load falls on both:

- **today's loop**: `ReportDataset.__getitem__` + `Collator` through the DataLoader `fit` builds,
  `run.reg2rg_step`, accelerate's backward, clipping and AdamW (`loop.Updates`, the update `fit` runs);
- **the fast path**: `fast.FastTrainData` + `fast.fast_loss` (see its module docstring), fused AdamW.

Before the clocks: the frozen-ViT feature cache is built and the fast path's tables (`FastTrainData`, which
checks every case's item against the dataset's). The loss check then runs both losses and gradients on
`--check` batches at the same (initial) weights: the difference is float rounding. During the timed steps the
two copies train in lockstep; their losses drift apart only by rounding (`trajectory_max_abs_diff`).
`--breakdown` adds where a step of today's loop spends its time (forward and backward per component, by module
hooks; the optimizer). `--roofline` adds each arm's counted FLOPs per sample and its rate against this core's
float32 matrix-product peak (`roofline.py`).

One file over 400 lines: one benchmark, whose inputs, loss check, timed arms, breakdown and work count all run
on the same `DemoSetup` (one model, dataset and fast path built once).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import logging
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from reg2rg_lib.bench.common import report
from reg2rg_lib.env.doctor import machine
from reg2rg_lib.errors import KitError
from reg2rg_lib.paths import RunPaths, default_out_dir
from reg2rg_lib.profiles import load_profile, parse_assignments


def register_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-demo", help="training samples/s: today's loop vs the fast path, same batches, "
                                          "and both losses")
    p.add_argument("--profile", default="demo", help="model, data and recipe of this profile (default demo)")
    p.add_argument("--work", default=None,
                   help="folder with (or for) the profile's inputs: data/, cache/, tokenizer/ (default: "
                        "outputs/<profile> when it has them, else <tmp>/reg2rg-bench-<profile>, built once)")
    p.add_argument("--batch-size", type=int, nargs="+", default=None,
                   help="batch sizes to measure, e.g. 2 4 8 16 (default: the profile's train.batch_size)")
    p.add_argument("--steps", type=int, default=30, help="timed steps per arm and batch size (default 30)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per arm first (default 2)")
    p.add_argument("--check", type=int, default=3,
                   help="batches whose loss and gradients both paths compute at the same weights (default 3)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: the profile's train.threads, else torch's default)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="model config change, as `reg2rg train --set` (e.g. --set rereference=true)")
    p.add_argument("--breakdown", action="store_true",
                   help="also time the components of today's step (at the first batch size)")
    p.add_argument("--roofline", action="store_true",
                   help="also count each arm's FLOPs per sample and compare its rate with this core's "
                        "float32 matrix-product peak (bench/roofline.py)")
    p.add_argument("--json", action="store_true", help="print one JSON line")
    p.set_defaults(func=_train_demo)


# ---- inputs ------------------------------------------------------------------------------------------------
def demo_inputs(profile: Any, work: str | os.PathLike[str] | None) -> RunPaths:
    """The profile's prep cache and tokenizer in `work` (built there when missing: the benchmark, its prep
    cache, the tokenizer, as notebook 01 and `reg2rg train` build them)."""
    from reg2rg_lib.data.prep import PrepParams, prepare
    from reg2rg_lib.data.synth.build import synthesize
    from reg2rg_lib.samples.inputs import ensure_inputs

    if work is None:
        own = RunPaths(default_out_dir(profile.name))
        ready = (own.cache / "manifest.json").is_file() and own.tokenizer.is_dir()
        work = own.root if ready else Path(tempfile.gettempdir()) / f"reg2rg-bench-{profile.name}"
    paths = RunPaths(work)
    d = profile.data
    if not (paths.cache / "manifest.json").is_file():
        if d.cases_train is None:
            raise KitError(
                f"{paths.cache}: no prep cache, and profile {profile.name!r} reads a real dataset; "
                "prepare it first (`reg2rg prepare`) and pass --work"
            )
        if not (paths.data / "manifest.json").is_file():
            synthesize(
                paths.data,
                int(d.cases_train),
                int(d.cases_test),
                n_validation=int(d.cases_validation or 0),
                seed=d.synth_seed,
                shape=d.synth_shape,
                workers=d.workers,
                progress=False,
            )
        prepare(paths.data, paths.cache, PrepParams.from_profile(d), workers=d.workers, progress=False)
    quiet = logging.getLogger("reg2rg_lib.train")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # its progress lines would mix with the figures
    try:
        ensure_inputs(profile, paths, paths.cache, paths.tokenizer)
    finally:
        quiet.setLevel(level)
    return paths


@dataclasses.dataclass
class DemoSetup:
    """What both arms share: the profile's initial model, its training dataset and settings, the fast
    tables."""

    profile: Any
    settings: Any
    model: Any
    dataset: Any
    fast: Any
    old_step: Any
    new_step: Any
    fast_setup_s: float


def build_setup(profile: Any, paths: RunPaths, batch_size: int, changes: dict[str, Any] | None = None
                ) -> DemoSetup:
    """`train_run`'s model (seeded), dataset (cached ViT features) and settings at `batch_size`, and the fast
    path's tables built on them."""
    from reg2rg_lib.data.prep import load_cache
    from reg2rg_lib.model import Reg2RG, Reg2RGConfig, load_tokenizer
    from reg2rg_lib.samples.dataset import ReportDataset
    from reg2rg_lib.samples.features import feature_cache_for, set_train_statistics
    from reg2rg_lib.train.fast import FastTrainData, fast_step_fn
    from reg2rg_lib.train.loop import TrainSettings, seed_everything
    from reg2rg_lib.train.run import reg2rg_step

    cache, tok = load_cache(paths.cache), load_tokenizer(paths.tokenizer)
    settings = TrainSettings.from_profile(profile.train, batch_size=batch_size)
    cfg = Reg2RGConfig.from_profile(profile, changes, paths)
    if cfg.vision_checkpoint and not Path(cfg.vision_checkpoint).is_file():
        cfg = cfg.replace(vision_checkpoint=None)  # throughput does not depend on the ViT's weights
    seed_everything(settings.seed)
    model = Reg2RG(cfg, tok)
    names = [r.name for r in cache.cases("train")]
    features = feature_cache_for(model, cache, names, progress=False)
    set_train_statistics(model, features, names)  # as train_run (vision_standardize)
    dataset = ReportDataset(cache, "train", tok, cfg, features=features, shuffle_regions=True,
                            **settings.sampling())  # train_run's samples
    t0 = time.perf_counter()
    fast = FastTrainData(model, dataset)
    fast_setup_s = time.perf_counter() - t0
    weight, labels = settings.region_name_weight, settings.label_weight
    return DemoSetup(
        profile,
        settings,
        model,
        dataset,
        fast,
        functools.partial(reg2rg_step, name_weight=weight, label_weight=labels),
        fast_step_fn(weight, labels),
        fast_setup_s,
    )


# ---- the loss check ----------------------------------------------------------------------------------------
def loss_check(setup: DemoSetup, batches: list[list[int]]) -> dict[str, Any]:
    """Both paths' losses and gradients on `batches` at the initial weights (no update in between)."""
    from reg2rg_lib.samples.collate import Collator

    model, ds, fast = setup.model, setup.dataset, setup.fast
    collate = Collator(ds.tokenizer.pad_token_id)
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    old_losses, new_losses, grad_rel = [], [], 0.0
    for idx in batches:
        old = setup.old_step(model, collate([ds[i] for i in idx]))
        g_old = torch.autograd.grad(old, params)
        new = setup.new_step(model, fast.collate([fast[i] for i in idx]))
        g_new = torch.autograd.grad(new, params)
        old_losses.append(old.item())
        new_losses.append(new.item())
        for a, b in zip(g_new, g_old):
            grad_rel = max(grad_rel, float((a - b).abs().max() / b.abs().max().clamp(min=1e-30)))
    return {"check_batches": len(batches), "loss_old": old_losses, "loss_new": new_losses,
            "loss_max_abs_diff": max(abs(a - b) for a, b in zip(old_losses, new_losses)),
            "grad_max_rel_diff": grad_rel}


def work_per_sample(setup: DemoSetup, batches: list[list[int]]) -> dict[str, float]:
    """Counted FLOPs of one step of today's loop per sample on `batches` (`roofline.step_flops`), and the
    share of them in attention."""
    from reg2rg_lib.bench.roofline import step_flops
    from reg2rg_lib.samples.collate import Collator

    model, ds = setup.model, setup.dataset
    collate = Collator(ds.tokenizer.pad_token_id)
    params = [p for p in model.parameters() if p.requires_grad]
    counts = [step_flops(lambda idx=idx: setup.old_step(model, collate([ds[i] for i in idx])), params)
              for idx in batches]
    total = sum(f["total"] for f in counts)
    return {"flops": total / sum(len(idx) for idx in batches),
            "attention_share": sum(f["attention"] for f in counts) / total}


# ---- the timed arms ----------------------------------------------------------------------------------------
def _batches(n: int, seed: int, batch_size: int, steps: int) -> list[tuple[int, list[int]]]:
    """(epoch, indices) of the first `steps` batches a run sees (`fit`'s order over epochs)."""
    from reg2rg_lib.train.loop import epoch_batches

    out, epoch = [], 0
    while len(out) < steps:
        out += [(epoch, b) for b in epoch_batches(n, epoch, seed, 0, 1, batch_size)]
        epoch += 1
    return out[:steps]


def time_arms(setup: DemoSetup, steps: int, warmup: int) -> dict[str, Any]:
    """Alternate a step of today's loop and of the fast path on the same batches; samples/s of each."""
    from reg2rg_lib.samples.collate import Collator
    from reg2rg_lib.train.loop import Updates

    settings, ds, fast = setup.settings, setup.dataset, setup.fast
    plan = _batches(len(ds), settings.seed, settings.batch_size, warmup + steps)
    arms = {
        "old": (
            Updates(copy.deepcopy(setup.model), settings, len(ds)),
            ds,
            Collator(ds.tokenizer.pad_token_id),
            setup.old_step,
        ),
        "new": (
            Updates(copy.deepcopy(setup.model), dataclasses.replace(settings, fused_optimizer=True), len(ds)),
            fast,
            fast.collate,
            setup.new_step,
        ),
    }
    seconds = {k: [] for k in arms}
    losses = {k: [] for k in arms}
    samples = 0
    loaders: dict[str, Any] = {}
    epoch_now = None
    for k, (epoch, idx) in enumerate(plan):
        if epoch != epoch_now:  # a DataLoader per epoch and arm, as `fit` builds them
            epoch_now = epoch
            ds.set_epoch(epoch)
            todo = [b for e, b in plan if e == epoch]
            loaders = {name: iter(torch.utils.data.DataLoader(data, batch_sampler=todo, collate_fn=collate_fn,
                                                              num_workers=settings.num_workers,
                                                              generator=torch.Generator()))
                       for name, (_, data, collate_fn, _) in arms.items()}
        order = list(arms) if k % 2 == 0 else list(arms)[::-1]
        for name in order:
            updates, _, _, step_fn = arms[name]
            t0 = time.perf_counter()
            loss = updates(next(loaders[name]), step_fn)
            dt = time.perf_counter() - t0
            if k >= warmup:
                seconds[name].append(dt)
            losses[name].append(loss)
        samples += len(idx) if k >= warmup else 0
    out: dict[str, Any] = {"batch_size": settings.batch_size, "steps": steps}
    for name in arms:
        total = sum(seconds[name])
        out[f"{name}_samples_per_s"] = samples / total
        out[f"{name}_step_ms"] = 1e3 * statistics.median(seconds[name])
    out["speedup"] = out["new_samples_per_s"] / out["old_samples_per_s"]
    out["trajectory_max_abs_diff"] = max(abs(a - b) for a, b in zip(losses["old"], losses["new"]))
    out["last_loss_old"], out["last_loss_new"] = losses["old"][-1], losses["new"][-1]
    out["fallback_items"] = fast.fallbacks
    return out


# ---- where a step of today's loop goes ---------------------------------------------------------------------
class _Stamps:
    """Clock readings at today's model's component boundaries, in forward (module hooks) and in backward
    (gradient hooks on the components' outputs): `marks[name]` after each step's forward and backward."""

    def __init__(self, model: Any) -> None:
        from reg2rg_lib.model.llm import base_llm

        self.marks: dict[str, float] = {}
        el, llm = model.embedding_layer, base_llm(model.lang_model)
        self.handles = []
        for module, name in ((el.perceiver, "perceiver start"), (el.mask_encoder, "mask start"),
                             (llm.lm_head, "head start")):
            if module is not None:
                self.handles.append(module.register_forward_pre_hook(self._at(name)))
        for module, name, grad in ((el.fc, "fc end", None), (el.mask_fc, "mask_fc end", None),
                                   (llm.lm_head, "head end", "grad logits")):
            if module is not None:
                self.handles.append(module.register_forward_hook(self._at(name, grad)))
        self.handles.append(llm.model.register_forward_pre_hook(self._body_in, with_kwargs=True))
        self.handles.append(llm.model.register_forward_hook(self._body_out))

    def _mark(self, name: str) -> None:
        self.marks[name] = time.perf_counter()

    def _on_grad(self, tensor: Any, name: str) -> None:
        if isinstance(tensor, torch.Tensor) and tensor.requires_grad:
            tensor.register_hook(lambda g: self._mark(name))

    def _at(self, name: str, grad: str | None = None):
        def hook(module, args, out=None):
            self._mark(name)
            if grad:
                self._on_grad(out, grad)
        return hook

    def _body_in(self, module, args, kwargs):
        self._mark("body start")
        self._on_grad(kwargs.get("inputs_embeds"), "grad embeds")

    def _body_out(self, module, args, out):
        self._mark("body end")
        self._on_grad(out.last_hidden_state, "grad hidden")

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _breakdown_step(
    setup: DemoSetup, model: Any, opt: Any, idx: list[int], stamps: _Stamps
) -> dict[str, float]:
    """Seconds of each part of one plain step of today's path on the batch `idx`."""
    from reg2rg_lib.samples.collate import Collator, model_inputs

    ds, settings, m, el = setup.dataset, setup.settings, stamps.marks, model.embedding_layer
    params = [p for p in model.parameters() if p.requires_grad]
    m.clear()
    t0 = time.perf_counter()
    items = [ds[i] for i in idx]
    t1 = time.perf_counter()
    batch = Collator(ds.tokenizer.pad_token_id)(items)
    t2 = time.perf_counter()
    loss = setup.old_step(model, batch)
    t3 = time.perf_counter()
    loss.backward()
    t4 = time.perf_counter()
    torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm or float("inf"))
    t5 = time.perf_counter()
    opt.step()
    opt.zero_grad(set_to_none=True)
    t6 = time.perf_counter()
    perceiver = m["fc end"] - m["perceiver start"] if "fc end" in m else 0.0
    mask = m["mask_fc end"] - m["mask start"] if "mask start" in m else 0.0
    row = {
        "data: dataset __getitem__ (tokenise, name positions, tensors)": t1 - t0,
        "data: collate": t2 - t1,
        "fwd: Perceiver + fc": perceiver,
        "fwd: mask encoder + mask_fc": mask,
        "fwd: splice (embedding, structure rows, masked_scatter)": m["body start"] - t2 - perceiver - mask,
        "fwd: LLM decoder (padding mask)": m["body end"] - m["body start"],
        "fwd: LLM output layer (every position)": m["head end"] - m["head start"],
        "fwd: loss (cross-entropy, every position)": t3 - m["head end"],
        "bwd: loss + output layer": m["grad hidden"] - t3,
        "bwd: LLM decoder": m["grad embeds"] - m["grad hidden"],
        "bwd: splice + Perceiver + mask encoder": t4 - m["grad embeds"],
        "clip_grad_norm": t5 - t4,
        "AdamW step + zero_grad": t6 - t5,
    }
    inputs = model_inputs(batch)  # the visual encoders alone, to split their backward
    ta = time.perf_counter()
    if el.mask_encoder is not None:
        el.mask_fc(el.mask_encoder(inputs["region_masks"])).sum().backward()
    tb = time.perf_counter()
    if el.perceiver is not None:
        el.fc(el.perceiver(torch.cat([inputs[k] for k in ("global_feats", "region_feats") if k in inputs])))\
            .sum().backward()
    tc = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    row["iso: mask encoder fwd+bwd"] = tb - ta
    row["iso: Perceiver fwd+bwd"] = tc - tb
    return row


def old_breakdown(setup: DemoSetup, steps: int, warmup: int = 3) -> dict[str, float]:
    """Median ms per step of each part of today's step (a plain loop, without accelerate): data, forward and
    backward by component, clipping and the AdamW step; `iso ...`: the two visual encoders' forward + backward
    alone (to split the visual backward)."""
    model = copy.deepcopy(setup.model).train()
    settings = setup.settings
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.lr,
                            weight_decay=settings.weight_decay)
    stamps = _Stamps(model)
    parts: dict[str, list[float]] = defaultdict(list)
    try:
        for k, (epoch, idx) in enumerate(_batches(len(setup.dataset), settings.seed, settings.batch_size,
                                                  warmup + steps)):
            setup.dataset.set_epoch(epoch)
            row = _breakdown_step(setup, model, opt, idx, stamps)
            if k >= warmup:
                for key, value in row.items():
                    parts[key].append(value)
    finally:
        stamps.remove()
    return {key: 1e3 * statistics.median(values) for key, values in parts.items()}


# ---- the command -------------------------------------------------------------------------------------------
def train_demo(profile_name: str = "demo", work: str | None = None, batch_sizes: list[int] | None = None,
               steps: int = 30, warmup: int = 2, check: int = 3, threads: int | None = None,
               breakdown: bool = False, changes: dict[str, Any] | None = None,
               roofline: bool = False) -> dict[str, Any]:
    """The figures `reg2rg bench train-demo` prints (see the module docstring)."""
    profile = load_profile(profile_name)
    paths = demo_inputs(profile, work)
    threads = threads if threads is not None else profile.train.threads
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        sizes = batch_sizes or [profile.train.batch_size]
        figures: dict[str, Any] = {"profile": profile.name, "inputs": str(paths.root), "threads":
                                   torch.get_num_threads(), "cpu_model": cpu_model()}
        figures["model_changes"] = dict(changes or {})
        rows = []
        load = [os.getloadavg()[0]]
        for k, size in enumerate(sizes):
            setup = build_setup(profile, paths, size, changes)
            if k == 0:
                figures["rereference"] = setup.model.config.rereference
            if k == 0:
                figures["fast_setup_s"] = setup.fast_setup_s
                plan = [b for _, b in _batches(len(setup.dataset), setup.settings.seed, size, check)]
                setup.dataset.set_epoch(0)
                figures.update(loss_check(setup, plan))
                if breakdown:
                    figures["breakdown_ms"] = old_breakdown(setup, steps)
            rows.append(time_arms(setup, steps, warmup))
            if roofline:
                plan = [b for _, b in _batches(len(setup.dataset), setup.settings.seed, size, check)]
                setup.dataset.set_epoch(0)
                rows[-1]["work"] = work_per_sample(setup, plan)
        load.append(os.getloadavg()[0])
        figures["rows"] = rows
        for row in rows:
            figures[f"speedup_at_batch_{row['batch_size']}"] = round(row["speedup"], 3)
        best = max(rows, key=lambda r: r["new_samples_per_s"])
        base = next((r for r in rows if r["batch_size"] == profile.train.batch_size), rows[0])
        figures["best_batch_size"] = best["batch_size"]
        figures["today_batch_size"] = base["batch_size"]  # the profile's: today's recipe
        figures["speedup_best_vs_today"] = best["new_samples_per_s"] / base["old_samples_per_s"]
        figures["trajectory_max_abs_diff"] = max(r["trajectory_max_abs_diff"] for r in rows)
        if roofline:
            _add_roofline(rows)
        figures["load_avg_1min"] = [round(x, 2) for x in load]
        figures.update({k: v for k, v in machine().items() if k not in figures})
        return figures
    finally:
        torch.set_num_threads(before)


def _add_roofline(rows: list[dict[str, Any]]) -> None:
    """Each row's `roofline` figures against one matrix-product peak measured now, on the same threads."""
    from reg2rg_lib.bench.roofline import matmul_peak
    from reg2rg_lib.bench.roofline import roofline as bound

    peak = matmul_peak()
    for row in rows:
        work = row.pop("work")
        rates = {"old": row["old_samples_per_s"], "new": row["new_samples_per_s"]}
        row["roofline"] = bound(work["flops"], rates, peak)
        row["roofline"]["attention_share"] = work["attention_share"]


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo, as `lscpu` prints it), else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _train_demo(args: argparse.Namespace) -> int:
    changes = parse_assignments(args.set)
    figures = train_demo(args.profile, args.work, args.batch_size, args.steps, args.warmup, args.check,
                         args.threads, args.breakdown, changes, args.roofline)
    if args.json:
        return report(figures, True)
    rows, parts = figures.pop("rows"), figures.pop("breakdown_ms", None)
    if parts:
        print(f"today's step at batch {rows[0]['batch_size']} (median ms):")
        width = max(map(len, parts))
        for key, value in parts.items():
            print(f"  {key:<{width}}  {value:8.2f}")
        print(
            f"  {'sum (without iso)':<{width}}  "
            f"{sum(v for k, v in parts.items() if not k.startswith('iso')):8.2f}"
        )
    print(f"{'batch':>5}  {'today samples/s':>15}  {'fast samples/s':>14}  {'speedup':>7}  "
          f"{'today ms/step':>13}  {'fast ms/step':>12}  {'loss drift':>10}")
    for r in rows:
        print(f"{r['batch_size']:>5}  {r['old_samples_per_s']:>15.1f}  {r['new_samples_per_s']:>14.1f}  "
              f"{r['speedup']:>7.2f}  {r['old_step_ms']:>13.1f}  {r['new_step_ms']:>12.1f}  "
              f"{r['trajectory_max_abs_diff']:>10.2e}")
    for r in rows:
        if "roofline" in r:
            f = r["roofline"]
            print(f"batch {r['batch_size']}: today's step {f['gflop_per_sample']:.2f} GFLOP a sample "
                  f"(attention {f['attention_share']:.0%}); done at {f['old_gflops']:.1f} GFLOP/s today, "
                  f"{f['new_gflops']:.1f} by the fast path = {f['old_share_of_peak']:.0%} / "
                  f"{f['new_share_of_peak']:.0%} of the {f['matmul_peak_gflops']:.0f} GFLOP/s matrix-product "
                  f"peak; at that peak {f['bound_vs_today']:.1f}x today's samples/s; 3x would take "
                  f"{f['three_x_share_of_peak']:.0%} of it")
    return report(figures, False)
