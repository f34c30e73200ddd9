"""The image half of the explorer: slices through a CT volume, window presets and region mask overlays.

Everything here is plain numpy + Pillow and returns arrays or PNG bytes, so the widgets (`explore.widgets`),
the static snapshot (`explore.snapshot`) and the tests all draw the same picture without a browser.

Volumes are (X, Y, Z) arrays in RAS+ voxel order (`reg2rg_lib.explore.case_sources` reorients them with
nibabel). Slices are shown in the radiological convention: axial seen from the feet and coronal seen from the
front (the patient's right on the left of the screen), sagittal seen from the patient's left (anterior on the
left), superior at the top.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image

from reg2rg_lib.regions import REGION_COLORS

#: Display planes and the volume axis each one slices (X=0 sagittal, Y=1 coronal, Z=2 axial).
PLANES: dict[str, int] = {"axial": 2, "coronal": 1, "sagittal": 0}

#: CT window presets as (level, width) in HU, the usual radiology reading windows.
WINDOWS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (40.0, 400.0),
    "bone": (400.0, 1800.0),
}

#: Overlay opacity of a visible region, of the selected region, and of the others while one is selected. The
#: selected region is outlined at full colour, so its fill stays light enough to read the CT (a finding) under
#: it.
ALPHA_VISIBLE, ALPHA_SELECTED, ALPHA_DIMMED = 0.35, 0.22, 0.10


@dataclass(frozen=True)
class ViewState:
    """What the image panel shows: plane, slice per plane, window, visible overlays and the selected region.

    Immutable: every interaction makes a new state (`dataclasses.replace`), which keeps the callbacks easy to
    test.
    """

    plane: str = "axial"
    index: Mapping[str, int] = field(default_factory=dict)  # plane -> slice index along that plane's axis
    window: str = "mediastinum"
    visible: frozenset[str] = frozenset()  # regions whose mask is overlaid
    selected: str | None = None  # the region in focus (outlined, others dimmed)

    def slice_index(self, shape: tuple[int, ...]) -> int:
        """The current plane's slice index, clipped to the volume (the middle slice when unset)."""
        n = shape[PLANES[self.plane]]
        return int(np.clip(self.index.get(self.plane, n // 2), 0, n - 1))

    def with_index(self, plane: str, value: int) -> ViewState:
        return replace(self, index={**self.index, plane: int(value)})


def check_plane(plane: str) -> str:
    if plane not in PLANES:
        raise ValueError(f"unknown plane {plane!r}; expected one of {', '.join(PLANES)}")
    return plane


def apply_window(hu: np.ndarray, preset: str | tuple[float, float]) -> np.ndarray:
    """Map HU to [0, 1] with a (level, width) window or a preset name from `WINDOWS`."""
    if isinstance(preset, str):
        if preset not in WINDOWS:
            raise ValueError(f"unknown window {preset!r}; expected one of {', '.join(WINDOWS)}")
        preset = WINDOWS[preset]
    level, width = preset
    return np.clip((np.asarray(hu, dtype=np.float32) - (level - width / 2)) / width, 0.0, 1.0)


def take_slice(volume: np.ndarray, plane: str, index: int) -> np.ndarray:
    """One 2-D slice of an (X, Y, Z) array as displayed: rows top to bottom, columns left to right."""
    axis = PLANES[check_plane(plane)]
    if volume.ndim != 3:
        raise ValueError(f"expected an (X, Y, Z) volume, got shape {volume.shape}")
    if plane == "axial":
        return volume[::-1, ::-1, index].T  # (Y, X): anterior at the top, patient's right on the left
    if plane == "coronal":
        return volume[::-1, index, ::-1].T  # (Z, X): superior at the top, patient's right on the left
    assert axis == 0
    return volume[index, ::-1, ::-1].T  # (Z, Y): superior at the top, anterior on the left


def pixel_spacing(spacing: tuple[float, float, float], plane: str) -> tuple[float, float]:
    """(row, column) spacing in mm of a displayed slice, for aspect-correct rendering."""
    sx, sy, sz = spacing
    return {"axial": (sy, sx), "coronal": (sz, sx), "sagittal": (sz, sy)}[check_plane(plane)]


def best_slice(mask: np.ndarray, plane: str) -> int:
    """The slice index along `plane` where `mask` covers the most voxels (the middle one if the mask is
    empty)."""
    axis = PLANES[check_plane(plane)]
    other = tuple(a for a in range(3) if a != axis)
    area = np.asarray(mask, dtype=bool).sum(axis=other)  # (n,) voxels per slice
    if not area.any():
        return mask.shape[axis] // 2
    return int(np.argmax(area))


def hex_to_rgb(color: str) -> np.ndarray:
    """'#d62728' -> array([214, 39, 40]) as float32."""
    color = color.lstrip("#")
    return np.array([int(color[i : i + 2], 16) for i in (0, 2, 4)], dtype=np.float32)


def _outline(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a 2-D boolean mask (the mask minus its 4-neighbour erosion)."""
    padded = np.pad(mask, 1)
    eroded = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~eroded


def display_size(shape2d: tuple[int, int], spacing2d: tuple[float, float], longest: int) -> tuple[int, int]:
    """(height, width) in pixels that shows a slice of `shape2d` voxels with square millimetres."""
    h_mm, w_mm = shape2d[0] * spacing2d[0], shape2d[1] * spacing2d[1]
    scale = longest / max(h_mm, w_mm)
    return max(1, round(h_mm * scale)), max(1, round(w_mm * scale))


def render_slice(
    volume: np.ndarray,
    masks: Mapping[str, np.ndarray],
    state: ViewState,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    longest: int = 384,
) -> np.ndarray:
    """The current view as an RGB uint8 image (h, w, 3): windowed CT, coloured overlays, selected region
    outlined.

    Overlays are drawn for `state.visible` plus the selected region; while a region is selected the other
    overlays are dimmed so the eye goes to it. The slice is resized to `longest` pixels on its long side with
    the voxel spacing taken into account (CT slices are often 3-5x thicker than their in-plane pixels).
    """
    index = state.slice_index(volume.shape)
    gray = apply_window(take_slice(volume, state.plane, index), state.window)  # (h0, w0) in [0, 1]
    h, w = display_size(gray.shape, pixel_spacing(spacing, state.plane), longest)
    gray_img = Image.fromarray((gray * 255).astype(np.uint8)).resize((w, h), Image.Resampling.BILINEAR)
    rgb = np.repeat(np.asarray(gray_img, dtype=np.float32)[..., None], 3, axis=2)  # (h, w, 3)
    shown = [r for r in masks if r in state.visible or r == state.selected]
    # the selected region is drawn last (on top)
    for region in sorted(shown, key=lambda r: r == state.selected):
        sl = take_slice(masks[region], state.plane, index).astype(np.uint8) * 255
        m = np.asarray(Image.fromarray(sl).resize((w, h), Image.Resampling.NEAREST)) > 0  # (h, w)
        if not m.any():
            continue
        color = hex_to_rgb(REGION_COLORS.get(region, "#ffffff"))
        if state.selected is None:
            alpha = ALPHA_VISIBLE
        else:
            alpha = ALPHA_SELECTED if region == state.selected else ALPHA_DIMMED
        rgb[m] = (1 - alpha) * rgb[m] + alpha * color
        if region == state.selected:
            edge = _outline(m)
            # 2 px wide so it shows when scaled down
            edge |= np.roll(edge, 1, axis=0) | np.roll(edge, 1, axis=1)
            rgb[edge & m] = color
    return rgb.clip(0, 255).astype(np.uint8)


def to_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an RGB uint8 image (deterministic: same pixels, same bytes)."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def regions_in_slice(masks: Mapping[str, np.ndarray], plane: str, index: int) -> list[str]:
    """The regions whose mask touches slice `index` of `plane`, in the masks' order."""
    return [r for r, m in masks.items() if take_slice(m, plane, index).any()]


def default_visible(regions: Iterable[str]) -> frozenset[str]:
    """All regions visible: the starting point of the overlay toggles."""
    return frozenset(regions)
