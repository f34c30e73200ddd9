"""Batched report generation over a split of the prep cache, into the predictions CSV (`predictions.py`).

Decoding: greedy by default (deterministic, what the kit's tables report); `DecodeSettings.paper()` gives the
paper's settings, top_k=30 and max_new_tokens=500 on top of the Llama-2-chat generation config (sampling with
temperature 0.6 and top_p 0.9), which is what produced the published numbers.
"""

from __future__ import annotations

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
from reg2rg_lib.infer.predictions import PRED_COLUMNS, PredictionWriter, decoding_path, read_predictions
from reg2rg_lib.io import write_csv_atomic, write_json_atomic
from reg2rg_lib.model import Reg2RG, Reg2RGConfig, build_target, load_official_checkpoint, load_tokenizer
from reg2rg_lib.profiles import GenerateSection
from reg2rg_lib.train.checkpoints import COMPLETE, latest_checkpoint
from reg2rg_lib.train.collate import Collator, model_inputs
from reg2rg_lib.train.dataset import ReportDataset
from reg2rg_lib.train.features import FeatureCache, feature_cache_for, use_feature_cache
from reg2rg_lib.train.loop import batch_names, to_device

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

    @classmethod
    def paper(cls, seed: int = 0) -> DecodeSettings:
        """The paper's decoding: `generate(top_k=30, max_new_tokens=500)` with Llama-2-chat's generation config
        (do_sample=True, temperature=0.6, top_p=0.9)."""
        return cls(max_new_tokens=500, do_sample=True, top_k=30, top_p=0.9, temperature=0.6, seed=seed)

    @classmethod
    def from_profile(cls, section: GenerateSection | None, **overrides: Any) -> DecodeSettings:
        """The profile's `generate` settings (None: the defaults); `overrides` that are not None win. Sampling
        without a temperature takes the Llama-2-chat generation config's (temperature 0.6, top_p 0.9)."""
        keys = {"max_new_tokens", "do_sample", "top_k", "top_p", "temperature", "seed"}
        given = asdict(section) if section is not None else {}
        values = {k: v for k, v in given.items() if k in keys and v is not None}
        values.update({k: v for k, v in overrides.items() if v is not None})
        if values.get("do_sample") and "temperature" not in values:  # the Llama-2-chat generation config
            values.setdefault("top_p", 0.9)
            values["temperature"] = 0.6
        return cls(**values)

    def describe(self) -> str:
        if not self.do_sample:
            return f"greedy, max_new_tokens={self.max_new_tokens}"
        return (f"sampling top_k={self.top_k}, top_p={self.top_p}, temperature={self.temperature}, "
                f"max_new_tokens={self.max_new_tokens}, seed={self.seed}")

    def hf_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for a Hugging Face `generate` call."""
        out = {k: v for k, v in asdict(self).items() if k not in ("seed",) and v is not None}
        if not self.do_sample:
            for k in ("top_k", "top_p", "temperature"):
                out.pop(k, None)
        return out


def chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# ---- Reg2RG: generation over a split of the prep cache ---------------------------------------------------------
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
        raise BadInputError(path, "no complete checkpoint with a model export under checkpoints/; train it first")
    raise BadInputError(path, "not a model folder (config.json), a checkpoint (COMPLETE) or a run folder "
                              "(checkpoints/)")


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
) -> Path:
    """Generate a report for every case of `split` into `out_csv` (released format), batched with the KV cache.

    Cases already in `out_csv` are skipped, so an interrupted run resumes. Regions are in the canonical order;
    the ground truth is the target the model was trained to write (`build_target` in canonical order). Batches
    group cases with the same number of regions (less padding), and the finished file is rewritten in the
    split's case order.
    """
    tok, cfg = model.tokenizer, model.config
    data = ReportDataset(cache, split, tok, cfg, features=features, shuffle_regions=False, with_targets=False,
                         names=names)
    device = next(model.parameters()).device
    collate = Collator(tok.pad_token_id, padding_side="left")
    model.eval()
    write_json_atomic(decoding_path(out_csv), {"decoding": decode.describe(), "settings": asdict(decode),
                                               "batch_size": batch_size, "split": split})
    with PredictionWriter(out_csv) as writer:
        todo = [i for i, r in enumerate(data.records) if r.name not in writer.done]
        todo.sort(key=lambda i: len(data.records[i].regions))  # stable: equal region counts batch together
        bar = tqdm(total=len(data), initial=len(data) - len(todo), desc=f"generate ({split})",
                   disable=not progress, dynamic_ncols=True)
        for group in chunks(todo, batch_size):
            batch = collate([data[i] for i in group])
            inputs = {k: v for k, v in model_inputs(to_device(batch, device)).items() if k != "labels"}
            if decode.do_sample:  # sampling is seeded per batch: a resumed run draws what it would have
                torch.manual_seed(decode.seed + group[0])
            try:
                with torch.inference_mode():
                    ids = model.generate(**inputs, **decode.hf_kwargs())  # (B, new_tokens)
            except torch.OutOfMemoryError as err:
                raise KitError(f"out of memory generating case(s) {batch_names(batch)}: lower generate."
                               f"batch_size (now {batch_size})") from err
            except (RuntimeError, ValueError, IndexError) as err:
                raise KitError(f"generation failed on case(s) {batch_names(batch)}: {type(err).__name__}: "
                               f"{str(err).splitlines()[0] if str(err) else ''}") from err
            for i, sample, text in zip(group, batch["samples"], model.decode(ids)):
                rec = data.records[i]
                gt = build_target(rec.regions, rec.reports, cfg)
                writer.write(rec.name, sample.prompt, gt, " ".join(text.split()))
            bar.update(len(group))
        bar.close()
    order = {n: k for k, n in enumerate(data.names)}
    rows = sorted(read_predictions(out_csv), key=lambda r: order.get(r["AccNum"], len(order)))
    write_csv_atomic(out_csv, PRED_COLUMNS, rows, lineterminator="\n")
    return Path(out_csv)


def load_model(checkpoint: str | os.PathLike[str], device: str | None = None) -> Reg2RG:
    """`Reg2RG.from_pretrained` on what `resolve_checkpoint` finds, on `device` (default: CUDA when present)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return Reg2RG.from_pretrained(resolve_checkpoint(checkpoint), device=device)


def load_official_model(checkpoint: str | os.PathLike[str], llm_path: str | os.PathLike[str],
                        device: str | None = None) -> Reg2RG:
    """The paper preset with the authors' released whole-model checkpoint (LLaMA-2-7B-chat from `llm_path`, the
    Reg2RG weights and LoRA from `checkpoint`), for `reg2rg generate --official CKPT --llm PATH` on a GPU."""
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
) -> Path:
    """Load a trained model (or take a loaded `Reg2RG`) and write predictions for `split` of the prep cache at
    `cache_dir` (`reg2rg generate`). `feature_cache`: feed cached frozen-ViT features when the ViT is frozen
    (`use_feature_cache`); False: run the ViT on every case."""
    model = load_model(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else checkpoint
    cache = load_cache(cache_dir)
    names = [r.name for r in cache.cases(split)][:limit] if limit else None
    features = None
    if use_feature_cache(model, None if feature_cache else False):
        features = feature_cache_for(model, cache, names or [r.name for r in cache.cases(split)],
                                     progress=progress)
    return generate_predictions(model, cache, out_csv, split=split, decode=decode, batch_size=batch_size,
                                features=features, names=names, progress=progress)
