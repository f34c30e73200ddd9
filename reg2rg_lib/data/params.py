"""The parameters of the paper's preprocessing (`PrepParams`): what `prep.py` caches and `transforms.py`
computes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from reg2rg_lib.profiles import DataSection

PREP_VERSION = 1  # bump when the tensors a parameter set produces change


@dataclass(frozen=True)
class PrepParams:
    """Everything that determines the cached tensors; its hash names a cache generation."""

    image_size: tuple[int, int, int] = (256, 256, 64)
    hu_min: float = -1000.0  # clip window (paper)
    hu_max: float = 200.0
    centre: float = -400.0  # (x - centre) / scale maps the window to [-1, 1]
    scale: float = 600.0
    background_hu: float = -1024.0  # outside-region value in texture crops
    foreground_hu: float = -1000.0  # the global crop keeps voxels with HU > this
    version: int = PREP_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["image_size"] = list(self.image_size)
        return d

    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_profile(cls, data: DataSection) -> PrepParams:
        """The paper's preprocessing at the profile's `data.image_size`."""
        return cls(image_size=data.image_size)
