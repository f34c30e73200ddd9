"""The straightforward per-sample preprocessing recipe, written the obvious way with MONAI and nibabel.

This is the reference `reg2rg_lib.data.case_tensors` must equal (tests/data: max abs diff <= 1e-3) and the
baseline `reg2rg bench preprocess` measures it against: every file loaded as float64, then 11 separate crop +
resize passes (the global image and one per region), then the stacked geometry masks. Deliberately
unoptimised; do not use it in pipelines.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import torch


def recipe_case(volume_path: str | os.PathLike[str], mask_paths: Mapping[str, str | os.PathLike[str]],
                image_size=(256, 256, 64), hu_min: float = -1000.0, hu_max: float = 200.0,
                centre: float = -400.0, scale: float = 600.0,
                background_hu: float = -1024.0) -> dict[str, torch.Tensor]:
    """image, full (1, H, W, D) and texture, geometry (R, H, W, D) for one case, regions in `mask_paths`
    order."""
    # nibabel, monai (~10 s): bench modules load at `reg2rg --help`; only the recipe needs them
    import nibabel as nib
    from monai.transforms import CropForegroundd, Resize

    def norm(x: np.ndarray) -> np.ndarray:
        return (np.clip(x, hu_min, hu_max) - centre) / scale

    resize = Resize(tuple(image_size), mode="area")
    vol = nib.load(volume_path).get_fdata()  # (X, Y, Z) float64 HU
    crop_global = CropForegroundd(keys=["image"], source_key="hu", select_fn=lambda x: x > hu_min)
    image = resize(crop_global({"image": norm(vol)[None], "hu": vol[None]})["image"])
    full = resize(norm(vol)[None])
    crop_region = CropForegroundd(keys=["image"], source_key="mask", select_fn=lambda x: x > 0)
    textures, geometry = [], []
    for path in mask_paths.values():
        mask = nib.load(path).get_fdata() > 0  # (X, Y, Z) bool, loaded as float64 first
        masked = np.where(mask, vol, background_hu)
        cropped = crop_region({"image": norm(masked)[None], "mask": mask[None]})["image"]
        textures.append(resize(cropped)[0])
        geometry.append(resize(mask[None].astype(np.float64))[0])

    def tensor(x) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x), dtype=torch.float32)

    return {
        "image": tensor(image),
        "full": tensor(full),
        "texture": torch.stack([tensor(t) for t in textures]),
        "geometry": torch.stack([tensor(g) for g in geometry]),
    }
