"""Checkpoints: our own `save_pretrained`/`from_pretrained` folders, and the official / RadFM weights.

Our folder: `config.json` (Reg2RGConfig), `tokenizer/` (HF tokenizer with the Reg2RG tokens), `model.safetensors`
(every trainable tensor + frozen tensors that cannot be re-read from elsewhere, i.e. random-init parts; frozen
pretrained parts, the LLM from `llm_path` and the ViT from `vision_checkpoint`, are re-loaded from their source).

Official Reg2RG whole-model checkpoint -> this model (`load_official_checkpoint`), the documented key mapping:

    embedding_layer.weight                 -> rows [:V] of the LLM input embedding table (V = base vocabulary)
    embedding_layer.<name>                 -> embedding_layer.<name>   (same names and shapes; `official_key_shapes`)
    lang_model.<key>                       -> lang_model.<key>, matched after normalising peft naming on both sides:
        "base_model.model." prefix, ".base_layer" (peft >= 0.7) and the ".default" adapter name are ignored;
        embed_tokens / lm_head with fewer rows than ours (our table is resized for the added tokens) fill rows [:n]

RadFM: `RadFM_vit3d.pth` loads strictly into `embedding_layer.vision_encoder`; `RadFM_perceiver_fc.pth["perceiver"]`
strictly into `embedding_layer.perceiver` (its `fc` targets a 5120-wide LLM and is not used).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from reg2rg_lib.errors import BadInputError, KitError
from reg2rg_lib.io import atomic_path
from reg2rg_lib.model.config import Reg2RGConfig

CONFIG_NAME, WEIGHTS_NAME, TOKENIZER_DIR = "config.json", "model.safetensors", "tokenizer"

#: Facts of the official layout (`../shared/reference/reg2rg_checkpoint_layout.json`), kept here so that the paper
#: preset can be checked where that file is absent: parameter counts, and the number and sha256 of the
#: `json.dumps` of the ordered {name: shape} dict of the embedding layer (incl. `weight` [32000, 4096]).
PAPER_PARAMETER_COUNTS: dict[str, int] = {
    "vision_encoder": 66_208_000, "mask_encoder": 6_569_359, "perceiver": 37_802_496, "fc": 3_149_824,
    "mask_fc": 1_048_576, "lora": 4_194_304,
}
PAPER_OFFICIAL_KEY_COUNT = 259
PAPER_OFFICIAL_KEYS_SHA256 = "255caf26f289ff6f49d6d2c0078cd0188a89b6b4c8f3f26bdbd5bdd0b627274b"


@dataclass
class LoadReport:
    """What `load_official_checkpoint` did: keys loaded, own keys left untouched, checkpoint keys not used."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    partial_rows: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"loaded {len(self.loaded)} tensors ({len(self.partial_rows)} into the first rows of a larger "
                f"table), {len(self.missing)} own tensors not in the checkpoint, {len(self.unexpected)} checkpoint "
                "tensors unused")


# ---- the official naming ----------------------------------------------------------------------------------------
def official_key_shapes(cfg: Reg2RGConfig, base_vocab: int | None = None,
                        llm_dim: int | None = None) -> dict[str, list[int]]:
    """Names and shapes of the official embedding layer for `cfg` (keys without the `embedding_layer.` prefix).

    `weight` is the LLM's input table over the base vocabulary (`base_vocab`, default `cfg.llm_vocab`); the rest
    are this kit's `embedding_layer` tensors, whose names are the official ones. Built on the meta device.
    """
    from reg2rg_lib.model.reg2rg import Reg2RGEmbedding

    dim = llm_dim or cfg.llm_hidden
    with torch.device("meta"):
        layer = Reg2RGEmbedding(cfg, dim)
    shapes = {"weight": [base_vocab or cfg.llm_vocab, dim]}
    shapes.update({k: list(v.shape) for k, v in layer.state_dict().items()})
    return shapes


def _read_state_dict(source) -> Mapping[str, torch.Tensor]:
    """A state dict from a mapping, a .safetensors file or a torch .pth/.bin/.pt (tensors only, no pickled code)."""
    if isinstance(source, Mapping):
        return source
    path = Path(source)
    if not path.is_file():
        raise BadInputError(path, "checkpoint file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

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


_PEFT_NOISE = re.compile(r"(?<=^lang_model\.)base_model\.model\.|\.base_layer(?=\.)|\.default(?=\.)")


def _canonical_lang_key(key: str) -> str:
    """`lang_model.` key with peft's wrapper prefix, `.base_layer` and `.default` removed."""
    return _PEFT_NOISE.sub("", key)


def load_official_checkpoint(model, source, strict: bool = False) -> LoadReport:
    """Load the official Reg2RG whole-model checkpoint (path or state dict) into `model` (see module docstring).

    Shape mismatches are errors (naming the key); with `strict`, missing or unused keys are errors too.
    """
    state = _read_state_dict(source)
    where = source if not isinstance(source, Mapping) else "state dict"
    own = model.state_dict()
    lang_index = {_canonical_lang_key(k): k for k in own if k.startswith("lang_model.")}
    embed_key = next(k for k in own if k.startswith("lang_model.") and k.endswith("embed_tokens.weight"))
    report = LoadReport()
    touched: set[str] = set()
    with torch.no_grad():
        # the official input table (`embedding_layer.weight`) goes last: it wins over lang_model's own copy
        for key, tensor in sorted(state.items(), key=lambda kv: kv[0] == "embedding_layer.weight"):
            if key == "embedding_layer.weight":
                target = embed_key
            elif key.startswith("embedding_layer."):
                target = key if key in own else None
            elif key.startswith("lang_model."):
                target = lang_index.get(_canonical_lang_key(key))
            else:
                target = None
            if target is None:
                report.unexpected.append(key)
                continue
            dest = own[target]
            if tuple(dest.shape) != tuple(tensor.shape):
                grows = (dest.dim() == 2 and tensor.dim() == 2 and dest.shape[1] == tensor.shape[1]
                         and tensor.shape[0] < dest.shape[0] and target.endswith(("embed_tokens.weight",
                                                                                  "lm_head.weight")))
                if not grows:
                    raise BadInputError(where, f"{key}: shape {list(tensor.shape)} does not fit {target} "
                                               f"{list(dest.shape)}")
                dest[: tensor.shape[0]].copy_(tensor)
                report.partial_rows.append(key)
            else:
                dest.copy_(tensor)
            report.loaded.append(key)
            touched.add(target)
    report.missing = [k for k in own if k not in touched]
    if strict and (report.unexpected or report.missing):
        raise BadInputError(where, f"strict load: {len(report.missing)} missing (e.g. {report.missing[:3]}), "
                                   f"{len(report.unexpected)} unused (e.g. {report.unexpected[:3]})")
    return report


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
    _load_strict(model.embedding_layer.vision_encoder, _read_state_dict(path), path, "vision encoder")


def load_radfm_perceiver(model, path) -> None:
    """RadFM's `RadFM_perceiver_fc.pth` (a dict with a 'perceiver' entry) -> `embedding_layer.perceiver`."""
    obj = _read_state_dict(path)
    state = obj["perceiver"] if isinstance(obj.get("perceiver"), Mapping) else obj
    _load_strict(model.embedding_layer.perceiver, state, path, "perceiver")


# ---- our own folders ---------------------------------------------------------------------------------------------
def _restorable_elsewhere(name: str, cfg: Reg2RGConfig) -> bool:
    """True for frozen weights that `Reg2RG(cfg, ...)` re-reads from a pretrained source."""
    if cfg.llm_path and name.startswith("lang_model.") and "lora_" not in name:
        return True
    return bool(cfg.vision_checkpoint) and name.startswith("embedding_layer.vision_encoder.")


def save_pretrained(model, out_dir: str | os.PathLike[str]) -> Path:
    """Write config.json, tokenizer/ and model.safetensors into `out_dir` (each file atomically, weights last)."""
    from safetensors.torch import save_file

    from reg2rg_lib.model.tokenizer import save_tokenizer

    if model.device.type == "meta":
        raise KitError("cannot save a model built on the meta device (it has no weights)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.config.save(out / CONFIG_NAME)
    save_tokenizer(model.tokenizer, out / TOKENIZER_DIR)
    tensors = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters()
               if p.requires_grad or not _restorable_elsewhere(n, model.config)}
    with atomic_path(out / WEIGHTS_NAME, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "writer": "reg2rg-kit"})
    return out


def from_pretrained(path: str | os.PathLike[str], device: str | torch.device | None = None):
    """Rebuild a `Reg2RG` from a `save_pretrained` folder; every saved tensor must fit (else a one-line error)."""
    from safetensors.torch import load_file

    from reg2rg_lib.model.reg2rg import Reg2RG
    from reg2rg_lib.model.tokenizer import load_tokenizer

    root = Path(path)
    for name in (CONFIG_NAME, WEIGHTS_NAME, TOKENIZER_DIR):
        if not (root / name).exists():
            raise BadInputError(root, f"not a Reg2RG checkpoint folder ({name} missing)")
    cfg = Reg2RGConfig.load(root / CONFIG_NAME)
    model = Reg2RG(cfg, load_tokenizer(root / TOKENIZER_DIR))
    try:
        state = load_file(root / WEIGHTS_NAME)
    except Exception as err:
        raise BadInputError(root / WEIGHTS_NAME, f"cannot read the weights ({err})") from None
    own = model.state_dict()
    for key, tensor in state.items():
        if key not in own or own[key].shape != tensor.shape:
            found = list(own[key].shape) if key in own else "absent"
            raise BadInputError(root / WEIGHTS_NAME, f"{key} {list(tensor.shape)} does not fit the model ({found})")
    model.load_state_dict(state, strict=False)
    return model.to(device) if device is not None else model
