"""The RadGenome-ChestCT layout: where volumes, masks and report/label tables live; reading tables and cases.

Real data and the embedded benchmark share this layout, so one prep path serves both:

    <root>/<split>_preprocessed/<split>_<pid>/<split>_<pid><scan>/<split>_<pid>_<scan>_<recon>.nii.gz
    <mask_root>/seg_<volume name>/<region>.nii.gz     one binary mask per region, voxel-aligned with the
                                                      volume
    <split>_region_report.csv                         Volumename, Anatomy, Sentence (empty Anatomy = whole
                                                      report)
    <split>_predicted_labels.csv                      VolumeName + the 18 CT-RATE abnormality columns

Volumes are found by glob and keyed by file name (without `.nii.gz`); the split comes from the name's prefix
(`train_...` -> "train", `valid_...`/`validation_...`/`test_...` -> "test"). A validation split is carved out
of the train volumes by a list at the root, `validation_volumes.txt` (one volume name per line): those volumes
keep their `train_` names and rows in the train tables (as a split carved from RadGenome's train set would),
and the kit calls their split "validation". Every choice (steps, learning rate, checkpoints, pretraining) is
made on it; the test split is only reported. Every reader raises `BadInputError(path, problem)`: one line
naming the file and what is wrong with it. The NIfTI files themselves are read and written by `data.nifti`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from reg2rg_lib.data.nifti import check_aligned, read_nifti
from reg2rg_lib.errors import BadInputError, KitError
from reg2rg_lib.io import write_text_atomic
from reg2rg_lib.regions import LABELS, REGIONS

NIFTI_SUFFIX = ".nii.gz"
#: name prefix -> split used everywhere in the kit ("train" | "test")
SPLIT_PREFIXES: dict[str, str] = {"train": "train", "valid": "test", "validation": "test", "test": "test"}
#: the file-name prefix the embedded benchmark writes for each split (CT-RATE calls its test split "valid";
#: validation volumes are train volumes listed in VALIDATION_LIST)
SPLIT_FILE_PREFIX: dict[str, str] = {"train": "train", "validation": "train", "test": "valid"}
#: the kit's splits, in the order tables list them
SPLITS: tuple[str, ...] = ("train", "validation", "test")
#: at a dataset's root: the train volumes that form the validation split, one name per line
VALIDATION_LIST = "validation_volumes.txt"
REPORT_COLUMNS: tuple[str, ...] = ("Volumename", "Anatomy", "Sentence")
LABEL_ID_COLUMN = "VolumeName"


def case_id(value: object) -> str:
    """The kit's one case id: the value as a string, spaces trimmed, without a `.nii.gz` / `.nii` suffix.

    A volume's file name (`train_1_a_1.nii.gz`), the tables' `Volumename` / `VolumeName` and a predictions
    CSV's `AccNum` (`train_1_a_1`, or a CTRG number such as 1334) all become the same key, so they match one
    another.
    """
    s = str(value).strip()
    for suffix in (NIFTI_SUFFIX, ".nii"):
        if s.endswith(suffix):
            return s[: -len(suffix)]
    return s


def split_of(name: str) -> str | None:
    """"train" or "test" from a volume name's prefix; None when the prefix is not a known split."""
    return SPLIT_PREFIXES.get(name.split("_", 1)[0])


def volume_relpath(name: str) -> Path:
    """Where the layout keeps volume `name` (`train_12_a_1`) relative to the dataset root."""
    split, pid, scan, _recon = name.split("_", 3)
    return Path(f"{split}_preprocessed") / f"{split}_{pid}" / f"{split}_{pid}{scan}" / f"{name}{NIFTI_SUFFIX}"


def mask_dirname(name: str) -> str:
    return f"seg_{name}"


def mask_filename(region: str) -> str:
    """`trachea and bronchie.nii.gz`: the region name as is, spaces included."""
    return f"{region}{NIFTI_SUFFIX}"


@dataclass
class Layout:
    """What a scan of a dataset folder found: files keyed by volume name, tables keyed by split."""

    root: Path
    volumes: dict[str, Path] = field(default_factory=dict)
    mask_dirs: dict[str, Path] = field(default_factory=dict)
    report_csvs: dict[str, Path] = field(default_factory=dict)
    label_csvs: dict[str, Path] = field(default_factory=dict)
    validation: frozenset[str] = frozenset()  # train volumes listed in VALIDATION_LIST

    def split(self, name: str) -> str | None:
        """"train", "validation" or "test" for volume `name`; None when its prefix is not a known split."""
        return "validation" if name in self.validation else split_of(name)

    def names(self, split: str | None = None) -> list[str]:
        """Volume names (sorted naturally: train_2 before train_10), optionally of one split."""
        names = [n for n in self.volumes if split is None or self.split(n) == split]
        return sorted(names, key=natural_key)

    def mask_path(self, name: str, region: str) -> Path | None:
        d = self.mask_dirs.get(name)
        return d / mask_filename(region) if d is not None else None


def natural_key(name: str) -> tuple:
    """Sort key that orders embedded numbers numerically (`train_2_a_1` < `train_10_a_1`)."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def _table_split(filename: str, suffix: str) -> str | None:
    return SPLIT_PREFIXES.get(filename[: -len(suffix)].rstrip("_")) if filename.endswith(suffix) else None


def scan_layout(root: str | os.PathLike[str], mask_root: str | os.PathLike[str] | None = None) -> Layout:
    """Walk `root` (and `mask_root`, default `root`) once and index volumes, mask folders and tables.

    Two volume files with the same name are an error (which one is meant is ambiguous); so is a root that does
    not exist or holds no volume at all.
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise BadInputError(root, "dataset folder not found")
    layout = Layout(root)
    roots = [root] if mask_root is None else [root, Path(mask_root).expanduser().resolve()]
    duplicates: list[str] = []
    for top in roots:
        for dirpath, dirnames, filenames in os.walk(top):
            keep = []
            for d in sorted(dirnames):
                if d.startswith("seg_"):
                    layout.mask_dirs.setdefault(d[4:], Path(dirpath) / d)
                elif not d.startswith("."):
                    keep.append(d)
            dirnames[:] = keep  # never descend into mask folders: their files are masks, not volumes
            for f in sorted(filenames):
                path = Path(dirpath) / f
                if f.endswith(NIFTI_SUFFIX) and top == root:
                    name = case_id(f)
                    if name in layout.volumes and layout.volumes[name] != path:
                        duplicates.append(f"{name} ({layout.volumes[name]} and {path})")
                    layout.volumes.setdefault(name, path)
                elif (split := _table_split(f, "region_report.csv")) is not None:
                    layout.report_csvs.setdefault(split, path)
                elif (split := _table_split(f, "predicted_labels.csv")) is not None:
                    layout.label_csvs.setdefault(split, path)
    if duplicates:
        raise BadInputError(root, f"duplicate volume names: {'; '.join(duplicates[:3])}"
                                  + (f" and {len(duplicates) - 3} more" if len(duplicates) > 3 else ""))
    if not layout.volumes:
        raise BadInputError(root, "no volumes (*.nii.gz) found; expected the RadGenome-ChestCT layout "
                                  "(<split>_preprocessed/.../<name>.nii.gz)")
    layout.validation = read_validation_list(root / VALIDATION_LIST, layout.volumes)
    return layout


def read_validation_list(path: Path, volumes: Iterable[str]) -> frozenset[str]:
    """The validation volumes named in `path` (absent file: none). Each must be a train volume of the
    dataset."""
    if not path.is_file():
        return frozenset()
    try:
        names = [case_id(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise BadInputError(path, f"cannot read the validation list ({type(err).__name__})") from None
    known = set(volumes)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise BadInputError(path, f"names volumes the dataset does not have: {', '.join(unknown[:3])}"
                                  + (f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""))
    not_train = [n for n in names if split_of(n) != "train"]
    if not_train:
        raise BadInputError(
            path,
            f"validation volumes must be train volumes (carved out of the train split), "
            f"not {', '.join(not_train[:3])}",
        )
    return frozenset(names)


def write_validation_list(root: str | os.PathLike[str], names: Iterable[str]) -> Path:
    """Write VALIDATION_LIST at `root` (natural order, one name per line), atomically."""
    path = Path(root) / VALIDATION_LIST
    write_text_atomic(path, "".join(f"{n}\n" for n in sorted(set(names), key=natural_key)))
    return path


# ---------------------------------------------------------------------------------------------------- tables


def _read_csv(path: Path, required: Iterable[str]) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as err:
        raise BadInputError(
            path, f"not a readable CSV ({type(err).__name__}: {str(err).splitlines()[0]})"
        ) from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise BadInputError(path, f"missing required column(s) {', '.join(map(repr, missing))}; "
                                  f"has {', '.join(map(repr, df.columns))}")
    return df


def read_region_reports(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The `<split>_region_report.csv` table (strings; empty Anatomy = the whole-report row)."""
    df = _read_csv(Path(path), REPORT_COLUMNS)
    df["Anatomy"] = df["Anatomy"].str.strip()
    return df


def read_labels(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The CT-RATE `<split>_predicted_labels.csv` table: VolumeName + the 18 LABELS as 0/1 integers."""
    path = Path(path)
    df = _read_csv(path, (LABEL_ID_COLUMN, *LABELS))
    out = df[[LABEL_ID_COLUMN]].copy()
    for label in LABELS:
        values = pd.to_numeric(df[label], errors="coerce")
        bad = ~values.isin([0, 1])
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise BadInputError(
                path, f"column {label!r} must hold 0/1, row {row + 2} has {df[label].iloc[row]!r}"
            )
        out[label] = values.astype(int)
    return out


# ---------------------------------------------------------------------------------------------------- cases


@dataclass
class CaseData:
    """One case read straight from the layout (no preprocessing): for exploration and figures."""

    name: str
    volume: np.ndarray  # (X, Y, Z) float32 HU, stored voxel order
    masks: dict[str, np.ndarray]  # region -> (X, Y, Z) bool, regions present in canonical order
    affine: np.ndarray
    spacing: tuple[float, ...]
    reports: dict[str, str]  # region -> paragraph
    report: str  # the whole report
    labels: dict[str, int]


def load_case(root: str | os.PathLike[str], name: str, layout: Layout | None = None) -> CaseData:
    """Volume, region masks (those present), report paragraphs and labels of case `name`."""
    layout = layout or scan_layout(root)
    if name not in layout.volumes:
        raise KitError(f"{layout.root}: no volume named {name!r}")
    vol = read_nifti(layout.volumes[name])
    masks = {}
    for region in REGIONS:
        path = layout.mask_path(name, region)
        if path is not None and path.is_file():
            m = read_nifti(path, kind="mask")
            check_aligned(m, vol, path)
            masks[region] = m.data
    split = split_of(name)
    reports, report, labels = {}, "", {}
    if split in layout.report_csvs:
        df = read_region_reports(layout.report_csvs[split])
        rows = df[df["Volumename"].map(case_id) == name]
        for anatomy, sentence in zip(rows["Anatomy"], rows["Sentence"]):
            if anatomy == "":
                report = sentence
            elif anatomy in REGIONS:
                reports[anatomy] = sentence
    if split in layout.label_csvs:
        df = read_labels(layout.label_csvs[split])
        row = df[df[LABEL_ID_COLUMN].map(case_id) == name]
        if len(row):
            labels = {k: int(row.iloc[0][k]) for k in LABELS}
    return CaseData(name, vol.data, masks, vol.affine, vol.spacing, reports, report, labels)
