"""The prep cache: the paper's preprocessing run over a dataset into a cache folder (`prepare`,
`reg2rg prepare`), at dataset scale in shards, and read back (`load_cache`, `PrepCache`).

Each case's tensors are computed by `data.case_tensors.prepare_case`. Cache layout: `CACHE/manifest.json`
(parameters + their hash, one record per case, skipped items with reasons) and
`CACHE/cases/<name>.safetensors` (float32 tensors, written under a temporary name, then renamed). A case is
recomputed only when the parameters or its input files (size, mtime) change. Case files are byte-reproducible
(`stable_safetensors`). At dataset scale, `prepare(shard=(k, n))` prepares one of n disjoint parts and
`merge_shards` joins their manifests (`reg2rg prepare --shard K/N`, `--merge`).

One file over 400 lines: writing, sharding, merging and reading the cache all go through its manifest
(`_read_manifest`, the case records and their source keys), and the shards' manifests must merge into exactly
the one an unsharded run writes.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save
from tqdm.auto import tqdm

from reg2rg_lib.data.case_tensors import PreparedCase, prepare_case
from reg2rg_lib.data.layout import SPLITS
from reg2rg_lib.data.manifest import CaseEntry, DatasetIndex, index_dataset
from reg2rg_lib.data.params import PREP_VERSION, PrepParams  # noqa: F401  (re-exported: prep.PrepParams)
from reg2rg_lib.errors import BadInputError, KitError
from reg2rg_lib.io import atomic_path, one_writer, write_json_atomic
from reg2rg_lib.regions import REGIONS

CACHE_FORMAT = "reg2rg-prep-cache/1"


@dataclass
class CaseRecord:
    """One prepared case, as listed in the cache manifest (tensors via `PrepCache.load(name)`)."""

    name: str  # volume file name without .nii.gz
    split: str  # "train" | "validation" | "test"
    regions: list[str]  # present regions, canonical order (= texture/geometry channel order)
    reports: dict[str, str]  # region -> paragraph
    labels: dict[str, int]  # the 18 LABELS (empty if the dataset has no label table)
    report: str  # the whole report
    other: dict[str, str] = field(default_factory=dict)  # CTRG: "other report" blocks, {} for RadGenome


def _source_key(entry: CaseEntry, params_hash: str) -> str:
    """Changes when the parameters or any input file of the case (size, mtime) change."""
    parts = [params_hash]
    for p in [entry.volume, *entry.masks.values()]:
        st = p.stat()
        parts.append(f"{p.name}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _write_case(cache_dir: Path, prepared: PreparedCase, key: str) -> None:
    target = cache_dir / "cases" / f"{prepared.name}.safetensors"
    meta = {
        "regions": json.dumps(prepared.regions),
        "skipped": json.dumps(prepared.skipped),
        "source_key": key,
    }
    with atomic_path(target, suffix=".tmp") as tmp:  # a full disk: DiskFullError, the previous file kept
        write_bytes(tmp, stable_safetensors({k: v.contiguous() for k, v in prepared.tensors.items()}, meta))


def stable_safetensors(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """A safetensors file's bytes with its metadata keys in sorted order. safetensors writes them in hash
    order, which changes from process to process; sorted, the same case gives the same bytes in any run or
    shard."""
    raw = save(tensors, metadata=metadata)
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    header["__metadata__"] = dict(sorted(header.get("__metadata__", {}).items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # the data stays 8-byte aligned, as safetensors pads it
    return len(text).to_bytes(8, "little") + text + raw[8 + n :]


def write_bytes(path: Path, data: bytes) -> None:
    """Write one cache file's bytes (a seam for the full-disk tests)."""
    path.write_bytes(data)


_WORKER: dict[str, Any] = {}


def _init_worker(cache_dir: str, params: PrepParams, threads: int) -> None:
    torch.set_num_threads(1)
    _WORKER.update(cache_dir=Path(cache_dir), params=params, threads=threads)


def _work(job: tuple[CaseEntry, str]) -> tuple[str, list[str], list[dict[str, Any]]]:
    entry, key = job
    prepared = prepare_case(entry, _WORKER["params"], _WORKER["threads"])
    if prepared.tensors is not None:
        _write_case(_WORKER["cache_dir"], prepared, key)
    return entry.name, prepared.regions, prepared.skipped


def _read_manifest(cache_dir: Path) -> dict[str, Any] | None:
    path = cache_dir / "manifest.json"
    if not path.is_file():
        return None
    try:
        man = json.loads(path.read_text())
    except ValueError:
        return None  # a damaged manifest: rebuild the cache rather than trust it
    return man if man.get("format") == CACHE_FORMAT else None


@one_writer(lambda a: shard_folder(a["cache_dir"], a["shard"]), "prepare")
def prepare(
    data_dir: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str],
    params: PrepParams,
    workers: int = 1,
    mask_root: str | os.PathLike[str] | None = None,
    progress: bool = True,
    dataset: str = "radgenome",
    shard: tuple[int, int] | None = None,
) -> PrepCache:
    """Preprocess every usable case of the dataset at `data_dir` into `cache_dir`, reusing what is current.

    `dataset` is "radgenome" or "ctrg" (see `manifest.index_dataset`); it changes the records, not the
    tensors. `shard=(k, n)` prepares only the k-th of n disjoint parts (cases k, k+n, ... in dataset order, k
    from 1): its case files go to `cache_dir/cases/` as usual, its manifest to `cache_dir/shards/k-of-n/`;
    `merge_shards` then writes the cache manifest, the same as one unsharded run's.
    """
    cache_dir = Path(cache_dir).expanduser().resolve()
    index: DatasetIndex = select_shard(index_dataset(data_dir, mask_root, dataset), shard)
    phash = params.hash()
    old = _read_manifest(shard_folder(cache_dir, shard)) or _read_manifest(cache_dir) or {}
    same = old.get("params_hash") == phash and old.get("dataset", "radgenome") == dataset
    old_cases = {c["name"]: c for c in old.get("cases", [])} if same else {}
    records, todo, reused, found_skips = {}, [], 0, {}
    for entry in index.cases:
        key = _source_key(entry, phash)
        prev = old_cases.get(entry.name)
        if prev and prev.get("source_key") == key and (cache_dir / prev["file"]).is_file():
            records[entry.name] = {**prev, "split": entry.split}  # the validation list may have changed
            reused += 1
        elif (done := _finished_case(cache_dir, entry, key)) is not None:  # written by a run killed before
            # its manifest
            records[entry.name], found_skips[entry.name] = _record(entry, done[0], key), done[1]
            reused += 1
        else:
            todo.append((entry, key))
    skipped = list(index.skipped) + [s for skips in found_skips.values() for s in skips]
    by_name = {e.name: e for e in index.cases}
    keys = dict((e.name, k) for e, k in todo)
    (cache_dir / "cases").mkdir(parents=True, exist_ok=True)
    for name, regions, skips in _compute(todo, cache_dir, params, workers, progress):
        skipped += skips
        if regions:
            records[name] = _record(by_name[name], regions, keys[name])
    # keep the previous records' skips of reused cases (their decode problems did not go away)
    for name in records:
        if name in old_cases and name not in keys:
            skipped += [s for s in old.get("skipped", []) if s["item"].startswith(f"{name}/")
                        and s not in skipped]
    ordered = [records[e.name] for e in index.cases if e.name in records]
    if shard is None:  # a shard sees only its own cases' files
        _remove_orphans(cache_dir, {r["file"] for r in ordered})
    manifest = {
        "format": CACHE_FORMAT,
        "params": params.to_dict(),
        "params_hash": phash,
        "data_dir": str(index.root),
        "dataset": dataset,
        "counts": {"cases": len(ordered), "train": sum(r["split"] == "train" for r in ordered),
                   "validation": sum(r["split"] == "validation" for r in ordered),
                   "test": sum(r["split"] == "test" for r in ordered), "reused": reused,
                   "computed": len(todo), "skipped": len(skipped)},
        "cases": ordered,
        "skipped": skipped,
        **({"shard": index.shard} if shard is not None else {}),
    }
    write_json_atomic(shard_folder(cache_dir, shard) / "manifest.json", manifest)
    return PrepCache(cache_dir, manifest)


def _compute(todo: list[tuple[CaseEntry, str]], cache_dir: Path, params: PrepParams, workers: int,
             progress: bool) -> Iterator[tuple[str, list[str], list[dict[str, Any]]]]:
    """(name, regions, skipped items) of each case of `todo`, in order, its file written into the cache; in
    `workers` spawned processes when there is more than one."""
    threads = 1 if workers > 1 else min(4, os.cpu_count() or 1)
    if workers > 1 and len(todo) > 1:
        pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                   initargs=(str(cache_dir), params, threads))
        results = pool.map(_work, todo, chunksize=max(1, min(8, len(todo) // (4 * workers))))
    else:
        pool = None
        _init_worker(str(cache_dir), params, threads)
        results = map(_work, todo)
    try:
        yield from tqdm(
            results, total=len(todo), desc="prepare", unit="case", disable=not progress or not todo
        )
    finally:
        if pool is not None:
            pool.shutdown()


# ---- preparation at dataset scale: disjoint shards (`reg2rg prepare --shard K/N`), then one merge ----------
def shard_folder(cache_dir: str | os.PathLike[str], shard: tuple[int, int] | None) -> Path:
    """Where shard (k, n) keeps its manifest (and its writer lock): `cache_dir/shards/k-of-n/`; the cache
    itself for None."""
    cache_dir = Path(cache_dir).expanduser()
    return cache_dir if shard is None else cache_dir / "shards" / f"{shard[0]}-of-{shard[1]}"


def select_shard(index: DatasetIndex, shard: tuple[int, int] | None) -> DatasetIndex:
    """The index's cases of shard (k, n): every n-th case from the k-th, in dataset order (round robin keeps
    the splits balanced); the whole index for None. (A shard still running holds `cache_dir/shards/k-of-n/`,
    so the writer lock of an unsharded `prepare` or of `merge_shards` on `cache_dir` refuses to start
    meanwhile.)"""
    if shard is None:
        return index
    k, n = shard
    if not (n >= 1 and 1 <= k <= n):
        raise KitError(f"shard {k}/{n}: expected K/N with 1 <= K <= N (K counts from 1)")
    chosen = [(i, c) for i, c in enumerate(index.cases) if i % n == k - 1]
    return DatasetIndex(
        index.root,
        [c for _, c in chosen],
        list(index.skipped),
        shard={
            "index": k,
            "count": n,
            "total": len(index.cases),
            "index_skipped": len(index.skipped),
            "positions": {c.name: i for i, c in chosen},
        },
    )


def _read_parts(cache_dir: Path) -> list[dict[str, Any]]:
    """The shard manifests under `cache_dir/shards/`, checked to be all n parts of one preparation."""
    found = {}
    for path in sorted((cache_dir / "shards").glob("*-of-*/manifest.json")):
        man = _read_manifest(path.parent)
        if man is None or "shard" not in man:
            raise BadInputError(
                path, "not a shard manifest of `reg2rg prepare --shard`; delete it and rerun that shard"
            )
        found[(man["shard"]["index"], man["shard"]["count"])] = man
    if not found:
        raise KitError(
            f"{cache_dir}: no shard manifests under shards/; run `reg2rg prepare --shard K/N` first"
        )
    counts = sorted({n for _, n in found})
    if len(counts) > 1:
        raise KitError(
            f"{cache_dir / 'shards'}: parts of different shard counts ({', '.join(map(str, counts))}); "
            "delete the folders of the count you do not use"
        )
    n = counts[0]
    missing = [str(k) for k in range(1, n + 1) if (k, n) not in found]
    if missing:
        raise KitError(
            f"{cache_dir}: shard(s) {', '.join(missing)} of {n} not prepared yet; run `reg2rg prepare "
            f"--shard K/{n}` for each, then merge"
        )
    parts = [found[(k, n)] for k in range(1, n + 1)]
    for key in ("params_hash", "data_dir", "dataset"):
        values = {json.dumps(p.get(key)) for p in parts}
        if len(values) > 1:
            raise KitError(
                f"{cache_dir}: the shards were prepared with different {key} ({', '.join(values)}); "
                "prepare them again with the same data and profile"
            )
    return parts


@one_writer("cache_dir", "prepare --merge")
def merge_shards(cache_dir: str | os.PathLike[str]) -> PrepCache:
    """Join the n shard manifests of `cache_dir` into its cache manifest (cases and skipped items in dataset
    order, counts summed): the same manifest one unsharded `prepare` writes. Then the shard folders go."""
    cache_dir = Path(cache_dir).expanduser().resolve()
    parts = _read_parts(cache_dir)
    positions = {name: i for p in parts for name, i in p["shard"]["positions"].items()}
    if len(positions) != parts[0]["shard"]["total"]:
        raise KitError(f"{cache_dir}: the shards cover {len(positions)} cases, the dataset has "
                       f"{parts[0]['shard']['total']}; prepare the shards again from the same data")
    first, n_index = parts[0], parts[0]["shard"]["index_skipped"]
    cases = sorted((c for p in parts for c in p["cases"]), key=lambda c: positions[c["name"]])
    per_case = [s for p in parts for s in p["skipped"][n_index:]]
    skipped = first["skipped"][:n_index] + sorted(
        per_case, key=lambda s: positions.get(s["item"].split("/")[0], -1)
    )
    manifest = {k: v for k, v in first.items() if k != "shard"}
    counts = {k: sum(p["counts"][k] for p in parts) for k in first["counts"]}
    manifest.update(
        counts={**counts, "cases": len(cases), "skipped": len(skipped)}, cases=cases, skipped=skipped
    )
    _remove_orphans(cache_dir, {c["file"] for c in cases})
    write_json_atomic(cache_dir / "manifest.json", manifest)
    shutil.rmtree(cache_dir / "shards", ignore_errors=True)
    return PrepCache(cache_dir, manifest)


def _record(e: CaseEntry, regions: list[str], key: str) -> dict[str, Any]:
    """The manifest record of a prepared case."""
    return {
        **asdict(
            CaseRecord(
                e.name,
                e.split,
                regions,
                {r: e.reports[r] for r in regions},
                e.labels,
                e.report,
                _other(e, regions),
            )
        ),
        "file": f"cases/{e.name}.safetensors",
        "source_key": key,
    }


def _finished_case(
    cache_dir: Path, entry: CaseEntry, key: str
) -> tuple[list[str], list[dict[str, Any]]] | None:
    """(regions, skipped items) of a case file that a run killed before writing its manifest left complete and
    current (case files are renamed into place whole; their metadata holds the source key), else None."""
    path = cache_dir / "cases" / f"{entry.name}.safetensors"
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception:  # missing or unreadable: prepare it again
        return None
    if meta.get("source_key") != key or "skipped" not in meta:
        return None
    return json.loads(meta["regions"]), json.loads(meta["skipped"])


def _other(entry: CaseEntry, regions: list[str]) -> dict[str, str]:
    """CTRG: regions whose mask turned out unusable also report in the other-report blocks (canonical
    order)."""
    if not entry.other:
        return {}

    texts = {**entry.other, **{r: entry.reports[r] for r in entry.reports if r not in regions}}
    return {k: texts[k] for k in (*REGIONS, "other") if k in texts}


def _remove_orphans(cache_dir: Path, keep: set[str]) -> None:
    """Delete cached case files that the new manifest does not list (stale parameters or removed cases)."""
    for p in (cache_dir / "cases").glob("*.safetensors"):
        if f"cases/{p.name}" not in keep:
            p.unlink()
    for p in (cache_dir / "cases").glob(".*.tmp"):  # a case file a kill cut short before its rename
        p.unlink(missing_ok=True)


class PrepCache:
    """Read access to a prepared cache: `cases(split)`, `load(name)`, `params`, `skipped`."""

    def __init__(self, root: Path, manifest: dict[str, Any]) -> None:
        self.root = root
        self.manifest = manifest
        self.params: dict[str, Any] = manifest["params"]
        self.skipped: list[dict[str, Any]] = manifest.get("skipped", [])
        fields = CaseRecord.__dataclass_fields__
        self._records = [CaseRecord(**{k: c[k] for k in fields if k in c}) for c in manifest["cases"]]
        self._files = {c["name"]: root / c["file"] for c in manifest["cases"]}

    def cases(self, split: str | None = None) -> list[CaseRecord]:
        """Records of the prepared cases ("train", "test" or None for all), in dataset order."""
        if split not in (None, *SPLITS):
            raise ValueError(f"split must be one of {', '.join(SPLITS)} or None, not {split!r}")
        return [r for r in self._records if split is None or r.split == split]

    def load(self, name: str, keys: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        """The float32 tensors of case `name`: image, full (1, H, W, D); texture, geometry (R, H, W, D).
        `keys`: read only these (e.g. the geometry when the ViT features come from a feature cache); a missing
        one is an unreadable entry, as a damaged file is."""
        path = self._files.get(name)
        if path is None:
            raise KeyError(f"{name!r} is not in the cache at {self.root}")
        try:
            if keys is None:
                return load_file(str(path))
            with safe_open(str(path), framework="pt") as f:
                return {k: f.get_tensor(k) for k in keys}
        except Exception as err:  # a file removed or damaged after prepare
            raise BadInputError(
                path, f"unreadable cache entry ({type(err).__name__}); rerun `reg2rg prepare`"
            ) from None

    def __len__(self) -> int:
        return len(self._records)

    def __repr__(self) -> str:
        c = self.manifest["counts"]
        return (
            f"PrepCache({self.root}, {c['train']} train + {c.get('validation', 0)} validation + "
            f"{c['test']} test cases, image_size {self.params['image_size']})"
        )


def load_cache(cache_dir: str | os.PathLike[str]) -> PrepCache:
    """Open a cache written by `prepare` / `reg2rg prepare`."""
    cache_dir = Path(cache_dir).expanduser().resolve()
    man = _read_manifest(cache_dir)
    if man is None:
        raise KitError(f"{cache_dir}: no prepared cache here (manifest.json missing or not a prep cache); "
                       "run `reg2rg prepare --data DATA --out CACHE` first")
    return PrepCache(cache_dir, man)
