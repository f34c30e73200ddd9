"""Weights on disk: the kit's own `save_pretrained` folders and RadFM's pretrained ViT3D / Perceiver files.

Our folder: `config.json` (Reg2RGConfig), `tokenizer/` (HF tokenizer with the Reg2RG tokens), `model.safetensors`
(every trainable tensor + frozen tensors that cannot be re-read from elsewhere, i.e. random-init parts; frozen
pretrained parts, the LLM from `llm_path` and the ViT from `vision_checkpoint`, are re-loaded from their source).

RadFM: `RadFM_vit3d.pth` loads strictly into `embedding_layer.vision_encoder`; `RadFM_perceiver_fc.pth["perceiver"]`
strictly into `embedding_layer.perceiver` (its `fc` targets a 5120-wide LLM and is not used).
Nothing here unpickles code: torch files are read with `weights_only=True`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from reg2rg_lib.errors import BadInputError, KitError
from reg2rg_lib.io import atomic_path
from reg2rg_lib.model.config import Reg2RGConfig
from reg2rg_lib.model.tokenizer import load_tokenizer, save_tokenizer

CONFIG_NAME, WEIGHTS_NAME, TOKENIZER_DIR = "config.json", "model.safetensors", "tokenizer"
INLINE_VISION_MAX_PARAMS = 20_000_000  # pretrained vision encoders up to this size are saved inside the folder


def read_state_dict(source) -> Mapping[str, torch.Tensor]:
    """A state dict from a mapping, a .safetensors file or a torch .pth/.bin/.pt (tensors only, no pickled code)."""
    if isinstance(source, Mapping):
        return source
    path = Path(source)
    if not path.is_file():
        raise BadInputError(path, "checkpoint file not found")
    try:
        if path.suffix == ".safetensors":
            return load_file(path)
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt file, unknown format
        raise BadInputError(path, f"cannot read the checkpoint ({type(err).__name__}: {err})") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping):
        raise BadInputError(path, f"expected a state dict, found {type(obj).__name__}")
    return obj


def _load_strict(module, state: Mapping[str, torch.Tensor], path, what: str) -> None:
    if module is None:
        raise KitError(f"{path}: this configuration has no {what} to load into")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise BadInputError(path, f"does not fit the {what}: {' '.join(first[:2])[:300]}") from None


def load_radfm_vision(model, path) -> None:
    """RadFM's `RadFM_vit3d.pth` -> `embedding_layer.vision_encoder` (strict)."""
    _load_strict(model.embedding_layer.vision_encoder, read_state_dict(path), path, "vision encoder")


def load_radfm_perceiver(model, path) -> None:
    """RadFM's `RadFM_perceiver_fc.pth` (a dict with a 'perceiver' entry) -> `embedding_layer.perceiver`."""
    obj = read_state_dict(path)
    state = obj["perceiver"] if isinstance(obj.get("perceiver"), Mapping) else obj
    _load_strict(model.embedding_layer.perceiver, state, path, "perceiver")


# ---- our own folders ---------------------------------------------------------------------------------------------
def _restorable_elsewhere(name: str, cfg: Reg2RGConfig) -> bool:
    """True for frozen weights that `Reg2RG(cfg, ...)` re-reads from a pretrained source."""
    if cfg.llm_path and name.startswith("lang_model.") and "lora_" not in name:
        return True
    return bool(cfg.vision_checkpoint) and name.startswith("embedding_layer.vision_encoder.")


def _saved_config(model) -> Reg2RGConfig:
    """The config a folder records. A pretrained vision encoder small enough to carry (the CPU presets' ViT from
    `reg2rg pretrain-vision`) is saved with the folder, so that a rerun of pretraining never changes a trained
    model; its source path is kept in `extra`. RadFM's ViT (~90M parameters) stays a reference to its file."""
    cfg = model.config
    encoder = model.embedding_layer.vision_encoder
    if not cfg.vision_checkpoint or encoder is None:
        return cfg
    if sum(p.numel() for p in encoder.parameters()) > INLINE_VISION_MAX_PARAMS:
        return cfg
    return cfg.replace(vision_checkpoint=None, extra={**cfg.extra, "vision_pretrained_from": cfg.vision_checkpoint})


def save_pretrained(model, out_dir: str | os.PathLike[str]) -> Path:
    """Write config.json, tokenizer/ and model.safetensors into `out_dir` (each file atomically, weights last)."""
    if model.device.type == "meta":
        raise KitError("cannot save a model built on the meta device (it has no weights)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = _saved_config(model)
    cfg.save(out / CONFIG_NAME)
    save_tokenizer(model.tokenizer, out / TOKENIZER_DIR)
    tensors = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters()
               if p.requires_grad or not _restorable_elsewhere(n, cfg)}
    with atomic_path(out / WEIGHTS_NAME, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})  # one key: safetensors writes several in hash order
    return out


def read_pretrained(path: str | os.PathLike[str]) -> tuple[Reg2RGConfig, Any, dict[str, torch.Tensor], Path]:
    """(config, tokenizer, saved tensors, weights file) of a `save_pretrained` folder (else a one-line error)."""
    root = Path(path)
    for name in (CONFIG_NAME, WEIGHTS_NAME, TOKENIZER_DIR):
        if not (root / name).exists():
            raise BadInputError(root, f"not a Reg2RG checkpoint folder ({name} missing)")
    cfg = Reg2RGConfig.load(root / CONFIG_NAME)
    tokenizer = load_tokenizer(root / TOKENIZER_DIR)
    try:
        state = load_file(root / WEIGHTS_NAME)
    except Exception as err:
        raise BadInputError(root / WEIGHTS_NAME, f"cannot read the weights ({err})") from None
    return cfg, tokenizer, state, root / WEIGHTS_NAME


def load_saved_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor], where: Path) -> None:
    """Load saved tensors into a freshly built model; every tensor must fit (else a one-line error naming it)."""
    own = model.state_dict()
    for key, tensor in state.items():
        if key not in own or own[key].shape != tensor.shape:
            found = list(own[key].shape) if key in own else "absent"
            raise BadInputError(where, f"{key} {list(tensor.shape)} does not fit the model ({found})")
    model.load_state_dict(state, strict=False)
