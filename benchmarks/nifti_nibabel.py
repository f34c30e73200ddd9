"""nibabel against the hand-written NIfTI code it replaced: decoding (`data.nifti.read_nifti`) and
nearest-neighbour label resampling (`data.segmentation.nearest_labels`), timed and compared voxel for voxel.

    python benchmarks/nifti_nibabel.py [--rev 468a197] [--case-dir DIR] [--repeat 3] [--json]

The hand-written versions are read from git at `--rev` (the last commit that had them). The case is the one of
`reg2rg bench preprocess`: the real 512x512x133 CT and 10 full-resolution region masks (written under
`--case-dir`, or a temporary folder). Decoding: the 11 files one after another and in
`case_tensors.prepare_case` (2 threads); resampling: the CT's full-resolution TotalSegmentator labels onto a
grid 1.3x coarser and turned by 3 degrees (no block relation, so nearest neighbour). Ratios are new / old:
below 1 is faster. Results: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import nibabel as nib
import numpy as np

from reg2rg_lib.bench.common import report
from reg2rg_lib.bench.preprocess import write_fullres_case
from reg2rg_lib.data import case_tensors, nifti, prep, segmentation
from reg2rg_lib.data.manifest import CaseEntry
from reg2rg_lib.data.synth import anatomy
from reg2rg_lib.env.assets import find_ct_source
from reg2rg_lib.env.doctor import machine

ROOT = Path(__file__).resolve().parent.parent


def old_module(rev: str, relpath: str, name: str, imports: dict | None = None):
    """The module at `relpath` as it was at git revision `rev`; `imports` maps kit module names to the old
    modules its imports must see while it loads (names that have moved since)."""
    source = subprocess.run(["git", "show", f"{rev}:{relpath}"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout
    path = Path(tempfile.mkdtemp(prefix="reg2rg-old-")) / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    saved = {k: sys.modules.get(k) for k in imports or {}}
    sys.modules.update(imports or {})
    try:
        spec.loader.exec_module(module)
    finally:
        for key, value in saved.items():
            if value is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = value
    return module


def with_old_private_names(module):
    """A copy of `module` that also answers to `_name` for each public name (helpers made public since)."""
    compat = types.ModuleType(module.__name__)
    compat.__dict__.update(module.__dict__)
    compat.__dict__.update({f"_{k}": v for k, v in module.__dict__.items() if not k.startswith("_")})
    return compat


def best(fn, repeat: int) -> tuple[float, float]:
    """(best wall seconds, CPU seconds of that run) over `repeat` runs."""
    wall, cpu = float("inf"), float("inf")
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        if (took := time.perf_counter() - start) < wall:
            wall, cpu = took, time.process_time() - start_cpu
    return wall, cpu


def same(a: nifti.Nifti, b: nifti.Nifti) -> bool:
    return (a.data.dtype == b.data.dtype and a.data.tobytes() == b.data.tobytes()
            and np.array_equal(a.affine, b.affine) and a.spacing == b.spacing)


def run(rev: str, folder: Path, repeat: int) -> dict:
    old_layout = old_module(rev, "reg2rg_lib/data/layout.py", "old_layout")
    old_seg = old_module(rev, "reg2rg_lib/data/segmentation.py", "old_segmentation",
                         imports={"reg2rg_lib.data.layout": old_layout,  # its NIfTI names were there then
                                  "reg2rg_lib.data.synth.anatomy": with_old_private_names(anatomy)})
    volume, masks = write_fullres_case(folder)
    files = [(volume, "volume"), *[(p, "mask") for p in masks.values()]]
    figures = {**machine(), "rev": rev}
    equal = all(same(old_layout.read_nifti(p, k), nifti.read_nifti(p, k)) for p, k in files)
    for name, read in (("old", old_layout.read_nifti), ("new", nifti.read_nifti)):
        figures[f"decode_{name}_s"], figures[f"decode_{name}_cpu_s"] = best(
            lambda read=read: [read(p, k) for p, k in files], repeat)
    entry = CaseEntry("cxr", "test", volume, masks, {r: "" for r in masks}, "", {})
    params = prep.PrepParams(image_size=(256, 256, 64))
    for name, read in (("old", old_layout.read_nifti), ("new", nifti.read_nifti)):
        case_tensors.read_nifti = read  # prepare_case (data.case_tensors) decodes through this name
        figures[f"prepare_case_{name}_s"], _ = best(
            lambda: case_tensors.prepare_case(entry, params, threads=2), repeat
        )
    case_tensors.read_nifti = nifti.read_nifti
    labels_img = nib.load(find_ct_source().labels)
    labels, src = np.asarray(labels_img.dataobj).astype(np.uint8), labels_img.affine
    turn = np.deg2rad(3.0)
    dst = src.copy()
    dst[:3, :3] = src[:3, :3] @ np.array([[np.cos(turn), -np.sin(turn), 0], [np.sin(turn), np.cos(turn), 0],
                                          [0, 0, 1]]) * 1.3
    dst[:3, 3] += 0.37
    shape = tuple(int(n / 1.3) for n in labels.shape)
    results = {}
    for name, fn in (("old", old_seg.nearest_labels), ("new", segmentation.nearest_labels)):
        figures[f"resample_{name}_s"], _ = best(lambda fn=fn, name=name: results.__setitem__(
            name, fn(labels, src, shape, dst)), repeat)
    figures.update(
        decode_identical=equal, resample_identical=bool(np.array_equal(results["old"], results["new"])),
        decode_ratio=round(figures["decode_new_s"] / figures["decode_old_s"], 2),
        decode_cpu_ratio=round(figures["decode_new_cpu_s"] / figures["decode_old_cpu_s"], 2),
        prepare_case_ratio=round(figures["prepare_case_new_s"] / figures["prepare_case_old_s"], 2),
        resample_ratio=round(figures["resample_new_s"] / figures["resample_old_s"], 2))
    return figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--rev", default="468a197", help="git revision with the hand-written code (default 468a197)"
    )
    p.add_argument(
        "--case-dir", type=Path, help="where to write the full-size case (default: a temporary folder)"
    )
    p.add_argument("--repeat", type=int, default=3, help="best of N (default 3)")
    p.add_argument("--json", action="store_true", help="print one JSON line")
    args = p.parse_args(argv)
    if args.case_dir is not None:
        return report(run(args.rev, args.case_dir, args.repeat), args.json)
    with tempfile.TemporaryDirectory(prefix="reg2rg-bench-") as tmp:
        return report(run(args.rev, Path(tmp), args.repeat), args.json)


if __name__ == "__main__":
    sys.exit(main())
