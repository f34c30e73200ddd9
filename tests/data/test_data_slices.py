"""Slice rendering (the explorer's image half): windows, slice orientation, aspect, overlays, selection
outline."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from PIL import Image

from reg2rg_lib.data import slices as view
from reg2rg_lib.regions import REGION_COLORS


def test_window_presets_map_level_to_mid_grey_and_clip():
    for name, (level, width) in view.WINDOWS.items():
        out = view.apply_window(np.array([level, level - width, level + width]), name)
        assert out.tolist() == pytest.approx([0.5, 0.0, 1.0]), name
    with pytest.raises(ValueError, match="unknown window"):
        view.apply_window(np.zeros(1), "brain")


def test_slices_follow_the_radiological_convention():
    vol = np.zeros((6, 5, 4), np.float32)  # (X, Y, Z) in RAS+
    vol[5, 0, 3] = 1  # patient's far right, posterior, top slice
    axial = view.take_slice(vol, "axial", 3)
    assert axial.shape == (5, 6)
    assert axial[4, 0] == 1  # posterior at the bottom, patient's right on the screen's left
    coronal = view.take_slice(vol, "coronal", 0)
    assert coronal.shape == (4, 6) and coronal[0, 0] == 1  # superior at the top
    sagittal = view.take_slice(vol, "sagittal", 5)
    assert sagittal.shape == (4, 5) and sagittal[0, 4] == 1  # anterior on the left, so posterior on the right


def test_best_slice_is_where_the_mask_is_largest():
    mask = np.zeros((8, 8, 8), bool)
    mask[2:6, 2:6, 5] = True
    mask[3, 3, 1] = True
    assert view.best_slice(mask, "axial") == 5
    assert view.best_slice(mask, "sagittal") in range(2, 6)
    assert view.best_slice(np.zeros((8, 8, 6), bool), "axial") == 3  # empty: the middle


def test_display_size_keeps_millimetres_square():
    # a coronal slice of 16 slices x 64 columns with 4x thicker slices is shown as square
    assert view.display_size((16, 64), (4.0, 1.0), 256) == (256, 256)
    assert view.display_size((32, 64), (1.0, 1.0), 256) == (128, 256)


def _phantom():
    vol = np.full((20, 20, 10), -1000.0, np.float32)
    vol[4:16, 4:16, :] = 40.0
    heart = np.zeros(vol.shape, bool)
    heart[6:10, 6:10, 2:8] = True
    lung = np.zeros(vol.shape, bool)
    lung[11:15, 11:15, 4:6] = True
    return vol, {"heart": heart, "lung": lung}


def test_overlays_colour_their_region_and_toggle_off():
    vol, masks = _phantom()
    state = view.ViewState(index={"axial": 5}, visible=frozenset(masks))
    on = view.render_slice(vol, masks, state, longest=40).astype(int)
    off = view.render_slice(vol, masks, view.ViewState(index={"axial": 5}), longest=40).astype(int)
    assert on.shape == (40, 40, 3)
    changed = np.abs(on - off).sum(axis=2) > 0
    # displayed heart pixels: x 6..9 -> columns (19-9..19-6)*2, y 6..9 -> rows (19-9..19-6)*2
    assert changed[22:28, 22:28].all() and not changed[:8, :8].any()
    red = np.array([int(REGION_COLORS["heart"][i : i + 2], 16) for i in (1, 3, 5)])
    assert np.abs(on[24, 24] - red).sum() < np.abs(off[24, 24] - red).sum()  # pulled toward the heart's red


def test_selection_outlines_the_region_and_dims_the_others():
    vol, masks = _phantom()
    base = view.ViewState(index={"axial": 5}, visible=frozenset(masks))
    plain = view.render_slice(vol, masks, base, longest=40)
    focused = view.render_slice(vol, masks, dataclasses.replace(base, selected="heart"), longest=40)
    red = np.array([214, 39, 40])
    assert (focused == red).all(axis=2).sum() > 0 and (plain == red).all(axis=2).sum() == 0  # outline pixels
    lung_px = (slice(10, 16), slice(10, 16))  # x, y 11..14 -> rows/cols 10..17 at scale 2
    grey = 255 * view.apply_window(np.array([40.0]), base.window)[0]
    assert (
        np.abs(focused[lung_px].astype(float) - grey).mean()
        < np.abs(plain[lung_px].astype(float) - grey).mean()
    )


def test_png_is_deterministic_and_decodes():
    vol, masks = _phantom()
    rgb = view.render_slice(vol, masks, view.ViewState(visible=frozenset(masks)), longest=64)
    png = view.to_png(rgb)
    assert png == view.to_png(rgb.copy())
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")), rgb)
