"""Index a dataset in the RadGenome layout and describe it in a manifest: files, splits, counts, skipped
items.

`index_dataset` joins volumes, region masks, report rows and labels without decoding any image, and decides
what is usable: a region needs both a mask file and a report paragraph; a case needs at least one such region.
Problems that affect one item (a report row for an unknown region or a missing volume, a missing or empty mask
file, a duplicate row) become skips with a reason; problems that make the whole table unusable (missing
columns, an unreadable CSV, duplicate volume names) raise `BadInputError`. Decoding problems (corrupt NIfTI,
NaN voxels, empty masks, grids that do not match) are found by `prep`, which records them the same way.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reg2rg_lib._version import __version__
from reg2rg_lib.data.layout import (
    LABEL_ID_COLUMN,
    SPLIT_FILE_PREFIX,
    VALIDATION_LIST,
    case_id,
    mask_dirname,
    read_labels,
    read_region_reports,
    scan_layout,
    split_of,
)
from reg2rg_lib.env.assets import sha256_file
from reg2rg_lib.errors import BadInputError, KitError
from reg2rg_lib.io import write_json_atomic
from reg2rg_lib.regions import LABELS, REGIONS


@dataclass
class CaseEntry:
    """A usable case before decoding: its files, paragraphs and labels."""

    name: str
    split: str  # "train" | "validation" | "test"
    volume: Path
    masks: dict[str, Path]  # region -> mask file, canonical order; regions with both a mask and a paragraph
    reports: dict[str, str]  # region -> paragraph (same keys as masks)
    report: str  # the whole report
    labels: dict[str, int]  # the 18 LABELS (empty when the dataset has no label table)
    # CTRG only: "other report" blocks (region or "other")
    other: dict[str, str] = field(default_factory=dict)


#: dataset formats `index_dataset` understands (see data_manifests/)
FORMATS: tuple[str, ...] = ("radgenome", "ctrg")
#: the CTRG report row for text tied to no region
OTHER = "other"


@dataclass
class DatasetIndex:
    root: Path
    cases: list[CaseEntry] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    shard: dict[str, Any] | None = None  # set by `prep.select_shard`: which part of the whole index this is

    def skip(self, item: str, reason: str, **info: Any) -> None:
        self.skipped.append({"item": item, "reason": reason, **info})


def _read_reports(index: DatasetIndex, csv_path: Path, known: set[str],
                  extra: tuple[str, ...] = ()) -> dict[str, dict[str, str]]:
    """name -> {"" or region: text} from one report table; unusable rows become (aggregated) skips.

    `extra` names Anatomy values accepted besides the 10 regions (CTRG's "other").
    """
    df = read_region_reports(csv_path)
    out: dict[str, dict[str, str]] = defaultdict(dict)
    missing_volume: Counter[str] = Counter()
    unknown_region: Counter[str] = Counter()
    example: dict[str, str] = {}
    for vol, anatomy, text in zip(df["Volumename"], df["Anatomy"], df["Sentence"]):
        name = case_id(vol)
        if name not in known:
            missing_volume[name] += 1
        elif anatomy != "" and anatomy not in REGIONS and anatomy not in extra:
            unknown_region[anatomy] += 1
            example.setdefault(anatomy, name)
        elif anatomy in out[name]:
            index.skip(
                f"{csv_path.name}:{name}/{anatomy or '<whole report>'}",
                "duplicate report row (kept the first)",
            )
        else:
            out[name][anatomy] = text.strip()
    for name, n in missing_volume.items():
        index.skip(f"{csv_path.name}:{name}", "report row(s) for a volume that is not in the dataset", rows=n)
    for anatomy, n in unknown_region.items():
        index.skip(f"{csv_path.name}:{anatomy}", f"report row(s) for unknown region {anatomy!r} "
                   f"(expected one of the 10 regions)", rows=n, example=example[anatomy])
    return out


def _read_label_table(index: DatasetIndex, csv_path: Path) -> dict[str, dict[str, int]]:
    df = read_labels(csv_path)
    out: dict[str, dict[str, int]] = {}
    for record in df.to_dict("records"):
        name = case_id(record.pop(LABEL_ID_COLUMN))
        if name in out:
            index.skip(f"{csv_path.name}:{name}", "duplicate label row (kept the first)")
            continue
        out[name] = {k: int(record[k]) for k in LABELS}
    return out


def index_dataset(root: str | os.PathLike[str], mask_root: str | os.PathLike[str] | None = None,
                  dataset: str = "radgenome") -> DatasetIndex:
    """Join the files of a RadGenome-layout dataset into usable cases and skipped items (nothing is decoded).

    `dataset="ctrg"`: a CTRG-Chest-548K copy in the same layout. Its paragraphs for regions without a mask,
    and rows with Anatomy "other", become the case's "other report" (`CaseEntry.other`) instead of being
    skipped.
    """
    if dataset not in FORMATS:
        raise KitError(f"unknown dataset format {dataset!r}; expected one of {', '.join(FORMATS)}")
    ctrg = dataset == "ctrg"
    layout = scan_layout(root, mask_root)
    index = DatasetIndex(layout.root)
    known = set(layout.volumes)
    splits = sorted({s for s in map(split_of, known) if s is not None})
    reports: dict[str, dict[str, str]] = {}
    labels: dict[str, dict[str, int]] = {}
    for split in splits:
        if split not in layout.report_csvs:
            prefix = SPLIT_FILE_PREFIX[split]
            raise BadInputError(layout.root, f"no {prefix}_region_report.csv for the {split} split's volumes")
        reports.update(_read_reports(index, layout.report_csvs[split], known, (OTHER,) if ctrg else ()))
        if split in layout.label_csvs:
            labels.update(_read_label_table(index, layout.label_csvs[split]))
    for name in layout.names():
        split = layout.split(name)
        path = layout.volumes[name]
        if split is None:
            index.skip(name, "volume name does not start with a known split (train_/valid_/test_)")
            continue
        if path.stat().st_size == 0:
            index.skip(name, f"{path}: volume file is empty (0 bytes)")
            continue
        rows = reports.get(name, {})
        if not rows:
            index.skip(name, "no report rows for this volume")
            continue
        masks, paragraphs, other = {}, {}, {}
        for region in REGIONS:
            has_text = region in rows
            mpath = layout.mask_path(name, region)
            exists = mpath is not None and mpath.is_file()
            if has_text and not exists and ctrg:
                other[region] = rows[region]  # CTRG: text of a region without a mask goes to the other report
            elif has_text and not exists:
                index.skip(f"{name}/{region}", f"{mpath or mask_dirname(name) + '/'}: mask missing")
            elif exists and mpath.stat().st_size == 0:
                index.skip(f"{name}/{region}", f"{mpath}: mask file is empty (0 bytes)")
            elif exists and not has_text:
                index.skip(f"{name}/{region}", "mask without a report paragraph")
            elif exists:
                masks[region], paragraphs[region] = mpath, rows[region]
        if not masks:
            index.skip(name, "no region with both a mask and a report paragraph")
            continue
        if labels and name not in labels:
            index.skip(f"{name}/labels", "no label row for this volume (labels left empty)")
        if ctrg:
            other[OTHER] = rows.get(OTHER, "")
        whole = rows.get("") or " ".join(paragraphs.values())
        index.cases.append(
            CaseEntry(name, split, path, masks, paragraphs, whole, labels.get(name, {}), other)
        )
    return index


def _file_entry(path: Path, checksums: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"bytes": path.stat().st_size}
    if checksums:
        entry["sha256"] = sha256_file(path)
    return entry


def build_manifest(root: str | os.PathLike[str], checksums: bool = False, extra: dict[str, Any] | None = None,
                   mask_root: str | os.PathLike[str] | None = None, index: DatasetIndex | None = None,
                   dataset: str = "radgenome") -> dict[str, Any]:
    """The dataset manifest: every file (size, optionally sha256), cases per split, counts, skipped items."""
    index = index or index_dataset(root, mask_root, dataset)
    root = index.root
    files: dict[str, Any] = {}

    def rel(p: Path) -> str:  # relative even for masks kept outside the dataset folder: the pair can move
        return Path(os.path.relpath(p, root)).as_posix()

    layout_tables = [p for p in root.glob("*.csv")] + [p for p in [root / VALIDATION_LIST] if p.is_file()]
    for p in sorted(layout_tables):
        files[rel(p)] = _file_entry(p, checksums)
    cases = []
    for c in index.cases:
        files[rel(c.volume)] = _file_entry(c.volume, checksums)
        for p in c.masks.values():
            files[rel(p)] = _file_entry(p, checksums)
        cases.append({"name": c.name, "split": c.split, "volume": rel(c.volume), "regions": list(c.masks),
                      "report_words": len(c.report.split())})
    region_counts = Counter(r for c in index.cases for r in c.masks)
    label_counts = Counter(k for c in index.cases for k, v in c.labels.items() if v)
    man = {
        "root": str(root),
        "format": dataset,
        "written_by": f"reg2rg-kit {__version__}",
        "splits": dict(Counter(c.split for c in index.cases)),
        "counts": {
            "cases": len(index.cases),
            "skipped": len(index.skipped),
            "regions": {r: region_counts.get(r, 0) for r in REGIONS},
            "labels": {k: label_counts.get(k, 0) for k in LABELS},
        },
        "cases": cases,
        "files": files,
        "skipped": [{**s, "reason": s["reason"].replace(f"{root}{os.sep}", "")} for s in index.skipped],
    }
    man.update(extra or {})
    return man


def write_manifest(manifest: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write a manifest atomically (JSON), its `root` relative to the manifest's own folder (every other path
    is relative to `root`): the same dataset written into two folders gives the same bytes, and a dataset
    moved together with its manifest still resolves (`manifest_root`)."""
    path = Path(path)
    root = manifest.get("root")
    if root and Path(root).is_absolute():
        relative = os.path.relpath(Path(root).resolve(), path.expanduser().resolve().parent)
        manifest = {**manifest, "root": Path(relative).as_posix()}
    return write_json_atomic(path, manifest)


def manifest_root(path: str | os.PathLike[str], manifest: dict[str, Any]) -> Path:
    """The dataset folder a manifest read from `path` describes (its `root` is relative to `path`'s
    folder)."""
    return (Path(path).expanduser().resolve().parent / manifest.get("root", ".")).resolve()
