"""One case end to end (`reg2rg report`): a user's CT and its region masks -> the model's region-grounded
report.

The case goes through exactly what a benchmark case goes through: the paper's preprocessing
(`data.case_tensors.prepare_case`, at the model's `image_size`), a one-case prep cache in a temporary folder,
and the batched generator (`infer.generate.generate_predictions`, regions in the canonical order, the
profile's decoding). Regions without a mask file, or whose mask prep refuses (empty, not on the CT's grid),
are absent: they are left out of the prompt and listed, so a missing region never crashes generation.

How a paragraph finds its region: by the prompt slot, never by the organ name the model wrote. The prompt
numbers the present regions 0..n-1 in canonical order ("The region i is <region>...") and the model answers
"The region i is <organ>: ...", so the paragraph under heading i is region i's (the one whose image tokens sit
in slot i), and the organ name the model wrote is kept beside it (`named`): a paragraph in slot 0 (bone) that
the model headed "lung" is shown as bone's, with "the model named it lung" (a wrong name is a
region-recognition error to see, not a reason to move the text). `assign_paragraphs` does this; text it cannot
tie to a present slot (a heading for a slot the prompt does not have, a second paragraph for a slot, an "other
report" block or text outside any heading) is kept in `unplaced`, and a slot without text is a missing
paragraph (`missing`), never an empty string taken for one.

This module stops at the generated paragraphs; `report.case_report` adds the labeler's findings and writes
report.md, report.json and report.png (the labeler is an Evaluation tool, a later stage than inference).
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from reg2rg_lib.data.case_tensors import prepare_case
from reg2rg_lib.data.layout import case_id, mask_filename
from reg2rg_lib.data.manifest import CaseEntry
from reg2rg_lib.data.params import PrepParams
from reg2rg_lib.data.prep import CACHE_FORMAT, CaseRecord, PrepCache
from reg2rg_lib.errors import BadInputError, KitError
from reg2rg_lib.infer.generate import DecodeSettings, generate_predictions
from reg2rg_lib.infer.predictions import read_predictions
from reg2rg_lib.model import Reg2RG
from reg2rg_lib.paths import RunFolder
from reg2rg_lib.regions import REGIONS, RegionParagraph, split_regions
from reg2rg_lib.samples.features import feature_cache_for, use_feature_cache

logger = logging.getLogger(__name__)

#: the split the one-case cache files the case under (generation reads one split)
CASE_SPLIT = "test"


@dataclass
class CaseGeneration:
    """What the model wrote for one case: one paragraph per present region (prompt = canonical order)."""

    case: str
    ct: Path
    regions_dir: Path
    regions: list[str]  # present regions, in prompt order
    # region -> the paragraph under its slot's heading ("" when the model wrote none)
    paragraphs: dict[str, str]
    # region -> the organ name the model wrote in its slot's heading ("" when no heading)
    named: dict[str, str]
    absent: list[str]  # regions left out (no mask, or a mask prep refused), canonical order
    text: str  # the whole generated report, with its "The region i is ...:" prefixes
    question: str  # the prompt
    decoding: str
    skipped: list[dict[str, Any]] = field(default_factory=list)  # why masks were refused
    #: text the model wrote that no present slot takes: {"slot": i | None, "named", "paragraph", "why"}
    unplaced: list[dict[str, Any]] = field(default_factory=list)

    @property
    def missing(self) -> list[str]:
        """Present regions the model wrote no paragraph for (no heading for their slot, or only
        whitespace)."""
        return [r for r in self.regions if not (self.paragraphs.get(r) or "").strip()]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ct"], d["regions_dir"] = str(self.ct), str(self.regions_dir)
        return d


@dataclass(frozen=True)
class SlotAssignment:
    """`assign_paragraphs`' answer: per present region its paragraph ("" when none) and the organ name the
    model wrote in its slot's heading ("" when no heading), and the text no present slot takes."""

    paragraphs: dict[str, str]
    named: dict[str, str]
    unplaced: list[dict[str, Any]]


def assign_paragraphs(text: str, regions: list[str]) -> SlotAssignment:
    """Tie the generated `text` to the present `regions` (prompt order) by slot: heading "The region i is
    X:" -> regions[i], whatever X says (see the module docstring).

    A slot's paragraph is the first of its headings that has text (the first heading's name when none has);
    every other piece of text goes to `unplaced` with the reason: a later paragraph for a taken slot, a slot
    the prompt does not have, or text under no numbered heading. Whitespace-only paragraphs count as none.
    """
    n = len(regions)
    heads: dict[int, list[tuple[int, RegionParagraph]]] = {}  # slot -> its headings (position, paragraph)
    # (position in the text, entry): reported in reading order
    unplaced: list[tuple[int, dict[str, Any]]] = []
    for k, p in enumerate(split_regions(text)):
        if p.index is not None and p.index < n:
            heads.setdefault(p.index, []).append((k, p))
        elif p.paragraph.strip():
            if p.index is None:
                where = f"a block named {p.region!r}" if p.region else "text outside every heading"
                why = f'under no "The region i is ...:" heading ({where})'
            else:
                why = f"slot {p.index} is not in the prompt (its slots are 0..{n - 1})"
            unplaced.append(
                (k, {"slot": p.index, "named": p.region, "paragraph": p.paragraph.strip(), "why": why})
            )
    paragraphs: dict[str, str] = {}
    named: dict[str, str] = {}
    for i, region in enumerate(regions):
        found = heads.get(i, [])
        chosen = next((p for _, p in found if p.paragraph.strip()), found[0][1] if found else None)
        paragraphs[region] = chosen.paragraph.strip() if chosen is not None else ""
        named[region] = chosen.region if chosen is not None else ""
        for k, p in found:
            if p is not chosen and p.paragraph.strip():
                why = f"another paragraph for slot {i} ({region}); the slot shows the first one written"
                unplaced.append(
                    (k, {"slot": i, "named": p.region, "paragraph": p.paragraph.strip(), "why": why})
                )
    return SlotAssignment(paragraphs, named, [entry for _, entry in sorted(unplaced, key=lambda e: e[0])])


def case_entry(ct: str | os.PathLike[str], regions_dir: str | os.PathLike[str]) -> CaseEntry:
    """The case as prep wants it: the volume and the region mask files present (canonical order)."""
    ct, regions_dir = Path(ct).expanduser().resolve(), Path(regions_dir).expanduser().resolve()
    if not ct.is_file():
        raise BadInputError(ct, "CT volume not found (write it with `reg2rg import-ct`)")
    if not regions_dir.is_dir():
        raise BadInputError(regions_dir, "region mask folder not found (write it with `reg2rg regions`)")
    masks = {r: regions_dir / mask_filename(r) for r in REGIONS if (regions_dir / mask_filename(r)).is_file()}
    if not masks:
        raise BadInputError(
            regions_dir, "no region mask (<region>.nii.gz) in this folder; run `reg2rg regions`"
        )
    return CaseEntry(case_id(ct.name), CASE_SPLIT, ct, masks, {r: "" for r in masks}, "", {})


def one_case_cache(
    entry: CaseEntry, params: PrepParams, folder: Path
) -> tuple[PrepCache, list[dict[str, Any]]]:
    """Preprocess `entry` and hold it in a prep cache in `folder` (the layout `data.prep.prepare` writes)."""
    prepared = prepare_case(entry, params, threads=min(4, os.cpu_count() or 1))
    if prepared.tensors is None:
        reasons = "; ".join(s["reason"] for s in prepared.skipped) or "unusable"
        raise BadInputError(entry.volume, f"cannot be prepared: {reasons}")
    file = f"cases/{entry.name}.safetensors"
    (folder / "cases").mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in prepared.tensors.items()}, str(folder / file))
    record = CaseRecord(entry.name, CASE_SPLIT, prepared.regions, {r: "" for r in prepared.regions}, {}, "")
    manifest = {"format": CACHE_FORMAT, "params": params.to_dict(), "params_hash": params.hash(),
                "data_dir": str(entry.volume.parent), "cases": [{**asdict(record), "file": file}],
                "skipped": prepared.skipped}
    return PrepCache(folder, manifest), prepared.skipped


def generate_case(model: Reg2RG, ct: str | os.PathLike[str], regions_dir: str | os.PathLike[str], *,
                  decode: DecodeSettings = DecodeSettings()) -> CaseGeneration:
    """Prepare the CT at `ct` with the masks in `regions_dir` and generate its report with `model`."""
    entry = case_entry(ct, regions_dir)
    params = PrepParams(image_size=tuple(int(s) for s in model.config.image_size))
    with tempfile.TemporaryDirectory(prefix="reg2rg-report-") as tmp:
        cache, skipped = one_case_cache(entry, params, Path(tmp))
        regions = cache.cases(CASE_SPLIT)[0].regions
        out_csv = RunFolder(tmp).predictions()
        # the frozen ViT's features as `reg2rg generate` feeds them (and as image-contrastive decoding's
        # reference was averaged)
        features = feature_cache_for(model, cache, [entry.name], progress=False) \
            if use_feature_cache(model, None) else None
        generate_predictions(model, cache, out_csv, split=CASE_SPLIT, decode=decode, batch_size=1,
                             names=[entry.name], progress=False, features=features)
        rows = read_predictions(out_csv)
    if len(rows) != 1:
        raise KitError(f"generation wrote {len(rows)} rows for case {entry.name}, expected 1")
    text, question = rows[0]["Pred_combined_report"], rows[0]["Question"]
    slots = assign_paragraphs(text, list(regions))
    absent = [r for r in REGIONS if r not in regions]  # no file, or refused by prep (reasons in `skipped`)
    for s in skipped:
        logger.info(f"[report] left out {s['item']}: {s['reason']}")
    return CaseGeneration(entry.name, entry.volume, Path(regions_dir).expanduser().resolve(), list(regions),
                          slots.paragraphs, slots.named, absent, text, question, decode.describe(), skipped,
                          slots.unplaced)
