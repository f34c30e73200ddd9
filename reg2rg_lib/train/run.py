"""The Reg2RG training run: the profile's model on the prep cache, handed to the generic loop
(`reg2rg train`).

`train_run` only trains: it reads the prep cache and, for the CPU presets, the tokenizer that its caller made
sure of (`samples.inputs.ensure_inputs`; a missing one is a one-line error saying what builds it), builds the
model with the profile's seed, feeds it cached frozen-ViT features when `use_feature_cache` says so, records
`run_config.json` and calls `loop.fit` with `reg2rg_step`, the LM loss with the organ-name tokens optionally
weighted up (`weighted_lm_loss`).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from reg2rg_lib.data.prep import PrepCache, load_cache
from reg2rg_lib.errors import KitError
from reg2rg_lib.io import one_writer, write_json_atomic
from reg2rg_lib.model import Reg2RG, Reg2RGConfig, load_tokenizer
from reg2rg_lib.model.reg2rg import label_head_loss
from reg2rg_lib.paths import RunFolder, RunPaths
from reg2rg_lib.profiles import Profile, load_profile
from reg2rg_lib.samples.collate import Collator, model_inputs
from reg2rg_lib.samples.dataset import ReportDataset
from reg2rg_lib.samples.features import (
    FeatureCache,
    feature_cache_for,
    set_train_statistics,
    use_feature_cache,
)
from reg2rg_lib.samples.inputs import check_inputs
from reg2rg_lib.samples.reference import reference_inputs
from reg2rg_lib.train.checkpoints import check_resume_config
from reg2rg_lib.train.fast import FastTrainData, fast_step_fn, unsupported_reason
from reg2rg_lib.train.loop import TrainResult, TrainSettings, fit, make_accelerator, seed_everything

logger = logging.getLogger(__name__)


def weighted_lm_loss(logits: torch.Tensor, labels: torch.Tensor, name_mask: torch.Tensor | None,
                     name_weight: float) -> torch.Tensor:
    """Next-token cross-entropy with the organ-name tokens weighted by `name_weight`, normalised by the number
    of target tokens (so weight 1 is exactly the LM loss the model returns).

    On the CPU profiles a tiny LLM trained from scratch must learn to look up region i's visual tokens when it
    writes "The region i is"; those few tokens carry most of what RRA teaches, and weighing them up makes the
    look-up emerge within the demo's step budget. The paper's recipe is weight 1.
    """
    logits = logits[:, :-1].float()  # (B, L-1, V): position t predicts token t+1
    target = labels[:, 1:].to(logits.device)  # (B, L-1)
    weight = torch.ones_like(target, dtype=torch.float32)  # (B, L-1)
    if name_mask is not None and name_weight != 1.0:
        names = name_mask[:, 1:].to(logits.device)
        weight = torch.where(names, torch.full_like(weight, name_weight), weight)
    valid = target != -100
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                           ignore_index=-100, reduction="none").view_as(target)
    return (ce * weight * valid).sum() / valid.sum().clamp(min=1)


def region_label_loss(hidden: torch.Tensor, batch: dict[str, Any], head: torch.nn.Module) -> torch.Tensor:
    """The region label head's loss: binary cross-entropy of `head` on the LLM's last hidden states `hidden`
    (B, L, D) where each region's paragraph begins (`samples.dataset.region_label_targets`), over the labels
    that region reports, averaged.

    Not the paper's: an auxiliary target that asks the LLM's state at the place a paragraph's first word is
    chosen to hold the region's findings, so that the look-up of region i's tokens is trained on every sample
    and not only where the text writes a (rare) finding."""
    rows, pos = batch["label_rows"].to(hidden.device), batch["label_positions"].to(hidden.device)
    return label_head_loss(head, hidden[rows, pos], batch["label_targets"], batch["label_mask"])


def reg2rg_step(model: torch.nn.Module, batch: dict[str, Any], name_weight: float = 1.0,
                label_weight: float = 0.0) -> torch.Tensor:
    """The loss of one collated micro-batch: the model's LM loss, or with the organ-name tokens weighted by
    `name_weight` (`weighted_lm_loss`) when the batch marks them, plus `label_weight` x `region_label_loss`
    when the batch has region label targets."""
    names = batch.get("name_mask") if name_weight != 1.0 else None
    if label_weight and "label_positions" in batch:
        if not hasattr(model, "embed_inputs"):  # a DDP-style wrapper: its forward and sync would be bypassed
            raise KitError("train.label_weight trains in one process for now (the label head reads the LLM's "
                           "states outside a distributed wrapper's forward)")
        inputs = model_inputs(batch)
        labels, ids, mask = inputs.pop("labels"), inputs.pop("input_ids"), inputs.pop("attention_mask", None)
        out = model.lang_model(inputs_embeds=model.embed_inputs(ids, **inputs), attention_mask=mask,
                               output_hidden_states=True, use_cache=False)
        lm = weighted_lm_loss(out.logits, labels, names, name_weight)
        return lm + label_weight * region_label_loss(out.hidden_states[-1], batch,
                                                     model.embedding_layer.label_head)
    if names is None:
        return model(**model_inputs(batch)).loss
    inputs = model_inputs(batch)
    labels = inputs.pop("labels")
    return weighted_lm_loss(model(**inputs).logits, labels, names, name_weight)


@one_writer("run_dir", "train")  # a second writer into the run folder is refused at once
def train_run(
    profile: str | Profile,
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
    on_checkpoint: Callable[[int, Path], None] | None = None,
) -> TrainResult:
    """Train the profile's Reg2RG on the prep cache's train split into `run_dir` (checkpoints, log, summary).

    `cache_dir` / `tokenizer_dir` default to the profile folder's `cache/` and `tokenizer/`
    (`RunPaths.of_run`); they must exist (`samples.inputs.ensure_inputs` builds them; `check_inputs` names
    what is missing). `model_changes` are config fields for
    ablations (`{"rra": False}`), `llm_arch` swaps the LLM size. `feature_cache` (default: the profile's,
    `use_feature_cache`) runs the frozen ViT once per case instead of at every step.
    `on_checkpoint(step, folder)`: see `loop.fit` (notebook 03 scores each checkpoint's validation reports
    with it, `experiments.curves.checkpoint_scorer`).
    """
    profile = load_profile(profile)
    settings = TrainSettings.from_profile(profile.train, max_steps=max_steps, save_every=save_every)
    acc = make_accelerator(settings)
    if settings.label_weight and acc.num_processes > 1:  # before any input is read or weight is built
        raise KitError(f"profile {profile.name}: train.label_weight trains in one process for now (the label "
                       "head reads the LLM's states outside the distributed wrapper's forward); run "
                       "without torchrun/accelerate, or add --set train.label_weight=0")
    paths = RunPaths.of_run(run_dir)
    cache_dir = Path(cache_dir) if cache_dir else paths.cache
    tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir else paths.tokenizer
    check_inputs(profile, cache_dir, tokenizer_dir)
    cache = load_cache(cache_dir)
    tokenizer = load_tokenizer(profile.model.llm_path or tokenizer_dir)  # paper preset: the LLM's tokenizer

    cfg = _model_config(profile, settings, paths, model_changes, llm_arch)
    if resume:  # another model config (an ablation switch, the LLM size, the image size) must not resume here
        check_resume_config(RunFolder(run_dir).checkpoints, cfg.to_dict())
    setting = profile.train.feature_cache if feature_cache is None else feature_cache
    model, features = _model_and_features(cfg, tokenizer, cache, acc, settings, setting, progress)
    dataset = ReportDataset(cache, "train", tokenizer, cfg, features=features, shuffle_regions=True,
                            **settings.sampling())
    if settings.label_weight and not any(r.labels for r in dataset.records):
        raise KitError(f"{cache_dir}: train.label_weight needs the dataset's label table "
                       "(<split>_predicted_labels.csv), and no train case has labels")
    if profile.generate.image_contrast:  # saved with every checkpoint's model (samples.reference)
        model.reference_inputs = reference_inputs(dataset.case_tensors(i) for i in range(len(dataset)))
    if acc.is_main_process:
        _write_run_config(
            Path(run_dir), profile, cache_dir, tokenizer_dir, len(dataset), features, settings, cfg
        )
    threads_before = torch.get_num_threads()
    if settings.threads:
        torch.set_num_threads(int(settings.threads))
    data, collate, step, settings = _training_path(model, dataset, tokenizer, settings, acc)
    try:
        return fit(model, data, collate, step, settings, run_dir,
                   resume=resume, export=lambda m, folder: m.save_pretrained(folder), accelerator=acc,
                   progress=progress, on_checkpoint=on_checkpoint)
    finally:
        torch.set_num_threads(threads_before)


def _model_config(profile: Profile, settings: TrainSettings, paths: RunPaths,
                  model_changes: Mapping[str, Any] | None, llm_arch: str | None) -> Reg2RGConfig:
    """The config `train_run` builds its model from (a one-line error when its pretrained ViT is missing)."""
    cfg = Reg2RGConfig.from_profile(profile, model_changes, paths, llm_arch=llm_arch)
    if cfg.vision_checkpoint and not Path(cfg.vision_checkpoint).is_file():
        raise KitError(
            f"{cfg.vision_checkpoint}: no pretrained vision encoder; run `reg2rg pretrain-vision --profile "
            f"{profile.name} --out {Path(cfg.vision_checkpoint).parent}` (or notebook 02) first"
        )
    if settings.label_weight < 0:
        raise KitError(f"train.label_weight must be >= 0, got {settings.label_weight}")
    return cfg.replace(gradient_checkpointing=settings.gradient_checkpointing)


def train_features(profile: str | Profile, run_dir: str | os.PathLike[str],
                   progress: bool = True) -> FeatureCache | None:
    """The frozen ViT's train-split features exactly as `train_run(profile, run_dir)` computes them (its seed,
    its model, this process's threads), computed now where missing; None when the profile does not cache them.

    `experiments.beside` calls it before it starts a second process that reads the same features, so that the
    two never compute them at once: a process on another thread count can round them differently, and the
    last writer would decide which bits `full` trains on.
    """
    profile = load_profile(profile)
    settings = TrainSettings.from_profile(profile.train)
    paths = RunPaths.of_run(run_dir)
    check_inputs(profile, paths.cache, paths.tokenizer)
    tokenizer = load_tokenizer(profile.model.llm_path or paths.tokenizer)
    cfg = _model_config(profile, settings, paths, None, None)
    return _model_and_features(cfg, tokenizer, load_cache(paths.cache), make_accelerator(settings), settings,
                               profile.train.feature_cache, progress)[1]


def _model_and_features(cfg: Reg2RGConfig, tokenizer: Any, cache: PrepCache, acc: Accelerator,
                        settings: TrainSettings, feature_cache: bool | None,
                        progress: bool) -> tuple[Reg2RG, FeatureCache | None]:
    """The seeded model (the same seed on every rank: identical initial weights) and, where `feature_cache`
    (`use_feature_cache`) says so, its frozen ViT's train features: one code path for `train_run` and
    `train_features`, so that both compute the same bits."""
    seed_everything(settings.seed)
    model = Reg2RG(cfg, tokenizer)
    use = use_feature_cache(model, feature_cache)
    wanted = use or cfg.vision_standardize
    features = _train_features(model, cache, acc, settings, progress) if wanted else None
    # vision_standardize: the train split's statistics, saved with the model (a frozen ViT: fixed)
    stats = set_train_statistics(model, features, [r.name for r in cache.cases("train")])
    if stats is not None:
        logger.info("[train] vision_standardize: frozen-ViT features standardised with the statistics of "
                    + ", ".join(f"{n:,} {k} tokens" for k, (_, _, n) in stats.items()))
    return model, (features if use else None)


def _training_path(model: Reg2RG, dataset: ReportDataset, tokenizer: Any, settings: TrainSettings,
                   acc: Accelerator) -> tuple[Any, Any, Any, TrainSettings]:
    """(data, collate, step, settings) for `fit`: the fast path (`train.fast`, same loss up to float rounding,
    ~1.6x the samples/s; `reg2rg bench train-demo`) where `fast.unsupported_reason` allows, else today's
    loop."""
    why = unsupported_reason(model, dataset) if settings.fast_path else "train.fast_path is off"
    if why is None and acc.num_processes > 1:
        why = "it runs in one process"
    if why is None:
        data = FastTrainData(model, dataset)
        logger.info("[train] the fast training path (train.fast)")
        return (data, data.collate, fast_step_fn(settings.region_name_weight, settings.label_weight),
                replace(settings, fused_optimizer=True))
    logger.info(f"[train] the plain training loop ({why})")
    step = functools.partial(reg2rg_step, name_weight=settings.region_name_weight,
                             label_weight=settings.label_weight)
    return dataset, Collator(tokenizer.pad_token_id), step, settings


def _train_features(model: Reg2RG, cache: PrepCache, acc: Accelerator, settings: TrainSettings,
                    progress: bool) -> FeatureCache:
    """The frozen ViT's features of the train cases (rank 0 computes what is missing, the others then
    read)."""
    names = [r.name for r in cache.cases("train")]
    model.to(acc.device)
    dtype = torch.bfloat16 if settings.precision == "bf16" else torch.float32
    start = time.perf_counter()
    with acc.main_process_first():
        features = feature_cache_for(
            model, cache, names, progress=progress and acc.is_main_process, dtype=dtype
        )
    if acc.is_main_process:
        logger.info(f"[train] frozen-ViT features of {len(names)} cases in {features.folder} "
                    f"({features.computed} computed in {time.perf_counter() - start:.1f} s, the rest reused)")
    return features


def _write_run_config(run_dir: Path, profile: Profile, cache_dir: Path, tokenizer_dir: Path, n_cases: int,
                      features: FeatureCache | None, settings: TrainSettings, cfg: Reg2RGConfig) -> None:
    """`run_dir/run_config.json`: the inputs, settings and model config a run was trained with."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(RunFolder(run_dir).run_config, {
        "profile": profile.name, "cache": str(cache_dir), "tokenizer": str(tokenizer_dir),
        "train_cases": n_cases, "feature_cache": features.key if features else None,
        "settings": asdict(settings), "model": cfg.to_dict(),
    })
    logger.info(f"[train] {profile.name}: {n_cases} train cases, model {cfg.extra.get('preset')} "
                f"(LLM {cfg.llm_name}), ViT features {'cached' if features else 'recomputed every step'}")
