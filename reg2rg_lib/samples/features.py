"""Cache of the frozen ViT3D's outputs, computed once per case and reused by every epoch and every run.

The paper freezes RadFM's ViT3D, so its output for a given case never changes during training; the authors'
code still recomputes it at every step, which is most of a CPU step's cost. The kit runs the ViT once per case
and stores its token features next to the prep cache:

    CACHE/vit_features/<key>/<volume_name>.safetensors   {"global_feats": (1, T, vit_dim) | absent,
                                                          "region_feats": (R, T, vit_dim) | absent}

`key` hashes everything that determines the features: the encoder's weights, the vision fields of the model
config, the switch that decides what a region image is (texture crop with LFD, masked uncropped CT without),
the prep cache's parameters and the storage dtype. Change any of them and a new folder is used, so a stale
feature is never read. Files are written atomically and `manifest.json` is written when a folder is complete.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from reg2rg_lib.errors import BadInputError, KitError
from reg2rg_lib.io import atomic_path, write_json_atomic
from reg2rg_lib.model import Reg2RG
from reg2rg_lib.samples.vision_inputs import vision_inputs

VISION_FIELDS = (
    "image_size",
    "in_channels",
    "vit_patch",
    "vit_dim",
    "vit_depth",
    "vit_heads",
    "vit_dim_head",
    "vit_mlp",
    "vit_pos_rows",
    "use_global",
    "use_texture",
    "decoupled",
)


def encoder_key(
    model: Any, prep_params: dict[str, Any] | None = None, dtype: torch.dtype = torch.float32
) -> str:
    """A 16-hex-digit key for the frozen encoder's outputs (weights + config + input mode + prep + dtype)."""
    h = hashlib.sha256()
    cfg = model.config
    h.update(json.dumps({f: getattr(cfg, f) for f in VISION_FIELDS}, sort_keys=True, default=str).encode())
    h.update(json.dumps(prep_params or {}, sort_keys=True, default=str).encode())
    h.update(str(dtype).encode())
    for name, t in sorted(model.embedding_layer.vision_encoder.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class FeatureCache:
    """The frozen ViT's features for the cases of one prep cache.

    `get` reads a case's file on first use and keeps it in memory when the whole set fits in `memory_budget`
    bytes (the CPU profiles: tens of MB); the paper's sizes (~17 MB per case in bf16) are read from disk per
    use.
    """

    def __init__(self, root: str | os.PathLike[str], key: str, memory_budget: int = 2 << 30) -> None:
        self.folder = Path(root) / key
        self.key = key
        self.memory_budget = memory_budget
        self.keep_in_memory = True
        self.computed = 0  # cases whose features the last `build` computed (the rest were reused)
        self._mem: dict[str, dict[str, torch.Tensor]] = {}

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.safetensors"

    def build(self, model: Any, cache: Any, names: Iterable[str], batch_size: int = 8, progress: bool = True,
              dtype: torch.dtype = torch.float32) -> FeatureCache:
        """Compute and write the features of the cases that have none (or stale ones), in batches of
        images."""
        names = list(names)
        todo = [n for n in names if self._stale(n, cache)]
        if todo:
            self.folder.mkdir(parents=True, exist_ok=True)
            device = model.device
            for name in tqdm(todo, desc="ViT features", disable=not progress, dynamic_ncols=True):
                vis = vision_inputs(cache.load(name), model.config)
                out: dict[str, torch.Tensor] = {}
                for src, dst in (("global_images", "global_feats"), ("region_images", "region_feats")):
                    x = vis.get(src)
                    if x is None:
                        continue
                    parts = [model.encode_vision(x[i : i + batch_size].to(device))
                             for i in range(0, len(x), batch_size)]
                    out[dst] = torch.cat(parts).to("cpu", dtype).contiguous()  # (N, T, vit_dim)
                with atomic_path(self.path(name), suffix=".safetensors") as tmp:
                    save_file(out, str(tmp), metadata={"source": source_fingerprint(cache, name)})
                self._mem.pop(name, None)
        self.computed = len(todo)
        if names:
            self.keep_in_memory = self.path(names[0]).stat().st_size * len(names) <= self.memory_budget
        write_json_atomic(self.folder / "manifest.json", {"key": self.key, "cases": len(list(self.folder.glob(
            "*.safetensors")))})
        return self

    def _stale(self, name: str, cache: Any) -> bool:
        """True when the case's features are missing or were computed from another version of its prep
        file."""
        path = self.path(name)
        if not path.is_file():
            return True
        try:
            with safe_open(str(path), framework="pt") as f:
                return (f.metadata() or {}).get("source") != source_fingerprint(cache, name)
        except Exception:  # unreadable: recompute it
            return True

    def get(self, name: str) -> dict[str, torch.Tensor]:
        """{"global_feats": (1, T, vit_dim), "region_feats": (R, T, vit_dim)} (keys the config does not use
        absent)."""
        if name in self._mem:
            return self._mem[name]
        path = self.path(name)
        if not path.is_file():
            raise KitError(f"case {name!r} is not in the ViT feature cache {self.folder}; build() it first")
        try:
            feats = load_file(str(path))
        except Exception as err:  # a damaged file names itself; delete it and it is rebuilt
            raise BadInputError(
                path, f"unreadable ViT feature file ({err}); delete it to recompute"
            ) from None
        if self.keep_in_memory:
            self._mem[name] = feats
        return feats


def source_fingerprint(cache: Any, name: str) -> str:
    """What identifies the case's prep tensors: the prep manifest's `source_key` (inputs + parameters) and the
    cached file's size, so a re-prepared case gets new features even when the parameters did not change."""
    entry = next((c for c in getattr(cache, "manifest", {}).get("cases", []) if c.get("name") == name), {})
    path = Path(cache.root) / entry.get("file", f"cases/{name}.safetensors")
    try:
        size = path.stat().st_size
    except OSError:
        size = -1
    return f"{entry.get('source_key', '')}:{size}"


def feature_statistics(features: FeatureCache, names: Iterable[str]
                       ) -> dict[str, tuple[torch.Tensor, torch.Tensor, int]]:
    """Per feature key ("global_feats", "region_feats"): the mean and standard deviation of each dimension
    over every token of every image of the cases `names` (float64 sums, returned as float32), and the number
    of tokens counted: what `vision_standardize` centres and scales the frozen ViT's output by (one map for
    every organ, so the organ stays recognisable from the features). A key no case has is absent."""
    sums: dict[str, list[Any]] = {}
    for name in names:
        for key, value in features.get(name).items():
            x = value.reshape(-1, value.shape[-1]).double()
            acc = sums.setdefault(key, [0, 0.0, 0.0])
            acc[0] += x.shape[0]
            acc[1] = acc[1] + x.sum(0)
            acc[2] = acc[2] + (x * x).sum(0)
    out = {}
    for key, (n, total, squares) in sums.items():
        if n < 2:
            raise KitError(f"vision_standardize: {n} {key} token(s) in the train split, too few for "
                           "statistics")
        mean = total / n
        var = (squares - n * mean * mean).clamp_min(0.0) / (n - 1)
        out[key] = (mean.float(), var.sqrt().float(), int(n))
    return out


def set_train_statistics(model: Reg2RG, features: FeatureCache, names: Iterable[str]
                         ) -> dict[str, tuple[torch.Tensor, torch.Tensor, int]] | None:
    """`vision_standardize`: set `model`'s feature statistics from the cases `names` of `features` (a
    `FeatureCache`, or any mapping name -> {key: features}; `feature_statistics`) and return them; None, and
    nothing set, when the model does not standardise. `train_run` passes the train split, the training
    benches theirs, notebook 02 one random batch."""
    if not model.config.vision_standardize:
        return None
    stats = feature_statistics(features, names)
    model.embedding_layer.set_feature_statistics(stats)
    return stats


def use_feature_cache(model: Reg2RG, setting: bool | None) -> bool:
    """Whether `model` is fed cached ViT features instead of running its ViT: never without a ViT; `setting`
    None (the default of `reg2rg train` and the profiles): exactly when the ViT is frozen; else `setting`.

    The one decision for training (`train_run`), generation (`generate_run`) and the benchmarks."""
    has_vit = model.embedding_layer.vision_encoder is not None
    return has_vit and (model.config.freeze_vision if setting is None else bool(setting))


def feature_cache_for(model: Any, cache: Any, names: Iterable[str], progress: bool = True,
                      dtype: torch.dtype = torch.float32) -> FeatureCache:
    """Open (building what is missing) the feature cache of `model`'s frozen ViT over the prep `cache`."""
    key = encoder_key(model, getattr(cache, "params", None), dtype)
    root = Path(cache.root) / "vit_features"
    return FeatureCache(root, key).build(model, cache, names, progress=progress, dtype=dtype)
