"""`reg2rg doctor`: what the kit needs, what is present, and how to get what is missing.

Checks are small functions registered in `CHECKS`; each returns a `Check`. Stages that need an offline asset
(the embedded CT, NLTK data, ...) add a check here so that one command tells a user what is missing.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict
from importlib import metadata
from typing import Any

from reg2rg_lib.env.assets import check_assets, check_smollm2
from reg2rg_lib.env.checks import Check
from reg2rg_lib.env.nltk import check_nltk

#: Distribution names whose versions `reg2rg version` and notebook 00 report.
KEY_PACKAGES: tuple[str, ...] = (
    "torch", "transformers", "peft", "accelerate", "monai", "nibabel", "tokenizers", "safetensors",
    "papermill", "ipywidgets", "pandas", "matplotlib", "scikit-learn", "nltk", "sacrebleu", "rouge-score",
    "pycocoevalcap", "gguf",
)


def package_versions(names: tuple[str, ...] = KEY_PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def check_packages() -> Check:
    missing = [n for n, v in package_versions().items() if v is None]
    return Check(
        "packages", not missing,
        "all key packages installed" if not missing else f"missing: {', '.join(missing)}",
        fix="make setup   (or: pip install -e '.[dev]')",
    )


def check_kernel() -> Check:
    found = kernel_name() == KERNEL_NAME
    return Check(
        "jupyter kernel",
        found,
        f"kernel {KERNEL_NAME!r} registered"
        if found
        else f"kernel {KERNEL_NAME!r} not registered (runner falls back to python3)",
        fix=f"python -m ipykernel install --sys-prefix --name {KERNEL_NAME}",
        required=False,
    )


def check_torch() -> Check:
    # torch: imported where used, so the doctor still runs (and says so) when torch is broken
    import torch

    threads = torch.get_num_threads()
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        return Check(
            "device", True, f"torch {torch.__version__}, CUDA: {names}; CPU threads {threads}", required=False
        )
    cuda_build = torch.version.cuda is not None
    detail = (
        f"torch {torch.__version__} ({'CUDA build, no GPU visible' if cuda_build else 'CPU build'}); "
        f"CPU threads {threads}"
    )
    return Check("device", True, detail, fix="GPU users: see README 'GPU installs'", required=False)


def check_hf_offline() -> Check:
    offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1"
    return Check(
        "hub access", True,
        "HF_HUB_OFFLINE=1: models load from local paths only" if offline
        else "hub not forced offline; the kit itself never downloads (CPU presets are built locally)",
        required=False,
    )


#: Checks in the order they are printed; later stages append theirs. `check_nltk`: WordNet + Punkt for METEOR
#: (the user's NLTK data or the kit's copy). `check_smollm2`: the converted pretrained LLM (optional).
CHECKS: list[Callable[[], Check]] = [
    check_packages, check_kernel, check_torch, check_hf_offline, check_assets, check_nltk, check_smollm2,
]


def run_checks() -> list[Check]:
    results = []
    for fn in CHECKS:
        try:
            results.append(fn())
        except Exception as err:  # a broken check must not hide the others
            results.append(
                Check(fn.__name__.removeprefix("check_"), False, f"check failed: {type(err).__name__}: {err}")
            )
    return results


def print_report(checks: list[Check], as_json: bool = False) -> None:
    if as_json:
        print(json.dumps([asdict(c) for c in checks]))
        return
    for c in checks:
        mark = "ok " if c.ok else ("!! " if c.required else "-- ")
        print(f"{mark} {c.name:<16} {c.detail}")
        if not c.ok and c.fix:
            print(f"    {'':<16} fix: {c.fix}")
KERNEL_NAME = "reg2rg-kit"


def kernel_name() -> str:
    """The kit's registered kernel if `make setup` installed it, else the current interpreter's `python3`."""
    # jupyter_client: slow to import; only the kernel lookup needs it
    from jupyter_client.kernelspec import KernelSpecManager

    return KERNEL_NAME if KERNEL_NAME in KernelSpecManager().find_kernel_specs() else "python3"


def machine() -> dict[str, Any]:
    # torch: imported where used, so the doctor still runs (and says so) when torch is broken
    import torch

    return {
        "date": time.strftime("%Y-%m-%d"),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
    }
