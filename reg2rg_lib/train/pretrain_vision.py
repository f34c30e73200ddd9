"""Vision pretraining: the CPU stand-in for RadFM's pretrained ViT3D (`reg2rg pretrain-vision`), and whether a
profile's runs need it.

The paper freezes RadFM's ViT3D, pretrained on millions of radiology images; the CPU presets' ViT is far
smaller and, without this step, random. Here the preset's ViT3D is trained on the prep cache's **train split
only** and then frozen as in the paper. Objectives (choose by the validation probe in `pretrain.json`, never
on test):

- `findings`: multi-label abnormality classification of each region's texture crop (labels of the region's own
  paragraph, read by the labeler the caller passes in) and of the global image (labels of the whole report);
- `findings+organ`: the same plus which organ a crop shows (11 classes: 10 regions + "global");
- `simmim`: masked-patch reconstruction (SimMIM-style: 60% of the patch embeddings replaced by a learned mask
  token, the masked patches' voxels predicted by a linear decoder; no labels used).

Every objective is measured the same way: logistic-regression probes on the frozen encoder's mean-pooled
tokens, fit on train crops and scored on validation crops (micro-F1 over the abnormality labels that occur,
organ accuracy), for the random initialisation and for the pretrained encoder. The encoder is written as RadFM
writes its ViT (`RadFM_vit3d.pth`: a plain state dict with the kit's ViT3D key names), so the model loads it
through the same `vision_checkpoint` path as RadFM's real weights.

`ensure_pretrained_vision` (notebook 02, the ablation runner) pretrains the profile folder's ViT when a run
loads it and no matching one is there, and reuses it otherwise; `probe_table` shows `pretrain.json`'s probes.

One file over 400 lines: the reuse check trusts the `pretrain.json` this file writes (`VISION_FIELDS`, the
objective), so the record and the check that reads it back stay together.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from reg2rg_lib.data.prep import load_cache
from reg2rg_lib.errors import KitError
from reg2rg_lib.io import atomic_path, write_json_atomic
from reg2rg_lib.model import Reg2RGConfig
from reg2rg_lib.model.vit3d import ViT3D
from reg2rg_lib.paths import RunPaths
from reg2rg_lib.profiles import PretrainSection, Profile, load_profile
from reg2rg_lib.regions import LABELS, REGIONS

logger = logging.getLogger(__name__)

OBJECTIVES: tuple[str, ...] = ("findings", "findings+organ", "simmim")
CHECKPOINT_NAME = "RadFM_vit3d.pth"  # RadFM's file name for its ViT3D weights
REPORT_NAME = "pretrain.json"
GLOBAL_CLASS = len(REGIONS)  # organ class of a global (whole-CT) image
MASK_RATIO = 0.6  # simmim: share of patches replaced by the mask token
#: The config fields of the encoder that `pretrain.json` records (`vision_config`)
VISION_FIELDS = ("image_size", "in_channels", "vit_patch", "vit_dim", "vit_depth", "vit_heads",
                 "vit_dim_head", "vit_mlp", "vit_pos_rows", "seed")

#: texts -> (N, len(LABELS)) 0/1 array; the CLI passes the rule labeler (metrics sits above train)
TextLabeler = Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class PretrainSettings:
    """How the ViT is pretrained (`from_profile` reads the profile's `pretrain` section)."""

    objective: str = "findings"
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0
    weight_decay: float = 0.05

    @classmethod
    def from_profile(cls, section: PretrainSection, **overrides: Any) -> PretrainSettings:
        fields = {**asdict(section), **{k: v for k, v in overrides.items() if v is not None}}
        settings = cls(**fields)
        if settings.objective not in OBJECTIVES:
            raise KitError(f"unknown pretraining objective {settings.objective!r}; expected one of "
                           f"{', '.join(OBJECTIVES)}")
        return settings


@dataclass
class CropSet:
    """Images of one split: region texture crops and global images, with organ class and abnormality
    labels."""

    images: torch.Tensor  # (N, 1, H, W, D) float32, the prep cache's normalised intensities
    organ: torch.Tensor  # (N,) int64: region index, or GLOBAL_CLASS
    labels: torch.Tensor  # (N, len(LABELS)) float32 0/1

    def __len__(self) -> int:
        return len(self.organ)


def build_encoder(cfg: Reg2RGConfig) -> ViT3D:
    """A randomly initialised vision encoder of `cfg`'s sizes (the class and key names `Reg2RG` uses)."""
    torch.manual_seed(cfg.seed)
    return ViT3D(cfg.image_size, cfg.vit_patch, cfg.vit_dim, cfg.vit_depth, cfg.vit_heads, cfg.vit_dim_head,
                 cfg.vit_mlp, cfg.in_channels, cfg.vit_pos_rows)


def crop_set(cache: Any, split: str, labeler: TextLabeler) -> CropSet:
    """Every region texture crop and global image of `split`, labelled from its own text."""
    images, organ, texts = [], [], []
    for rec in tqdm(cache.cases(split), desc=f"crops ({split})", leave=False, disable=None):
        t = cache.load(rec.name)
        images.append(t["texture"].unsqueeze(1))  # (R, 1, H, W, D)
        images.append(t["image"].unsqueeze(0))  # (1, 1, H, W, D)
        organ += [REGIONS.index(r) for r in rec.regions] + [GLOBAL_CLASS]
        texts += [rec.reports[r] for r in rec.regions] + [rec.report]
    if not images:
        raise KitError(
            f"{cache.root}: no {split} cases in the prep cache; vision pretraining needs the train "
            "split (and validation for the probe)"
        )
    labels = torch.as_tensor(np.asarray(labeler(texts), dtype=np.float32))
    return CropSet(torch.cat(images).float(), torch.tensor(organ), labels)


class Pretrainer(nn.Module):
    """The encoder and the heads of every objective (only the chosen objective's heads get a loss)."""

    def __init__(self, encoder: ViT3D) -> None:
        super().__init__()
        self.encoder = encoder
        dim = encoder.dim
        patch_voxels = encoder.channels * int(np.prod(encoder.patch))
        self.findings = nn.Linear(dim, len(LABELS))
        self.organ = nn.Linear(dim, len(REGIONS) + 1)
        self.mask_token = nn.Parameter(torch.zeros(dim))
        self.decoder = nn.Linear(dim, patch_voxels)

    def tokens(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder's forward, with the patch embeddings at `mask` (B, T) replaced by the mask token."""
        enc = self.encoder
        if x.shape[1] != enc.channels:
            x = x.expand(-1, enc.channels, -1, -1, -1)
        grid = tuple(s // p for s, p in zip(x.shape[2:], enc.patch))
        emb = enc.to_patch_embedding(x)  # (B, T, dim)
        if mask is not None:
            emb = torch.where(mask[..., None], self.mask_token.to(emb.dtype), emb)
        emb = emb + enc.pos_embedding(grid, x.device).to(emb.dtype)
        return enc.transformer(emb)

    def loss(self, objective: str, x: torch.Tensor, organ: torch.Tensor, labels: torch.Tensor,
             pos_weight: torch.Tensor | None) -> torch.Tensor:
        if objective == "simmim":
            patches = self.encoder.to_patch_embedding[0](x.expand(-1, self.encoder.channels, -1, -1, -1))
            mask = torch.rand(patches.shape[:2], device=x.device) < MASK_RATIO  # (B, T)
            pred = self.decoder(self.tokens(x, mask))  # (B, T, patch_voxels)
            return F.l1_loss(pred[mask], patches[mask])
        pooled = self.tokens(x).mean(1)  # (B, dim)
        loss = F.binary_cross_entropy_with_logits(self.findings(pooled), labels, pos_weight=pos_weight)
        if objective == "findings+organ":
            loss = loss + F.cross_entropy(self.organ(pooled), organ)
        return loss


@torch.no_grad()
def pooled_features(encoder: ViT3D, images: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """(N, dim) mean-pooled tokens of the frozen encoder."""
    encoder.eval()
    out = [encoder(images[i:i + batch_size]).mean(1) for i in range(0, len(images), batch_size)]
    return torch.cat(out).numpy()


def probe(encoder: ViT3D, train: CropSet, val: CropSet) -> dict[str, Any]:
    """Logistic-regression probes on frozen pooled features: fit on train, scored on validation."""
    from sklearn.linear_model import LogisticRegression  # heavy-ish; only the probe needs it
    from sklearn.metrics import f1_score
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(pooled_features(encoder, train.images))
    xtr = scaler.transform(pooled_features(encoder, train.images))
    xva = scaler.transform(pooled_features(encoder, val.images))
    ytr, yva = train.labels.numpy().astype(int), val.labels.numpy().astype(int)
    preds, per_label = np.zeros_like(yva), {}
    for j, label in enumerate(LABELS):
        if ytr[:, j].min() == ytr[:, j].max():  # never (or always) present in train: nothing to fit
            continue
        clf = LogisticRegression(max_iter=2000, class_weight="balanced", C=0.5).fit(xtr, ytr[:, j])
        preds[:, j] = clf.predict(xva)
        if yva[:, j].any():
            per_label[label] = round(float(f1_score(yva[:, j], preds[:, j], zero_division=0)), 4)
    occurring = [j for j, label in enumerate(LABELS) if yva[:, j].any()]
    micro = (
        f1_score(yva[:, occurring], preds[:, occurring], average="micro", zero_division=0)
        if occurring
        else 0.0
    )
    organ = LogisticRegression(max_iter=2000, C=0.5).fit(xtr, train.organ.numpy())
    return {"findings_micro_f1": round(float(micro), 4), "labels_scored": len(occurring),
            "organ_accuracy": round(float((organ.predict(xva) == val.organ.numpy()).mean()), 4),
            "per_label_f1": per_label}


def _epoch(
    model: Pretrainer,
    data: CropSet,
    settings: PretrainSettings,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    pos_weight: torch.Tensor,
    gen: torch.Generator,
) -> float:
    model.train()
    order = torch.randperm(len(data), generator=gen)
    total, batches = 0.0, 0
    for i in range(0, len(order), settings.batch_size):
        idx = order[i:i + settings.batch_size]
        loss = model.loss(settings.objective, data.images[idx], data.organ[idx], data.labels[idx], pos_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        total, batches = total + loss.item(), batches + 1
    return total / max(batches, 1)


@torch.no_grad()
def head_scores(model: Pretrainer, val: CropSet) -> dict[str, float]:
    """The findings head's own validation micro-F1 (threshold 0.5, labels that occur in validation)."""
    model.eval()
    pooled = torch.cat([model.tokens(val.images[i:i + 64]).mean(1) for i in range(0, len(val), 64)])
    pred = (model.findings(pooled) > 0).float()
    y = val.labels
    occurring = y.sum(0) > 0
    tp = (pred * y)[:, occurring].sum()
    fp = (pred * (1 - y))[:, occurring].sum()
    fn = ((1 - pred) * y)[:, occurring].sum()
    organ = (model.organ(pooled).argmax(1) == val.organ).float().mean()
    return {"findings_micro_f1": round(float(2 * tp / (2 * tp + fp + fn).clamp(min=1)), 4),
            "organ_accuracy": round(float(organ), 4)}


@torch.no_grad()
def validation_score(model: Pretrainer, objective: str, val: CropSet) -> float:
    """Higher is better: the findings head's validation micro-F1, or minus the masked-patch loss for simmim
    (masks drawn from a fixed generator, so epochs are compared on the same masks)."""
    if objective != "simmim":
        return head_scores(model, val)["findings_micro_f1"]
    model.eval()
    state = torch.random.get_rng_state()
    torch.manual_seed(12345)
    try:
        losses = [
            model.loss(
                objective, val.images[i : i + 64], val.organ[i : i + 64], val.labels[i : i + 64], None
            ).item()
            for i in range(0, len(val), 64)
        ]
    finally:
        torch.random.set_rng_state(state)
    return -float(np.mean(losses))


def pretrain_encoder(cfg: Reg2RGConfig, train: CropSet, settings: PretrainSettings, progress: bool = True,
                     val: CropSet | None = None) -> tuple[Pretrainer, list[float], list[float]]:
    """Train the preset's ViT3D on `train` with `settings.objective`; returns the model with its heads (eval
    mode; `.encoder` is the ViT), the epoch losses and, with `val`, each epoch's `validation_score`. With
    `val` the returned weights are those of the epoch that scored best on validation (early stopping; never
    the test split)."""
    torch.manual_seed(settings.seed)
    model = Pretrainer(build_encoder(cfg))
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    steps = settings.epochs * -(-len(train) // settings.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=settings.lr, total_steps=max(steps, 1), pct_start=0.1
    )
    pos = train.labels.sum(0)
    pos_weight = ((len(train) - pos) / pos.clamp(min=1)).clamp(1.0, 20.0)  # rare findings weigh more
    gen = torch.Generator().manual_seed(settings.seed)
    losses, scores, best = [], [], None
    for _ in tqdm(range(settings.epochs), desc=f"pretrain ViT ({settings.objective})", disable=not progress):
        losses.append(round(_epoch(model, train, settings, opt, sched, pos_weight, gen), 5))
        if val is not None:
            scores.append(round(validation_score(model, settings.objective, val), 5))
            if best is None or scores[-1] > max(scores[:-1]):
                best = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if best is not None:
        model.load_state_dict(best)
    return model.eval(), losses, scores


def save_vision_checkpoint(encoder: ViT3D, path: str | os.PathLike[str]) -> Path:
    """Write the encoder as RadFM writes its ViT3D: a plain state dict (tensors only, loads with
    weights_only)."""
    path = Path(path)
    with atomic_path(path, suffix=".pth") as tmp:
        torch.save({k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}, tmp)
    return path


def pretrain_vision(
    cfg: Reg2RGConfig,
    cache: Any,
    out_dir: str | os.PathLike[str],
    settings: PretrainSettings,
    labeler: TextLabeler,
    threads: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Pretrain on the cache's train split, probe on validation, write OUT/RadFM_vit3d.pth +
    OUT/pretrain.json."""
    out = Path(out_dir).expanduser().resolve()
    if threads:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    train, val = crop_set(cache, "train", labeler), crop_set(cache, "validation", labeler)
    random_probe = probe(build_encoder(cfg), train, val)
    model, losses, scores = pretrain_encoder(cfg, train, settings, progress, val=val)
    encoder = model.encoder
    trained_probe = probe(encoder, train, val)
    if settings.objective != "simmim":  # the heads were trained: how well they do on validation
        trained_probe["heads"] = head_scores(model, val)
    ckpt = save_vision_checkpoint(encoder, out / CHECKPOINT_NAME)
    report = {
        "objective": settings.objective, "settings": asdict(settings),
        "vision_config": {f: getattr(cfg, f) for f in VISION_FIELDS},
        "cache": str(cache.root), "crops": {"train": len(train), "validation": len(val)},
        "epoch_loss": losses, "epoch_validation_score": scores,
        "best_epoch": int(np.argmax(scores)) + 1 if scores else None,
        "probe_validation": {"random_init": random_probe, "pretrained": trained_probe},
        "checkpoint": ckpt.name, "seconds": round(time.perf_counter() - start, 1),
    }
    write_json_atomic(out / REPORT_NAME, report)
    logger.info(
        f"[pretrain-vision] {settings.objective}: validation probe micro-F1 "
        f"{random_probe['findings_micro_f1']:.3f} (random) -> {trained_probe['findings_micro_f1']:.3f}, "
        f"organ accuracy {random_probe['organ_accuracy']:.3f} -> {trained_probe['organ_accuracy']:.3f}; -> "
        f"{ckpt}"
    )
    return report


def pretrain_for_profile(profile: Any, out_dir: str | os.PathLike[str], labeler: TextLabeler,
                         cache_dir: str | os.PathLike[str] | None = None, progress: bool = True,
                         **overrides: Any) -> dict[str, Any]:
    """`pretrain_vision` with the profile's model preset and `pretrain` section (`overrides`: objective,
    epochs, batch_size, lr, seed). The cache defaults to the profile folder's: OUT/cache for OUT/vision."""

    profile = load_profile(profile)
    out = Path(out_dir).expanduser().resolve()
    cache = load_cache(cache_dir or RunPaths(out.parent).cache)
    # start from the random initialisation
    cfg = Reg2RGConfig.from_profile(profile, {"vision_checkpoint": None})
    settings = PretrainSettings.from_profile(profile.pretrain, **overrides)
    return pretrain_vision(
        cfg, cache, out, settings, labeler, threads=profile.train.threads, progress=progress
    )


class PlannedRun(Protocol):
    """A model that will be trained (an `experiments.grid.Ablation`): its name, its model config changes and
    its LLM architecture (None: the profile's)."""

    name: str
    changes: Mapping[str, Any]
    llm_arch: str | None


@dataclass(frozen=True)
class PretrainedVision:
    """What `ensure_pretrained_vision` decided: which runs load the profile folder's pretrained ViT, what it
    did about it, and the encoder's `pretrain.json` (notebook 02 prints `message` and shows `probe_table` of
    `report`)."""

    needed_by: tuple[str, ...]  # the runs that load `checkpoint`; empty: none, nothing was pretrained
    checkpoint: Path  # OUT/vision/RadFM_vit3d.pth
    pretrained: bool  # True: pretrained by this call; False: reused, or not needed
    report: dict[str, Any] | None  # its pretrain.json; None when not needed (or written without one)
    message: str  # one line: what was pretrained or reused, or why nothing is


def ensure_pretrained_vision(profile: Profile | str, paths: RunPaths, labeler: TextLabeler,
                             runs: Sequence[PlannedRun] | None = None, *, objective: str | None = None,
                             force: bool = False, progress: bool = True) -> PretrainedVision:
    """Pretrain the profile folder's ViT (`paths.vision`, as `reg2rg pretrain-vision`) when a run needs it and
    no matching one is there; reuse it otherwise.

    A run needs it when its model config (`Reg2RGConfig.from_profile` with the run's changes) loads
    `paths.vision_checkpoint`: the profile's `model.vision_checkpoint: pretrained`, or an ablation such as
    `vit_pretrained`. `runs` are the runs that will train (notebook 02: the profile's grid; the ablation
    runner: its runs); None: the profile's own model only. An existing encoder is reused unless `force`, its
    `pretrain.json` records another ViT architecture than the profile's, or `objective` (None: whatever
    objective it was pretrained with) differs. `labeler` labels the train split's texts (the callers pass the
    rule labeler: the metrics stage sits above this one)."""
    profile = load_profile(profile)
    planned = list(runs) if runs is not None else [_OwnModel()]
    needed = tuple(r.name for r in planned if _loads(profile, paths, r))
    ckpt = paths.vision_checkpoint
    if not needed:
        message = (f"profile {profile.name!r}: model.vision_checkpoint = {profile.model.vision_checkpoint!r} "
                   "and no vit_pretrained ablation: no pretraining here (None: a random frozen ViT)")
        return PretrainedVision(needed, ckpt, False, None, message)
    why = _pretrain_reason(profile, paths, objective, force)
    if why:
        logger.info(f"[pretrain-vision] {', '.join(needed)} need the pretrained ViT ({why}): pretraining it "
                    f"-> {paths.vision}")
        pretrain_for_profile(profile, paths.vision, labeler, cache_dir=paths.cache, progress=progress,
                             objective=objective)
    report_file = paths.vision / REPORT_NAME
    report = json.loads(report_file.read_text()) if report_file.is_file() else None
    if report is None:
        message = f"ViT3D reused (no {REPORT_NAME} beside it: pretrained elsewhere) -> {ckpt}"
    else:
        message = (f"ViT3D pretrained ({report['objective']}, {report['settings']['epochs']} epochs on "
                   f"{report['crops']['train']} train crops) -> {ckpt}")
    return PretrainedVision(needed, ckpt, bool(why), report, message)


@dataclass(frozen=True)
class _OwnModel:
    """The profile's own model (no changes): what `ensure_pretrained_vision` checks without `runs`."""

    name: str = "full"
    changes: Mapping[str, Any] = field(default_factory=dict)
    llm_arch: str | None = None


def _loads(profile: Profile, paths: RunPaths, run: PlannedRun) -> bool:
    """True when `run`'s model loads the profile folder's pretrained ViT (`paths.vision_checkpoint`)."""
    cfg = Reg2RGConfig.from_profile(profile, run.changes, paths, llm_arch=run.llm_arch)
    return cfg.vision_checkpoint == str(paths.vision_checkpoint)


def _pretrain_reason(profile: Profile, paths: RunPaths, objective: str | None, force: bool) -> str | None:
    """Why the profile folder's ViT must be pretrained (again), or None when the one there serves."""
    if force:
        return "asked to pretrain again"
    if not paths.vision_checkpoint.is_file():
        return "missing"
    report_file = paths.vision / REPORT_NAME
    if not report_file.is_file():  # a checkpoint put there by hand: trust it
        return None
    report = json.loads(report_file.read_text())
    wanted = _vision_config(Reg2RGConfig.from_profile(profile, {"vision_checkpoint": None}))
    have = {k: v for k, v in report.get("vision_config", {}).items() if k != "seed"}
    if have != {k: v for k, v in wanted.items() if k != "seed"}:
        return "the one there is another ViT architecture or image size"
    if objective is not None and report.get("objective") != objective:
        return f"the one there was pretrained with {report.get('objective')!r}, not {objective!r}"
    return None


def _vision_config(cfg: Reg2RGConfig) -> dict[str, Any]:
    """The vision fields of `cfg` as `pretrain.json` records them (JSON types: tuples become lists)."""
    return json.loads(json.dumps({f: getattr(cfg, f) for f in VISION_FIELDS}))


def probe_table(report: dict[str, Any]) -> Any:
    """`pretrain.json`'s validation probes as a table: one row per encoder, micro-F1 and organ accuracy, then
    the per-label F1 of each (for notebook 02 and RESULTS.md)."""
    rows = {}
    for arm, probe in report["probe_validation"].items():
        row = {
            "findings micro-F1 (probe)": probe["findings_micro_f1"],
            "organ accuracy (probe)": probe["organ_accuracy"],
        }
        if "heads" in probe:
            row["findings micro-F1 (own head)"] = probe["heads"]["findings_micro_f1"]
        rows[arm] = {**row, **{f"F1 {k}": v for k, v in probe["per_label_f1"].items()}}
    return pd.DataFrame(rows).T.rename_axis(f"encoder ({report['objective']}, validation)")
