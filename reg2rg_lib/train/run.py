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

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from reg2rg_lib.errors import KitError
from reg2rg_lib.io import write_json_atomic
from reg2rg_lib.train.loop import TrainResult, TrainSettings, fit, make_accelerator, seed_everything


def weighted_lm_loss(logits: torch.Tensor, labels: torch.Tensor, name_mask: torch.Tensor,
                     name_weight: float) -> torch.Tensor:
    """Next-token cross-entropy with the organ-name tokens weighted by `name_weight`, normalised by the number
    of target tokens (so weight 1 is exactly the LM loss the model returns).

    On the CPU profiles a tiny LLM trained from scratch must learn to look up region i's visual tokens when it
    writes "The region i is"; those few tokens carry most of what RRA teaches, and weighing them up makes the
    look-up emerge within the demo's step budget. The paper's recipe is weight 1.
    """
    logits = logits[:, :-1].float()  # (B, L-1, V): position t predicts token t+1
    target = labels[:, 1:].to(logits.device)  # (B, L-1)
    weight = 1.0 + (name_weight - 1.0) * name_mask[:, 1:].to(logits.device).float()  # (B, L-1)
    valid = target != -100
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                           ignore_index=-100, reduction="none").view_as(target)
    return (ce * weight * valid).sum() / valid.sum().clamp(min=1)


# ---- Reg2RG: the profile's model on the prep cache (`reg2rg train`, notebooks 03 and 05) ------------------------
def run_inputs(run_dir: str | os.PathLike[str]) -> Any:
    """The profile output folder a run folder belongs to: OUT for OUT/runs/<name>, else the run folder itself
    (then its data/, cache/ and tokenizer/ live inside it)."""
    from reg2rg_lib.paths import RunPaths

    run_dir = Path(run_dir).expanduser().resolve()
    return RunPaths(run_dir.parent.parent if run_dir.parent.name == "runs" else run_dir)


def model_config(profile: Any, changes: Mapping[str, Any] | None = None, llm_arch: str | None = None) -> Any:
    """The profile's model config (preset at the profile's image size, LLM `model.llm_arch` when set), with
    ablation `changes` and an LLM arch (`llm_arch` argument first)."""
    from reg2rg_lib.model import Reg2RGConfig

    overrides = {"llm_path": profile.model.llm_path} if profile.model.get("llm_path") else {}
    cfg = Reg2RGConfig.preset(profile.model.preset, image_size=profile.data.image_size, **overrides)
    llm_arch = llm_arch or profile.model.get("llm_arch")  # the profile may swap the preset's LLM size
    if llm_arch:
        cfg = cfg.with_llm(llm_arch)
    return cfg.replace(**dict(changes)) if changes else cfg


def train_run(
    profile: Any,
    run_dir: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    tokenizer_dir: str | os.PathLike[str] | None = None,
    max_steps: int | None = None,
    save_every: int | None = None,
    resume: bool = False,
    model_changes: Mapping[str, Any] | None = None,
    llm_arch: str | None = None,
    feature_cache: bool | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train the profile's Reg2RG on the prep cache's train split into `run_dir` (checkpoints, log, summary).

    `cache_dir` / `tokenizer_dir` default to the profile folder's `cache/` and `tokenizer/` (`run_inputs`); the
    smoke profile builds them when missing. `model_changes` are config fields for ablations (`{"rra": False}`),
    `llm_arch` swaps the LLM size. `feature_cache` (default: on when the ViT is frozen) runs the frozen ViT once
    per case instead of at every step.
    """
    from reg2rg_lib.data.prep import load_cache
    from reg2rg_lib.model import Reg2RG, load_tokenizer
    from reg2rg_lib.profiles import load_profile
    from reg2rg_lib.train.collate import Collator, model_inputs
    from reg2rg_lib.train.dataset import ReportDataset

    profile = load_profile(profile)
    settings = TrainSettings.from_profile(profile.train, max_steps=max_steps, save_every=save_every)
    acc = make_accelerator(settings)
    paths = run_inputs(run_dir)
    cache_dir = Path(cache_dir) if cache_dir else paths.cache
    tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir else paths.tokenizer
    with acc.main_process_first():  # rank 0 builds what is missing, the others then read it
        if acc.is_main_process:
            ensure_inputs(profile, paths, cache_dir, tokenizer_dir, log=log)
        cache = load_cache(cache_dir)
        llm_path = model_config(profile).llm_path
        tokenizer = load_tokenizer(llm_path or tokenizer_dir)  # the paper preset: the LLM's own tokenizer

    cfg = model_config(profile, model_changes, llm_arch)
    cfg = cfg.replace(gradient_checkpointing=settings.gradient_checkpointing)
    seed_everything(settings.seed)
    model = Reg2RG(cfg, tokenizer)  # same seed on every rank: identical initial weights
    if feature_cache is None:
        feature_cache = profile.train.get("feature_cache")
    has_vit = model.embedding_layer.vision_encoder is not None
    use_features = has_vit and (cfg.freeze_vision if feature_cache is None else bool(feature_cache))
    features = None
    if use_features:
        from reg2rg_lib.train.features import feature_cache_for

        names = [r.name for r in cache.cases("train")]
        model.to(acc.device)
        dtype = torch.bfloat16 if settings.precision == "bf16" else torch.float32
        start = time.perf_counter()
        with acc.main_process_first():
            features = feature_cache_for(model, cache, names, progress=progress and acc.is_main_process,
                                         dtype=dtype)
        if acc.is_main_process:
            log(f"[train] frozen-ViT features of {len(names)} cases in {features.folder} "
                f"({features.computed} computed in {time.perf_counter() - start:.1f} s, the rest reused)")
    dataset = ReportDataset(cache, "train", tokenizer, cfg, features=features, shuffle_regions=True,
                            seed=settings.seed, region_dropout=settings.region_dropout)
    if acc.is_main_process:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        write_json_atomic(Path(run_dir) / "run_config.json", {
            "profile": profile.name, "cache": str(cache_dir), "tokenizer": str(tokenizer_dir),
            "train_cases": len(dataset), "feature_cache": features.key if features else None,
            "settings": asdict(settings), "model": cfg.to_dict(),
        })
        log(f"[train] {profile.name}: {len(dataset)} train cases, model {cfg.extra.get('preset')} "
            f"(LLM {cfg.llm_name}), ViT features {'cached' if features else 'recomputed every step'}")

    def step_fn(m: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        if settings.region_name_weight == 1.0 or "name_mask" not in batch:
            return m(**model_inputs(batch)).loss
        inputs = model_inputs(batch)
        labels = inputs.pop("labels")
        return weighted_lm_loss(m(**inputs).logits, labels, batch["name_mask"], settings.region_name_weight)

    threads_before = torch.get_num_threads()
    if settings.threads:
        torch.set_num_threads(int(settings.threads))
    try:
        return fit(model, dataset, Collator(tokenizer.pad_token_id), step_fn, settings, run_dir, resume=resume,
                   export=lambda m, folder: m.save_pretrained(folder), accelerator=acc, progress=progress, log=log)
    finally:
        torch.set_num_threads(threads_before)


def ensure_inputs(profile: Any, paths: Any, cache_dir: Path, tokenizer_dir: Path,
                  log: Callable[[str], None] = print) -> None:
    """Make sure the prep cache and (for the CPU presets) the tokenizer exist.

    A missing tokenizer is trained on the train split's region paragraphs and saved (`build_tokenizer`; the
    paper preset uses its LLM's own tokenizer instead). A missing prep cache is an error naming what to run,
    except for the smoke profile, which builds its benchmark and cache, so that `reg2rg train --profile smoke`
    (and the torchrun check) works from nothing."""
    from reg2rg_lib.data.prep import load_cache

    if not (cache_dir / "manifest.json").is_file():
        if profile.name != "smoke":
            raise KitError(f"missing prep cache {cache_dir}: run notebook 01 (or `reg2rg synth` and `reg2rg "
                           "prepare`) first, or pass --cache")
        from reg2rg_lib.data.prep import PrepParams, prepare
        from reg2rg_lib.data.synth.build import synthesize

        log(f"[train] smoke profile: building the benchmark and prep cache under {paths.root}")
        d = profile.data
        if not (paths.data / "manifest.json").is_file():
            synthesize(paths.data, int(d.cases_train), int(d.cases_test), seed=int(d.synth_seed),
                       shape=tuple(d.synth_shape), workers=int(d.workers), progress=False)
        prepare(paths.data, cache_dir, PrepParams.from_profile(profile), workers=int(d.workers), progress=False)
    if not model_config(profile).llm_path and not tokenizer_dir.is_dir():
        log(f"[train] training the tokenizer on the train reports -> {tokenizer_dir}")
        build_tokenizer(load_cache(cache_dir), tokenizer_dir)


def build_tokenizer(cache: Any, out_dir: str | os.PathLike[str], vocab_size: int = 1024) -> Any:
    """The CPU presets' byte-level BPE trained on the train split's region paragraphs, saved to `out_dir`
    (the same texts and size as `model.tokenizer.tokenizer_for_run`, which notebook 02 uses before it exists)."""
    from reg2rg_lib.model import train_tokenizer

    texts = [p for rec in cache.cases("train") for p in rec.reports.values()]
    return train_tokenizer(texts, out_dir, vocab_size=vocab_size)
