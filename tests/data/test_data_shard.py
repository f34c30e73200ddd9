"""`reg2rg prepare --shard K/N` + `--merge`: the same case files and the same manifest bytes as one unsharded
run."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from reg2rg_lib.cli.main import main
from reg2rg_lib.data.prep import PrepParams, load_cache, merge_shards, prepare
from reg2rg_lib.data.synth.build import synthesize
from reg2rg_lib.errors import KitError
from reg2rg_lib.io import FolderBusyError

SIZE = (32, 32, 8)  # the smoke profile's image size
GARBLED = "train_2_a_1"  # one of its masks is not a NIfTI: a decode-time skip inside a shard


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shard") / "benchmark"
    synthesize(out, 6, 3, n_validation=2, seed=4, shape=(64, 64, 16), progress=False)
    mask = next(sorted((out / "train_region_mask" / f"seg_{GARBLED}").glob("*.nii.gz")).__iter__())
    mask.write_bytes(b"not a nifti file")
    (out / "valid_region_mask" / "seg_valid_1_a_1" / "heart.nii.gz").write_bytes(b"")  # an index-time skip
    return out


@pytest.fixture(scope="module")
def whole(bench, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shard") / "whole"
    assert main(["prepare", "--profile", "smoke", "--data", str(bench), "--out", str(out), "--quiet",
                 "--workers", "1"]) == 0
    return out


def _files(cache: Path) -> dict[str, str]:
    return {p.relative_to(cache).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(cache.rglob("*")) if p.is_file()}


def test_shards_then_merge_give_the_unsharded_cache_byte_for_byte(bench, whole, tmp_path, capsys):
    out = tmp_path / "sharded"
    for k in (2, 3, 1):  # any order, as array tasks finish
        assert main(["prepare", "--profile", "smoke", "--data", str(bench), "--out", str(out), "--quiet",
                     "--workers", "1", "--shard", f"{k}/3"]) == 0
    assert not (out / "manifest.json").exists(), "a shard never writes the cache manifest"
    assert "(shard 1/3: `reg2rg prepare --out" in capsys.readouterr().out
    parts = [json.loads((out / "shards" / f"{k}-of-3" / "manifest.json").read_text()) for k in (1, 2, 3)]
    names = [[c["name"] for c in p["cases"]] for p in parts]
    assert sum(map(len, names)) == len(load_cache(whole)) and not set(names[0]) & set(names[1]), (
        "disjoint parts"
    )
    assert main(["prepare", "--out", str(out), "--merge"]) == 0
    assert "[prepare]" in capsys.readouterr().out
    assert not (out / "shards").exists()
    assert _files(out) == _files(whole), "the same case files and manifest bytes as one unsharded run"
    man = json.loads((out / "manifest.json").read_text())
    assert any(s["item"].startswith(f"{GARBLED}/") for s in man["skipped"]), "a shard's decode skip is merged"
    assert man["counts"]["computed"] == len(load_cache(whole)) and man["counts"]["reused"] == 0
    again = prepare(bench, out, PrepParams(image_size=SIZE), progress=False)  # the merged cache is current
    assert again.manifest["counts"]["computed"] == 0


def test_a_rerun_shard_reuses_its_cases(bench, tmp_path):
    out = tmp_path / "c"
    first = prepare(bench, out, PrepParams(image_size=SIZE), progress=False, shard=(2, 4))
    again = prepare(bench, out, PrepParams(image_size=SIZE), progress=False, shard=(2, 4))
    assert first.manifest["counts"]["computed"] > 0 and again.manifest["counts"]["computed"] == 0
    assert again.manifest["counts"]["reused"] == first.manifest["counts"]["computed"]


def test_merge_refuses_missing_mixed_or_running_shards(bench, tmp_path, capsys):
    out = tmp_path / "c"
    with pytest.raises(KitError, match="no shard manifests"):
        merge_shards(out)
    prepare(bench, out, PrepParams(image_size=SIZE), progress=False, shard=(1, 3))
    prepare(bench, out, PrepParams(image_size=SIZE), progress=False, shard=(3, 3))
    before = _files(out)
    assert main(["prepare", "--out", str(out), "--merge"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "shard(s) 2 of 3 not prepared yet" in err and err.count("\n") == 1
    assert _files(out) == before, "a refused merge changes nothing"
    prepare(bench, out, PrepParams(image_size=SIZE), progress=False, shard=(1, 2))
    with pytest.raises(KitError, match=r"different shard counts \(2, 3\)"):
        merge_shards(out)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from reg2rg_lib.io import folder_lock\n"
        f"with folder_lock({str(out / 'shards' / '2-of-3')!r}, 'prepare'):\n"
        "    print('locked', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(
            FolderBusyError, match=rf"shards/2-of-3: in use by another process, pid {holder.pid}"
        ):
            prepare(bench, out, PrepParams(image_size=SIZE), progress=False)  # unsharded, over running shards
        with pytest.raises(
            FolderBusyError, match=rf"shards/2-of-3: in use by another process, pid {holder.pid}"
        ):
            merge_shards(out)
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("bad", ["0/3", "4/3", "2", "a/b"])
def test_a_bad_shard_argument_is_one_error(bad, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["prepare", "--data", str(tmp_path), "--out", str(tmp_path / "c"), "--shard", bad])
    assert exit_.value.code == 2
    assert f"expected K/N with 1 <= K <= N, e.g. 3/8, got {bad!r}" in capsys.readouterr().err
