"""`reg2rg bench preprocess`: the kit's cached preprocessing against the straightforward recipe, on a
full-size CT.

The case is the real 512x512x133 CT with 10 full-resolution region masks (the TotalSegmentator organs mapped
to the regions, plus the derived pleura, mediastinum and breast), written once to a temporary folder. Three
timings per volume (1 CT + 10 masks): pure NIfTI decoding (nibabel, file by file), the kit
(`case_tensors.prepare_case`: nibabel decoding in threads, torch's area kernel, geometry resized only where a
mask can be non-zero), and the recipe (`recipe.recipe_case`: float64 loads, 11 MONAI crop + resize passes).
Goal: kit >= 10x faster than the recipe and within 2x of decoding.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reg2rg_lib.bench.common import report
from reg2rg_lib.bench.recipe import recipe_case
from reg2rg_lib.env.assets import find_ct_source
from reg2rg_lib.env.doctor import machine
from reg2rg_lib.regions import REGIONS


def write_fullres_case(folder: Path) -> tuple[Path, dict[str, Path]]:
    """The real CT's path and 10 full-resolution region masks written (gzipped NIfTI) under `folder`."""
    # bench modules load at `reg2rg --help`: each handler imports nibabel and the stage it measures when it
    # runs
    import nibabel as nib

    from reg2rg_lib.data.layout import mask_filename
    from reg2rg_lib.data.nifti import write_nifti
    from reg2rg_lib.data.resize import area_resize
    from reg2rg_lib.data.synth.anatomy import (
        FINE,
        FINE_CLASSES,
        FINE_TO_REGION_LUT,
        derive_regions,
        majority_vote,
        source_fine_lut,
    )

    src = find_ct_source()
    img = nib.load(src.volume)
    raw = np.asarray(img.dataobj.get_unscaled()).astype(np.float32)
    hu = raw * float(img.dataobj.slope or 1.0) + float(img.dataobj.inter or 0.0)
    labels = np.asarray(nib.load(src.labels).dataobj.get_unscaled()).astype(np.uint8)
    fine = source_fine_lut(src.structures)[labels]
    # derive pleura / mediastinum / breast at half resolution (fast), then copy them up onto unclaimed voxels
    half = tuple(n // 2 if i < 2 else n for i, n in enumerate(hu.shape))
    small_ct = area_resize(torch.from_numpy(np.maximum(hu, -1024.0))[None], half)[0].numpy()
    small = derive_regions(small_ct, majority_vote(fine, half, len(FINE_CLASSES)))
    up = np.repeat(np.repeat(small, 2, axis=0), 2, axis=1)[: hu.shape[0], : hu.shape[1]]
    derived = np.isin(up, [FINE[c] for c in ("mediastinum_fill", "pleura", "breast")])
    fine = np.where((fine == FINE["background"]) & derived, up, fine)
    region_map = FINE_TO_REGION_LUT[fine]
    masks = {}
    for i, region in enumerate(REGIONS):
        path = folder / "seg_cxr" / mask_filename(region)
        write_nifti(path, (region_map == i + 1).astype(np.uint8), img.affine)
        masks[region] = path
    return Path(src.volume), masks


def _best(fn, repeat: int) -> tuple[float, float, Any]:
    """Best wall time of `repeat` runs, the process CPU time (all threads) of that run, and the last
    result."""
    best, cpu, out = float("inf"), float("inf"), None
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        wall = time.perf_counter() - start
        if wall < best:
            best, cpu = wall, time.process_time() - start_cpu
    return best, cpu, out


def run(repeat: int = 3, recipe: bool = True, image_size=(256, 256, 64)) -> dict[str, Any]:
    """Figures for one full-size volume with 10 region masks (seconds per volume, best of `repeat`)."""
    import nibabel as nib

    from reg2rg_lib.data.case_tensors import prepare_case
    from reg2rg_lib.data.manifest import CaseEntry
    from reg2rg_lib.data.params import PrepParams

    params = PrepParams(image_size=tuple(image_size))
    with tempfile.TemporaryDirectory(prefix="reg2rg-bench-") as tmp:
        volume, masks = write_fullres_case(Path(tmp))
        files = [volume, *masks.values()]
        entry = CaseEntry("cxr", "test", volume, masks, {r: "" for r in masks}, "", {})
        decode_s, decode_cpu, _ = _best(
            lambda: [np.asarray(nib.load(p).dataobj.get_unscaled()) for p in files], repeat
        )
        threads = min(4, os.cpu_count() or 1)
        kit_s, kit_cpu, prepared = _best(lambda: prepare_case(entry, params, threads=threads), repeat)
        figures: dict[str, Any] = {**machine(), "volume_shape": "x".join(map(str, nib.load(volume).shape)),
                                   "regions": len(masks), "image_size": "x".join(map(str, image_size)),
                                   "kit_threads": threads, "decode_s_per_volume": round(decode_s, 3),
                                   "kit_s_per_volume": round(kit_s, 3)}
        if recipe:
            recipe_s, recipe_cpu, ref = _best(lambda: recipe_case(volume, masks, image_size), 1)
            diff = max(float((prepared.tensors[k] - ref[k]).abs().max()) for k in ref)
            figures.update(
                recipe_s_per_volume=round(recipe_s, 3),
                speedup_vs_recipe=round(recipe_s / kit_s, 2),
                max_abs_diff=diff,
            )
        else:
            recipe_cpu = None
            figures.update(recipe_s_per_volume=None, speedup_vs_recipe=None, max_abs_diff=None)
        figures["kit_vs_decode"] = round(kit_s / decode_s, 2)
        # CPU time (all threads) is steadier than wall time on a machine shared with other jobs
        figures.update(decode_cpu_s=round(decode_cpu, 3), kit_cpu_s=round(kit_cpu, 3),
                       recipe_cpu_s=None if recipe_cpu is None else round(recipe_cpu, 3))
        figures["goal"] = "speedup_vs_recipe >= 10 and kit_vs_decode <= 2"
    return figures


def register_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "preprocess", help="prep of one full-size CT + 10 masks: kit vs MONAI recipe vs decoding"
    )
    p.add_argument(
        "--repeat", type=int, default=3, help="best of N for the kit and decode timings (default 3)"
    )
    p.add_argument("--no-recipe", action="store_true", help="skip the slow recipe (~40 s on 2 cores)")
    p.add_argument("--image-size", default="256,256,64", help="target size (default the paper's 256,256,64)")
    p.add_argument("--json", action="store_true", help="print one JSON line")
    p.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    size = tuple(int(s) for s in args.image_size.split(","))
    return report(run(args.repeat, not args.no_recipe, size), args.json)
