"""`reg2rg synth`: write the embedded benchmark in the exact RadGenome-ChestCT layout, plus its manifest.

    <out>/train_preprocessed/train_1/train_1a/train_1_a_1.nii.gz         int16 HU volume
    <out>/train_region_mask/seg_train_1_a_1/<region>.nii.gz              uint8 masks, present regions only
    <out>/train_region_report.csv, <out>/train_predicted_labels.csv      (and valid_* for the test split)

Same seed, same bytes: cases are seeded by (seed, split, index) and NIfTI files are gzipped with a fixed
header.
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing as mp
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from reg2rg_lib.data.layout import (
    LABEL_ID_COLUMN,
    NIFTI_SUFFIX,
    REPORT_COLUMNS,
    SPLIT_FILE_PREFIX,
    VALIDATION_LIST,
    mask_dirname,
    mask_filename,
    scan_layout,
    volume_relpath,
    write_validation_list,
)
from reg2rg_lib.data.manifest import build_manifest, write_manifest
from reg2rg_lib.data.nifti import write_nifti
from reg2rg_lib.data.synth.anatomy import REGION_MAPPING, Atlas, build_atlas
from reg2rg_lib.data.synth.generator import SynthCase, make_case
from reg2rg_lib.env.assets import PROVENANCE
from reg2rg_lib.errors import KitError
from reg2rg_lib.io import make_folder, write_text_atomic
from reg2rg_lib.profiles import DataSection
from reg2rg_lib.regions import LABELS

GENERATOR_VERSION = 1  # bump when the generator changes what a seed produces


def case_names(n_train: int, n_test: int, n_validation: int = 0) -> list[tuple[str, str, int]]:
    """(name, split, index) of every case: train_1_a_1 ... and valid_1_a_1 ... (CT-RATE's test split is
    "valid").

    Validation cases are train volumes numbered after the train split's (train_201_a_1 ... for 200 train
    cases), listed in VALIDATION_LIST; each split has its own random stream, so adding validation cases
    changes no other.
    """
    out = [(f"{SPLIT_FILE_PREFIX['train']}_{i + 1}_a_1", "train", i) for i in range(n_train)]
    out += [
        (f"{SPLIT_FILE_PREFIX['validation']}_{n_train + i + 1}_a_1", "validation", i)
        for i in range(n_validation)
    ]
    out += [(f"{SPLIT_FILE_PREFIX['test']}_{i + 1}_a_1", "test", i) for i in range(n_test)]
    return out


def write_case(root: Path, case: SynthCase, atlas: Atlas) -> None:
    """Write one case's volume and region masks (the CSV rows are written once for all cases)."""
    write_nifti(root / volume_relpath(case.name), case.ct, atlas.affine)
    mask_dir = root / f"{SPLIT_FILE_PREFIX[case.split]}_region_mask" / mask_dirname(case.name)
    for region, mask in case.masks.items():
        write_nifti(mask_dir / mask_filename(region), mask, atlas.affine)


def _summary(case: SynthCase) -> dict[str, Any]:
    return {
        "name": case.name,
        "split": case.split,
        "regions": list(case.masks),
        "paragraphs": case.paragraphs,
        "report": case.report,
        "labels": case.labels,
        "findings": [f.to_dict() for f in case.findings],
        **case.meta,
    }


_WORKER: dict[str, Any] = {}


def _init_worker(root: str, shape: tuple[int, int, int], seed: int) -> None:
    torch.set_num_threads(1)
    _WORKER.update(root=Path(root), atlas=build_atlas(shape), seed=seed)


def _make_and_write(job: tuple[str, str, int]) -> dict[str, Any]:
    name, split, index = job
    case = make_case(_WORKER["atlas"], name, split, _WORKER["seed"], index)
    write_case(_WORKER["root"], case, _WORKER["atlas"])
    return _summary(case)


def _run(
    jobs: list[tuple[str, str, int]], root: Path, shape, seed: int, workers: int
) -> Iterator[dict[str, Any]]:
    if workers <= 1 or len(jobs) < 8:
        _init_worker(str(root), shape, seed)
        yield from map(_make_and_write, jobs)
        return

    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                             initargs=(str(root), shape, seed)) as pool:
        yield from pool.map(_make_and_write, jobs, chunksize=4)


def _csv_text(rows: list[list[Any]], header: list[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def write_tables(root: Path, cases: list[dict[str, Any]]) -> None:
    """`<split>_region_report.csv` (whole-report row first, then one row per region) and the label CSVs."""
    for prefix in dict.fromkeys(SPLIT_FILE_PREFIX.values()):  # validation rows live in the train tables
        mine = [c for c in cases if SPLIT_FILE_PREFIX[c["split"]] == prefix]
        reports, labels = [], []
        for c in mine:
            file = c["name"] + NIFTI_SUFFIX
            reports.append([file, "", c["report"]])
            reports += [[file, region, text] for region, text in c["paragraphs"].items()]
            labels.append([file, *(c["labels"][k] for k in LABELS)])
        write_text_atomic(root / f"{prefix}_region_report.csv", _csv_text(reports, list(REPORT_COLUMNS)))
        write_text_atomic(
            root / f"{prefix}_predicted_labels.csv", _csv_text(labels, [LABEL_ID_COLUMN, *LABELS])
        )


def synthesize(out: str | os.PathLike[str], n_train: int, n_test: int, seed: int = 0,
               shape: tuple[int, int, int] = (128, 128, 32), workers: int = 1,
               manifest: str | os.PathLike[str] | None = None, progress: bool = True,
               n_validation: int = 0) -> dict[str, Any]:
    """Write the embedded benchmark to `out` and its manifest (default `<out>/manifest.json`); return the
    manifest.

    Stale cases from an earlier, larger run in the same folder are removed, so the folder always holds exactly
    the cases the manifest lists.
    """
    root = make_folder(Path(out).expanduser().resolve())
    shape = tuple(int(s) for s in shape)
    jobs = case_names(n_train, n_test, n_validation)
    manifest = Path(manifest) if manifest else root / "manifest.json"
    _remove_stale(root, {name for name, _, _ in jobs}, manifest)
    cases = list(tqdm(_run(jobs, root, shape, seed, workers), total=len(jobs), desc="synth", unit="case",
                      disable=not progress))
    write_tables(root, cases)
    validation = root / VALIDATION_LIST
    if n_validation:
        write_validation_list(root, [c["name"] for c in cases if c["split"] == "validation"])
    elif validation.is_file():
        validation.unlink()  # an earlier run's list would name volumes this run does not write
    atlas = build_atlas(shape)
    extra = {
        "dataset": "embedded benchmark (reg2rg-kit synth)",
        "generator": {"version": GENERATOR_VERSION, "seed": seed, "shape": list(shape),
                      "spacing_mm": [round(s, 4) for s in atlas.spacing], "cases_train": n_train,
                      "cases_validation": n_validation, "cases_test": n_test},
        "provenance": PROVENANCE,
        "region_mapping": REGION_MAPPING,
        "ground_truth": {c["name"]: {k: c[k] for k in ("findings", "pose", "intensity", "dropped_regions")}
                         for c in cases},
    }
    man = build_manifest(root, checksums=True, extra=extra)
    write_manifest(man, manifest)
    return man


def synthesize_profile(
    data: DataSection,
    out: str | os.PathLike[str],
    *,
    counts: tuple[int, int, int] | None = None,
    seed: int | None = None,
    shape: tuple[int, int, int] | None = None,
    workers: int | None = None,
    manifest: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """`synthesize` with a profile's `data` section: its case counts (train, validation, test), synth seed,
    volume shape and workers, each replaced by the argument given (not None). The one place that reads a
    profile's benchmark settings (`reg2rg synth`, notebook 01, the smoke profile's inputs)."""
    if counts is None:
        if data.cases_train is None or data.cases_test is None:
            raise KitError(
                "the profile uses a real dataset (no data.cases_train / cases_test): give the case "
                "counts for a synthetic one"
            )
        counts = (int(data.cases_train), int(data.cases_validation or 0), int(data.cases_test))
    n_train, n_validation, n_test = counts
    return synthesize(
        out,
        n_train,
        n_test,
        n_validation=n_validation,
        seed=data.synth_seed if seed is None else seed,
        shape=shape or data.synth_shape,
        workers=data.workers if workers is None else workers,
        manifest=manifest,
        progress=progress,
    )


def _remove_stale(root: Path, keep: set[str], manifest: Path) -> None:
    """Delete volumes and mask folders of cases not in `keep`, left by an earlier synth run with more cases.

    Only in a folder an earlier `reg2rg synth` wrote (its manifest says so): never touch someone's real data.
    """
    try:
        found = scan_layout(root)
    except KitError:  # an empty or new folder
        return
    try:
        ours = "generator" in json.loads(manifest.read_text())
    except (OSError, ValueError):
        ours = False
    if not ours:
        raise KitError(
            f"{root}: holds volumes that `reg2rg synth` did not write (no synth manifest at {manifest}); "
            "choose an empty folder"
        )
    for name, path in found.volumes.items():
        if name not in keep:
            path.unlink()
    for name, d in found.mask_dirs.items():
        if name not in keep:
            shutil.rmtree(d)
