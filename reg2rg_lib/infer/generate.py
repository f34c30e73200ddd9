"""Batched report generation over a split of the prep cache, into the predictions CSV (`predictions.py`).

Decoding: greedy by default (deterministic, what the kit's tables report); `DecodeSettings.paper()` gives the
paper's settings, top_k=30 and max_new_tokens=500 on top of the Llama-2-chat generation config (sampling with
temperature 0.6 and top_p 0.9), which is what produced the published numbers.

Greedy search on a LLaMA-architecture LLM runs the kit's own loop (`infer.decoder.greedy_generate`): the
model's own modules (norms, projections with their LoRA adapters, MLP, head) driven step by step over a
preallocated key/value cache, with finished rows dropped from the batch. It writes the same tokens as
`Reg2RG.generate` (Hugging Face `generate`) at a fraction of the per-step cost; `generate.num_beams > 1` runs
the kit's beam search (`infer.beam`); sampling, other LLM families and generation configs with extra logits
processors go through `Reg2RG.generate` (`fast_greedy_blocker` says why).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from reg2rg_lib.data.prep import PrepCache, load_cache
from reg2rg_lib.errors import BadInputError, KitError
from reg2rg_lib.infer.beam import beam_generate
from reg2rg_lib.infer.decoder import fast_greedy_blocker, greedy_generate, greedy_generate_rereference
from reg2rg_lib.infer.predictions import (
    PRED_COLUMNS,
    PredictionWriter,
    decoding_path,
    read_predictions,
    same_decoding,
    written_with,
)
from reg2rg_lib.io import write_csv_atomic, write_json_atomic
from reg2rg_lib.model import Reg2RG, Reg2RGConfig, build_target, load_official_checkpoint, load_tokenizer
from reg2rg_lib.paths import COMPLETE, ModelFolder, latest_checkpoint
from reg2rg_lib.profiles import GenerateSection
from reg2rg_lib.samples.collate import Collator, model_inputs
from reg2rg_lib.samples.dataset import ReportDataset
from reg2rg_lib.samples.device import batch_names, to_device
from reg2rg_lib.samples.features import FeatureCache, feature_cache_for, use_feature_cache
from reg2rg_lib.samples.reference import reference_for, with_reference

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecodeSettings:
    """How reports are decoded. The default is deterministic greedy search."""

    max_new_tokens: int = 320
    do_sample: bool = False
    top_k: int | None = None
    top_p: float | None = None
    temperature: float | None = None
    seed: int = 0  # for sampling: the same seed gives the same reports
    num_beams: int = 1  # > 1: beam search (`infer.beam.beam_generate`) instead of greedy
    # > 0: image-contrastive greedy search (`samples.reference`): next token by own + c * (own - reference)
    image_contrast: float = 0.0
    contrast_plausible: float = 0.3  # ... among tokens with at least this share of the top probability

    @classmethod
    def paper(cls, seed: int = 0) -> DecodeSettings:
        """The paper's decoding: `generate(top_k=30, max_new_tokens=500)` with Llama-2-chat's generation
        config (do_sample=True, temperature=0.6, top_p=0.9)."""
        return cls(max_new_tokens=500, do_sample=True, top_k=30, top_p=0.9, temperature=0.6, seed=seed)

    @classmethod
    def from_profile(cls, section: GenerateSection | None, **overrides: Any) -> DecodeSettings:
        """The profile's `generate` settings (None: the defaults); `overrides` that are not None win. Sampling
        without a temperature takes the Llama-2-chat generation config's (temperature 0.6, top_p 0.9)."""
        keys = {"max_new_tokens", "do_sample", "top_k", "top_p", "temperature", "seed", "num_beams",
                "image_contrast", "contrast_plausible"}
        given = asdict(section) if section is not None else {}
        values = {k: v for k, v in given.items() if k in keys and v is not None}
        values.update({k: v for k, v in overrides.items() if v is not None})
        if values.get("do_sample") and "temperature" not in values:  # the Llama-2-chat generation config
            values.setdefault("top_p", 0.9)
            values["temperature"] = 0.6
        return cls(**values)

    def describe(self) -> str:
        if not self.do_sample and self.num_beams > 1:
            return f"beam search, num_beams={self.num_beams}, max_new_tokens={self.max_new_tokens}"
        if not self.do_sample and self.image_contrast:
            return (f"image-contrastive greedy, contrast={self.image_contrast:g}, plausible="
                    f"{self.contrast_plausible:g}, max_new_tokens={self.max_new_tokens}")
        if not self.do_sample:
            return f"greedy, max_new_tokens={self.max_new_tokens}"
        return (f"sampling top_k={self.top_k}, top_p={self.top_p}, temperature={self.temperature}, "
                f"max_new_tokens={self.max_new_tokens}, seed={self.seed}")

    def hf_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for a Hugging Face `generate` call."""
        if self.image_contrast:
            raise KitError("image-contrastive decoding runs in the kit's greedy loop only, not Hugging Face "
                           "generate; set generate.image_contrast: 0")
        out = {k: v for k, v in asdict(self).items()
               if k not in ("seed", "image_contrast", "contrast_plausible") and v is not None}
        if self.num_beams == 1:
            out.pop("num_beams")
        if not self.do_sample:
            for k in ("top_k", "top_p", "temperature"):
                out.pop(k, None)
        return out


def chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def batch_groups(items: list[Any], region_counts: list[int], size: int) -> list[list[Any]]:
    """`items` in batches of `size`, after a stable sort by region count: cases with as many regions batch
    together (prompts of one length, so less padding). The order `generate_predictions` decodes in."""
    order = sorted(range(len(items)), key=lambda k: region_counts[k])
    return list(chunks([items[k] for k in order], size))


def decode_engine(model: Reg2RG, decode: DecodeSettings, engine: str = "auto") -> str:
    """"kit" (`greedy_generate`, or `beam_generate` with num_beams > 1) or "hf" (`Reg2RG.generate`) for
    `decode` on `model`, as `engine` asks."""
    if engine not in ("auto", "hf", "kit"):
        raise KitError(f"unknown generation engine {engine!r}; expected auto, hf or kit")
    if decode.image_contrast and (decode.do_sample or decode.num_beams > 1 or engine == "hf"):
        raise KitError("generate.image_contrast: image-contrastive decoding is a greedy search (kit engine, "
                       "do_sample: false, num_beams: 1); set image_contrast: 0 for the other decodings")
    if decode.image_contrast < 0 or not 0.0 < decode.contrast_plausible <= 1.0:
        raise KitError(f"generate.image_contrast must be >= 0 (got {decode.image_contrast}) and "
                       f"generate.contrast_plausible in (0, 1] (got {decode.contrast_plausible})")
    if decode.num_beams < 1 or (decode.do_sample and decode.num_beams > 1):
        raise KitError(
            f"generate.num_beams={decode.num_beams}: expected 1, or more than 1 with do_sample: false "
            "(beam search is deterministic; the kit does not sample within beams)"
        )
    if engine == "hf" and not model.config.rereference:
        return "hf"
    blocker = "sampling" if decode.do_sample else fast_greedy_blocker(model)
    if blocker is None:
        return "kit"
    if model.config.rereference:
        raise KitError(
            f"a re-reference model (model.rereference) decodes with the kit's greedy loop only, and it "
            f"cannot decode this: {blocker}; set generate.do_sample: false, or use a model trained "
            "without re-reference"
        )
    if engine == "kit":
        raise KitError(f"the kit's greedy loop cannot decode this: {blocker}")
    logger.info(f"[generate] Hugging Face generate ({blocker})")
    return "hf"


# ---- Reg2RG: generation over a split of the prep cache -----------------------------------------------------
def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A `save_pretrained` folder from: itself, a training checkpoint (`.../step-N/model`), or a run folder
    (its newest complete checkpoint)."""
    path = Path(path).expanduser()
    if (path / "config.json").is_file():
        return path
    if (path / COMPLETE).is_file() and (path / "model" / "config.json").is_file():
        return path / "model"
    if (path / "checkpoints").is_dir():
        latest = latest_checkpoint(path / "checkpoints")
        if latest is not None and (latest / "model" / "config.json").is_file():
            return latest / "model"
        raise BadInputError(
            path, "no complete checkpoint with a model export under checkpoints/; train it first"
        )
    raise BadInputError(path, "not a model folder (config.json), a checkpoint (COMPLETE) or a run folder "
                              "(checkpoints/)")


def _check_resume_decoding(out_csv: str | os.PathLike[str], decode: DecodeSettings, split: str) -> None:
    """A one-line error when `out_csv` already holds rows that its decoding record says another decoding (or
    another split) wrote: resuming would mix two decodings in one file."""
    if not (Path(out_csv).is_file() and read_predictions(out_csv)):
        return
    if same_decoding(out_csv, asdict(decode), split) is False:
        before = written_with(out_csv) or {}
        raise BadInputError(out_csv, f"its rows were written with another decoding or split "
                            f"({before.get('decoding')}, {before.get('split')}) than this one "
                            f"({decode.describe()}, {split}); a resume would mix them: delete it and "
                            f"{decoding_path(out_csv).name} to generate again")


def generate_predictions(
    model: Reg2RG,
    cache: PrepCache,
    out_csv: str | os.PathLike[str],
    *,
    split: str = "test",
    decode: DecodeSettings = DecodeSettings(),
    batch_size: int = 8,
    features: FeatureCache | None = None,
    names: list[str] | None = None,
    progress: bool = True,
    region_order: str = "canonical",
    engine: str = "auto",
) -> Path:
    """Generate a report for every case of `split` into `out_csv` (released format), batched with the KV
    cache.

    Cases already in `out_csv` are skipped, so an interrupted run resumes. Regions are in the canonical order;
    the ground truth is the target the model was trained to write (`build_target` in canonical order). Batches
    group cases with the same number of regions (less padding), and the finished file is rewritten in the
    split's case order. `engine`: "auto" (greedy search through the kit's loop where `fast_greedy_blocker`
    allows, else Hugging Face `generate`), "hf" (always `Reg2RG.generate`) or "kit" (the kit's loop or an
    error).
    """
    use_kit = decode_engine(model, decode, engine) == "kit"
    tok, cfg = model.tokenizer, model.config
    if region_order not in ("canonical", "shuffled"):
        raise KitError(f"region_order must be 'canonical' or 'shuffled', got {region_order!r}")
    # "shuffled" (an RRA model only): each case's regions in a fixed random order (the dataset's seed-0 draw),
    # the reference in that order too; a probe of whether the model reads each region's features or its
    # position
    data = ReportDataset(cache, split, tok, cfg, features=features,
                         shuffle_regions=region_order == "shuffled", with_targets=False, names=names)
    reference = _reference(model, cache, features) if decode.image_contrast else None
    device = next(model.parameters()).device
    collate = Collator(tok.pad_token_id, padding_side="left")
    model.eval()
    _check_resume_decoding(out_csv, decode, split)
    write_json_atomic(decoding_path(out_csv), {
        "decoding": decode.describe(), "settings": asdict(decode), "batch_size": batch_size, "split": split,
        "engine": ("kit beam search" if decode.num_beams > 1 else "kit greedy loop") if use_kit
        else "hf generate",
    })
    with PredictionWriter(out_csv) as writer:
        todo = [i for i, r in enumerate(data.records) if r.name not in writer.done]
        bar = tqdm(total=len(data), initial=len(data) - len(todo), desc=f"generate ({split})",
                   disable=not progress, dynamic_ncols=True)
        for group in batch_groups(todo, [len(data.records[i].regions) for i in todo], batch_size):
            items = [data[i] for i in group]
            batch = collate(items + [with_reference(it, reference) for it in items] if reference else items)
            inputs = {k: v for k, v in model_inputs(to_device(batch, device)).items() if k != "labels"}
            if decode.do_sample:  # sampling is seeded per batch: a resumed run draws what it would have
                torch.manual_seed(decode.seed + group[0])
            try:
                ids = _decode_batch(model, inputs, decode, use_kit)
            except torch.OutOfMemoryError as err:
                raise KitError(f"out of memory generating case(s) {batch_names(batch)}: lower generate."
                               f"batch_size (now {batch_size})") from err
            except (RuntimeError, ValueError, IndexError) as err:
                raise KitError(f"generation failed on case(s) {batch_names(batch)}: {type(err).__name__}: "
                               f"{str(err).splitlines()[0] if str(err) else ''}") from err
            rows = []
            for i, sample, text in zip(group, batch["samples"][: len(group)], model.decode(ids)):
                rec = data.records[i]
                gt = build_target(sample.regions, rec.reports, cfg)  # the prompt's region order
                rows.append((rec.name, sample.prompt, gt, " ".join(text.split())))
            writer.write_batch(rows)  # one write and one fsync per batch
            bar.update(len(group))
        bar.close()
    order = {n: k for k, n in enumerate(data.names)}
    rows = sorted(read_predictions(out_csv), key=lambda r: order.get(r["AccNum"], len(order)))
    write_csv_atomic(out_csv, PRED_COLUMNS, rows, lineterminator="\n")
    return Path(out_csv)


@torch.inference_mode()
def _decode_batch(model: Reg2RG, inputs: dict[str, Any], decode: DecodeSettings, use_kit: bool
                  ) -> torch.Tensor:
    """The new token ids (B, steps) of one batch: the kit's beam search or greedy loop, else HF generate."""
    if use_kit and decode.num_beams > 1:
        return beam_generate(model, **inputs, num_beams=decode.num_beams,
                             max_new_tokens=decode.max_new_tokens)
    if use_kit:
        loop = greedy_generate_rereference if model.config.rereference else greedy_generate
        return loop(model, **inputs, max_new_tokens=decode.max_new_tokens, contrast=decode.image_contrast,
                    plausible=decode.contrast_plausible)
    return model.generate(**inputs, **decode.hf_kwargs())


def _reference(model: Reg2RG, cache: PrepCache, features: FeatureCache | None) -> dict[str, torch.Tensor]:
    """The reference inputs of image-contrastive decoding: the model's own, else computed from the prep
    cache's train split (with the generated split's feature setting)."""
    train = None
    if not getattr(model, "reference_inputs", None) and cache.cases("train"):
        names = [r.name for r in cache.cases("train")]
        train_features = None if features is None else feature_cache_for(model, cache, names, progress=False)
        train = ReportDataset(cache, "train", model.tokenizer, model.config, features=train_features,
                              shuffle_regions=False, with_targets=False)
    return reference_for(model, train)


def check_image_size(model_dir: Path, cache: PrepCache) -> None:
    """Refuse a saved model and a prep cache of different image sizes (another profile's cache) at once,
    before the model fails deep inside its vision encoder."""
    config = ModelFolder(model_dir).config
    try:
        size = json.loads(config.read_text()).get("image_size")
    except (OSError, ValueError):
        raise BadInputError(config, "unreadable model config; the checkpoint is damaged") from None
    cached = cache.params.get("image_size")
    if size is not None and list(size) != list(cached):
        raise BadInputError(
            cache.root,
            f"prepared at image size {tuple(cached)}, the checkpoint {model_dir} was "
            f"trained at {tuple(size)}: a checkpoint of another configuration; pass the cache of "
            "its profile (--data)",
        )


def load_model(checkpoint: str | os.PathLike[str], device: str | None = None) -> Reg2RG:
    """`Reg2RG.from_pretrained` on what `resolve_checkpoint` finds, on `device` (default: CUDA when
    present)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return Reg2RG.from_pretrained(resolve_checkpoint(checkpoint), device=device)


def load_official_model(checkpoint: str | os.PathLike[str], llm_path: str | os.PathLike[str],
                        device: str | None = None) -> Reg2RG:
    """The paper preset with the authors' released whole-model checkpoint (LLaMA-2-7B-chat from `llm_path`,
    the Reg2RG weights and LoRA from `checkpoint`), for `reg2rg generate --official CKPT --llm PATH` on a
    GPU."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    cfg = Reg2RGConfig.preset("paper", llm_path=str(llm_path))
    model = Reg2RG(cfg, load_tokenizer(llm_path))
    report = load_official_checkpoint(model, str(checkpoint))
    logger.info(f"[generate] official checkpoint {checkpoint}: {report}")
    return model.to(device)


def generate_run(
    checkpoint: str | os.PathLike[str] | Reg2RG,
    cache_dir: str | os.PathLike[str],
    out_csv: str | os.PathLike[str],
    *,
    decode: DecodeSettings = DecodeSettings(),
    batch_size: int = 8,
    split: str = "test",
    feature_cache: bool = True,
    limit: int | None = None,
    progress: bool = True,
    region_order: str = "canonical",
) -> Path:
    """Load a trained model (or take a loaded `Reg2RG`) and write predictions for `split` of the prep cache at
    `cache_dir` (`reg2rg generate`). `feature_cache`: feed cached frozen-ViT features when the ViT is frozen
    (`use_feature_cache`); False: run the ViT on every case."""
    cache = load_cache(cache_dir)
    if isinstance(checkpoint, (str, os.PathLike)):
        check_image_size(resolve_checkpoint(checkpoint), cache)
    model = load_model(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else checkpoint
    names = [r.name for r in cache.cases(split)][:limit] if limit else None
    features = None
    if use_feature_cache(model, None if feature_cache else False):
        features = feature_cache_for(model, cache, names or [r.name for r in cache.cases(split)],
                                     progress=progress)
    return generate_predictions(model, cache, out_csv, split=split, decode=decode, batch_size=batch_size,
                                features=features, names=names, progress=progress, region_order=region_order)
