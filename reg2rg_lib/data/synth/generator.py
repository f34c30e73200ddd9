"""One synthetic patient: deform the atlas, insert findings, vary intensity, cut region masks, write the
report.

Deformation is one resampling of the atlas on the benchmark grid: a random affine (patient size and pose), a
smooth elastic field, and for cardiomegaly an "inflation" of the heart about its centre. Every random draw
comes from one `numpy.random.Generator` seeded by (seed, split, index), so a case never depends on how many
others are made.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from reg2rg_lib.data.synth.anatomy import FINE, FINE_TO_REGION_LUT, Atlas
from reg2rg_lib.data.synth.findings import CARDIOMEGALY_RATE, FINDING_RATES, GENERATORS, Canvas, Finding
from reg2rg_lib.data.synth.reports import region_paragraphs, whole_report
from reg2rg_lib.regions import LABELS, REGIONS

SPLIT_IDS = {"train": 0, "test": 1, "validation": 2}  # validation: its own stream, train unchanged
#: probability that a case has no mask and no paragraph for a region (real data lacks some regions too)
REGION_DROP_RATES = {"breast": 0.2, "thyroid": 0.1}


@dataclass
class SynthCase:
    """A generated case, ready to be written in the RadGenome layout."""

    name: str
    split: str
    ct: np.ndarray  # (X, Y, Z) int16 HU
    masks: dict[str, np.ndarray]  # region -> (X, Y, Z) uint8, canonical order, present regions only
    paragraphs: dict[str, str]
    report: str
    labels: dict[str, int]
    findings: list[Finding]
    meta: dict[str, Any] = field(default_factory=dict)


def _rotation(rz: float, rx: float) -> np.ndarray:
    cz, sz, cx, sx = np.cos(rz), np.sin(rz), np.cos(rx), np.sin(rx)
    return np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]) @ np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])


def _linear_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) linear-interpolation matrix from a coarse grid spanning the same extent (corners
    aligned)."""
    pos = np.linspace(0, n_in - 1, n_out)
    lo = np.minimum(np.floor(pos).astype(int), n_in - 2)
    frac = (pos - lo).astype(np.float32)
    w = np.zeros((n_out, n_in), np.float32)
    w[np.arange(n_out), lo] = 1 - frac
    w[np.arange(n_out), lo + 1] = frac
    return w


@lru_cache(maxsize=4)
def _voxel_mm(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> np.ndarray:
    """(3, X, Y, Z) float32 voxel-centre coordinates in mm (read-only, shared by all cases)."""
    q = np.stack(
        np.meshgrid(
            *[np.arange(n, dtype=np.float32) * np.float32(s) for n, s in zip(shape, spacing)], indexing="ij"
        )
    )
    q.setflags(write=False)
    return q


def sampling_coords(atlas: Atlas, rng: np.random.Generator, heart_scale: float) -> tuple[np.ndarray, dict]:
    """Atlas voxel coordinates (3, X, Y, Z) to sample for each output voxel, and the drawn pose parameters."""
    shape = atlas.ct.shape
    sp = np.asarray(atlas.spacing, np.float32)
    centre = ((np.asarray(shape) - 1) / 2 * sp).astype(np.float32)
    q = _voxel_mm(shape, atlas.spacing)
    scale = rng.uniform(0.92, 1.08, 3)
    rz, rx = np.deg2rad(rng.uniform(-6, 6)), np.deg2rad(rng.uniform(-2, 2))
    shift = (rng.uniform(-0.03, 0.03, 3) * np.asarray(shape) * sp).astype(np.float32)
    # output mm -> atlas mm (inverse of scaling up)
    a = (_rotation(rz, rx) / scale[None, :]).astype(np.float32)
    # p = A (q - c) + c + shift, written as A q + b to avoid a full-size temporary
    b = centre + shift - a @ centre
    p = np.einsum("ij,j...->i...", a, q) + b[:, None, None, None]  # (3, X, Y, Z) mm in the atlas
    coarse = rng.normal(0, 4.0, (3, 5, 5, 4)).astype(np.float32)  # elastic field, mm, on a coarse grid
    wx, wy, wz = (_linear_weights(c, n) for c, n in zip(coarse.shape[1:], shape))
    p += np.einsum("xa,yb,zc,kabc->kxyz", wx, wy, wz, coarse, optimize=True)  # trilinear upsampling
    if abs(heart_scale - 1.0) > 1e-3:
        heart = np.argwhere(atlas.fine == FINE["heart"]) * sp
        h = heart.mean(0).astype(np.float32)[:, None, None, None]
        r1 = 1.1 * (3 * len(heart) * np.prod(sp) / (4 * np.pi)) ** (1 / 3)
        r2 = 1.8 * r1
        rel = p - h  # (3, X, Y, Z)
        t = np.clip((r2 - np.sqrt((rel * rel).sum(0))) / (r2 - r1), 0, 1)
        g = t * t * (3 - 2 * t)  # smoothstep: 1 inside the heart, 0 beyond r2
        p -= np.float32(1 - 1 / heart_scale) * rel * g
    pose = {"scale": scale.round(4).tolist(), "rot_z_deg": round(float(np.rad2deg(rz)), 3),
            "rot_x_deg": round(float(np.rad2deg(rx)), 3), "heart_scale": round(float(heart_scale), 4)}
    return p / sp[:, None, None, None], pose


def resample(volumes: list[np.ndarray], coords: np.ndarray, modes: list[str]) -> list[np.ndarray]:
    """Sample each (X, Y, Z) volume at voxel coordinates `coords` (3, X', Y', Z'); edges extend outwards."""
    size = torch.tensor(volumes[0].shape, dtype=torch.float32)
    grid = torch.from_numpy(coords.astype(np.float32, copy=False)).permute(1, 2, 3, 0)  # (X', Y', Z', 3)
    grid = (2 * grid / (size - 1) - 1).flip(-1)[None].contiguous()  # grid_sample wants (z, y, x) in [-1, 1]
    out = []
    for volume, mode in zip(volumes, modes):
        src = torch.from_numpy(np.array(volume, dtype=np.float32))[None, None]  # (1, 1, X, Y, Z)
        out.append(
            F.grid_sample(src, grid, mode=mode, padding_mode="border", align_corners=True)[0, 0].numpy()
        )
    return out


def make_case(atlas: Atlas, name: str, split: str, seed: int, index: int) -> SynthCase:
    """Generate case `index` of `split` deterministically from `seed`."""
    rng = np.random.default_rng([seed, SPLIT_IDS[split], index])
    cardiomegaly = rng.random() < CARDIOMEGALY_RATE
    heart_scale = rng.uniform(1.22, 1.35) if cardiomegaly else rng.uniform(0.95, 1.05)
    coords, pose = sampling_coords(atlas, rng, heart_scale)
    ct, fine = resample([atlas.ct, atlas.fine], coords, ["bilinear", "nearest"])
    fine = fine.astype(np.uint8)
    canvas = Canvas(ct, fine, atlas.spacing)
    found: list[Finding] = []
    if cardiomegaly:
        found.append(Finding("cardiomegaly", "heart", "Cardiomegaly", {"heart_scale": round(heart_scale, 3)}))
    draws = {kind: rng.random() < rate for kind, rate in FINDING_RATES.items()}  # fixed number of draws
    for kind, gen in GENERATORS.items():
        if draws[kind]:
            made = gen(canvas, rng)
            found.extend(made if isinstance(made, list) else [made] if made is not None else [])
    # scanner and patient variation: a global HU offset/gain on tissue, and noise
    gain, offset, sigma = rng.uniform(0.97, 1.03), rng.uniform(-15, 15), rng.uniform(8, 20)
    body = ct > -900
    ct[body] = ct[body] * gain + offset
    ct += rng.normal(0, sigma, ct.shape).astype(np.float32)
    ct = np.clip(np.round(ct), -1024, 3071).astype(np.int16)
    region_map = FINE_TO_REGION_LUT[fine]  # (X, Y, Z) region index + 1
    dropped = {r for r, p in REGION_DROP_RATES.items() if rng.random() < p}
    masks = {}
    for i, region in enumerate(REGIONS):
        m = region_map == i + 1
        if region not in dropped and m.any():
            masks[region] = m.astype(np.uint8)
    kept = [f for f in found if f.region in masks]  # a dropped region's findings are not reported
    paragraphs = region_paragraphs(list(masks), kept, rng)
    labels = {label: 0 for label in LABELS}
    for f in kept:
        if f.label is not None:
            labels[f.label] = 1
    meta = {"pose": pose, "intensity": {"gain": round(gain, 4), "offset_hu": round(offset, 2),
                                        "noise_sd_hu": round(sigma, 2)}, "dropped_regions": sorted(dropped)}
    return SynthCase(name, split, ct, masks, paragraphs, whole_report(paragraphs), labels, kept, meta)
