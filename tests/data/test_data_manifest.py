"""Dataset manifests are portable: paths relative to their root, the same seed gives the same bytes in any
folder, a moved dataset still prepares (reusing its cache); a full disk while writing a cache entry loses
nothing."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

import pytest

from reg2rg_lib.data import prep
from reg2rg_lib.data.manifest import build_manifest, manifest_root, write_manifest
from reg2rg_lib.data.prep import PrepParams, load_cache, prepare
from reg2rg_lib.data.synth.build import synthesize
from reg2rg_lib.io import DiskFullError

SHAPE, SIZE = (64, 64, 16), (32, 32, 8)  # the smoke profile's grid and image size


def _digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_same_seed_in_two_folders_gives_identical_bytes_every_file(tmp_path):
    a, b = tmp_path / "a" / "benchmark", tmp_path / "b" / "much" / "deeper" / "benchmark"
    for out in (a, b):
        synthesize(out, 3, 1, n_validation=1, seed=7, shape=SHAPE, progress=False)
    da, db = _digests(a), _digests(b)
    assert "manifest.json" in da and len(da) > 20
    assert da == db, [k for k in da if da[k] != db.get(k)]
    man = json.loads((a / "manifest.json").read_text())
    assert man["root"] == "."
    assert not [k for k in man["files"] if k.startswith("/")], "every file path is relative to the root"
    assert str(tmp_path) not in (a / "manifest.json").read_text(), "no absolute path anywhere in the manifest"


def test_a_manifest_written_elsewhere_points_back_relatively(tmp_path):
    data = tmp_path / "out" / "data" / "benchmark"
    synthesize(data, 2, 1, seed=1, shape=SHAPE, progress=False)
    (data / "valid_region_mask" / "seg_valid_1_a_1" / "heart.nii.gz").write_bytes(b"")  # a skip with a path
    path = write_manifest(build_manifest(data), tmp_path / "out" / "data" / "manifest.json")
    man = json.loads(path.read_text())
    assert man["root"] == "benchmark" and manifest_root(path, man) == data.resolve()
    heart = [s for s in man["skipped"] if s["item"] == "valid_1_a_1/heart"][0]
    assert heart["reason"] == "valid_region_mask/seg_valid_1_a_1/heart.nii.gz: mask file is empty (0 bytes)"


def test_a_moved_dataset_still_prepares_and_reuses_its_cache(tmp_path):
    data, cache = tmp_path / "here" / "benchmark", tmp_path / "cache"
    synthesize(data, 3, 1, seed=2, shape=SHAPE, progress=False)
    first = prepare(data, cache, PrepParams(image_size=SIZE), progress=False)
    cases = _digests(cache / "cases")
    moved = tmp_path / "elsewhere" / "benchmark"
    moved.parent.mkdir()
    os.rename(data, moved)  # `mv`: the files keep their bytes and times
    man = json.loads((moved / "manifest.json").read_text())
    root = manifest_root(moved / "manifest.json", man)
    assert all((root / rel).is_file() for rel in man["files"]), "the manifest still resolves after the move"
    again = prepare(moved, cache, PrepParams(image_size=SIZE), progress=False)
    assert again.manifest["counts"]["computed"] == 0
    assert again.manifest["counts"]["reused"] == first.manifest["counts"]["cases"] == len(load_cache(cache))
    assert again.manifest["data_dir"] == str(moved.resolve())
    assert _digests(cache / "cases") == cases
    assert load_cache(cache).load(first.cases()[0].name)["image"].shape == (1, *SIZE)


def test_a_full_disk_while_writing_a_cache_entry_keeps_the_previous_one(tmp_path, monkeypatch):
    data, cache = tmp_path / "benchmark", tmp_path / "cache"
    synthesize(data, 2, 1, seed=3, shape=SHAPE, progress=False)
    prepare(data, cache, PrepParams(image_size=SIZE), progress=False, workers=1)
    before = _digests(cache)
    volume = data / "train_preprocessed" / "train_2" / "train_2a" / "train_2_a_1.nii.gz"
    os.utime(volume, ns=(volume.stat().st_atime_ns, volume.stat().st_mtime_ns + 10**9))  # forces a recompute
    real = prep.write_bytes

    def full(path, payload):
        real(path, payload[: len(payload) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(prep, "write_bytes", full)
    with pytest.raises(DiskFullError) as err:
        prepare(data, cache, PrepParams(image_size=SIZE), progress=False, workers=1)
    message = str(err.value)
    assert message.startswith(str(cache.resolve() / "cases" / "train_2_a_1.safetensors"))
    assert "the disk is full" in message and "the previous train_2_a_1.safetensors is unchanged" in message
    assert _digests(cache) == before, "the complete entry, the other entries and the manifest are intact"
    monkeypatch.undo()
    again = prepare(data, cache, PrepParams(image_size=SIZE), progress=False, workers=1)
    assert again.manifest["counts"]["computed"] == 1 and again.manifest["counts"]["reused"] == 2
