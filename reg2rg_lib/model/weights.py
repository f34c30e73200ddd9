"""Weights on disk: the kit's own `save_pretrained` folders and RadFM's pretrained ViT3D / Perceiver files.

Our folder (`paths.ModelFolder`), in the formats transformers and peft users already load:

    config.json        the Reg2RGConfig
    tokenizer/         the HF tokenizer with the Reg2RG tokens
    embedding_layer/   the visual side (encoders, Perceiver, fc, mask_fc, structure tokens): config.json (the
                       Reg2RGConfig and `llm_dim`) + model.safetensors (keys relative to `embedding_layer`)
    llm/               the LLM as a transformers folder (`save_pretrained`), written when its weights cannot
                       be re-read from `llm_path`: a randomly initialised (scratch) LLM, or one trained in
                       full. With LoRA it is the frozen base without the adapter
    llm_adapter/       with LoRA: the adapter, written by peft's own `PeftModel.save_pretrained`

Frozen pretrained parts are not rewritten: the LLM from `llm_path` and RadFM's ViT from `vision_checkpoint`
are re-read from their source. Load the LLM with peft alone::

    base = AutoModelForCausalLM.from_pretrained(folder / "llm")      # or the `llm_path` model, see below
    llm = PeftModel.from_pretrained(base, folder / "llm_adapter").merge_and_unload()

Why a scratch LLM's base is saved rather than rebuilt: a peft user expects a base folder to load, and a random
initialisation is only reproducible with the kit's code and the same torch version. The adapter's
`base_model_name_or_path` is then `"llm"`, relative to the model folder: a checkpoint is written into a
temporary folder and renamed into place, and folders are moved and shared, so an absolute path would go stale
(from the model folder as working directory `AutoPeftModelForCausalLM.from_pretrained("llm_adapter")` works).
For a pretrained LLM it is the path peft recorded (`llm_path` resolved, e.g. the converted SmolLM2 folder);
the kit added rows to that model's token table for its own tokens, so call `torch.manual_seed(cfg.seed)` and
`base.resize_token_embeddings(len(tokenizer))` (mean resizing, as `Reg2RG` does) before loading the adapter.

`Reg2RG.from_pretrained` loads these folders through the same files (the adapter through peft's
`set_peft_model_state_dict`) and also the kit's older layout, where one `model.safetensors` held every saved
tensor under the model's own names. Why not `PyTorchModelHubMixin`: it would save the whole state dict (a
frozen 90M RadFM ViT and a 7B LLM at every checkpoint), and its config cannot carry the tokenizer or the LLM.

RadFM: `RadFM_vit3d.pth` loads strictly into `embedding_layer.vision_encoder`;
`RadFM_perceiver_fc.pth["perceiver"]` strictly into `embedding_layer.perceiver` (its `fc` targets a 5120-wide
LLM and is not used). Nothing here unpickles code: torch files are read with `weights_only=True`.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from reg2rg_lib.errors import BadInputError, KitError
from reg2rg_lib.io import atomic_dir, atomic_path, write_json_atomic
from reg2rg_lib.model.config import Reg2RGConfig
from reg2rg_lib.model.llm import base_llm
from reg2rg_lib.model.tokenizer import load_tokenizer, save_tokenizer
from reg2rg_lib.paths import EMBEDDING_CONFIG, EMBEDDING_WEIGHTS, ModelFolder

#: peft's file names inside `llm_adapter/` (what `PeftModel.from_pretrained` reads)
ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
#: The adapter's `base_model_name_or_path` for a scratch LLM: `llm/`, relative to the model folder (module
#: docstring)
SCRATCH_BASE_NAME = "llm"
# pretrained vision encoders up to this size are saved inside the folder
INLINE_VISION_MAX_PARAMS = 20_000_000


def read_state_dict(source) -> Mapping[str, torch.Tensor]:
    """A state dict from a mapping, a .safetensors file or a torch .pth/.bin/.pt (tensors only, no pickled
    code)."""
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


# ---- our own folders ---------------------------------------------------------------------------------------
def _restorable_elsewhere(name: str, cfg: Reg2RGConfig) -> bool:
    """True for frozen `embedding_layer` weights that `Reg2RG(cfg, ...)` re-reads from a pretrained source
    (the ViT from `vision_checkpoint`; the LLM's are handled by `_llm_is_saved`)."""
    return bool(cfg.vision_checkpoint) and name.startswith("vision_encoder.")


def _saved_config(model) -> Reg2RGConfig:
    """The config a folder records. A pretrained vision encoder small enough to carry (the CPU presets' ViT
    from `reg2rg pretrain-vision`) is saved with the folder, so that a rerun of pretraining never changes a
    trained model; its source path is kept in `extra`. RadFM's ViT (~90M parameters) stays a reference to its
    file."""
    cfg = model.config
    encoder = model.embedding_layer.vision_encoder
    if not cfg.vision_checkpoint or encoder is None:
        return cfg
    if sum(p.numel() for p in encoder.parameters()) > INLINE_VISION_MAX_PARAMS:
        return cfg
    return cfg.replace(
        vision_checkpoint=None, extra={**cfg.extra, "vision_pretrained_from": cfg.vision_checkpoint}
    )


def _is_peft(lang_model) -> bool:
    return hasattr(lang_model, "peft_config")


def _llm_is_saved(model, cfg: Reg2RGConfig) -> bool:
    """Whether `llm/` is written: the LLM's own weights cannot be re-read from `llm_path` (scratch, or
    trained)."""
    return not cfg.llm_path or any(
        p.requires_grad for n, p in model.lang_model.named_parameters() if "lora_" not in n
    )


def save_pretrained(model, out_dir: str | os.PathLike[str]) -> Path:
    """Write the model folder (module docstring) into `out_dir`; each file or subfolder appears whole (written
    aside, then renamed). Parts of the layout this model does not write (e.g. an `llm_adapter/` of an earlier
    save into the same folder, or an older layout's model.safetensors) are removed, so the folder holds one
    model."""
    if model.device.type == "meta":
        raise KitError("cannot save a model built on the meta device (it has no weights)")
    folder = ModelFolder(out_dir)
    folder.root.mkdir(parents=True, exist_ok=True)
    cfg = _saved_config(model)
    cfg.save(folder.config)
    save_tokenizer(model.tokenizer, folder.tokenizer)
    embedding = {n: p.detach().cpu().contiguous() for n, p in model.embedding_layer.named_parameters()
                 if p.requires_grad or not _restorable_elsewhere(n, cfg)}
    # `vision_standardize`'s train-split statistics (buffers: computed, not trained)
    embedding.update({n: b.detach().cpu().contiguous() for n, b in model.embedding_layer.named_buffers()
                      if n.startswith("feature_")})
    with atomic_dir(folder.embedding) as tmp:
        write_json_atomic(tmp / EMBEDDING_CONFIG, {"llm_dim": model.llm_dim, "reg2rg_config": cfg.to_dict()})
        save_file(embedding, str(tmp / EMBEDDING_WEIGHTS), metadata={"format": "pt"})
    stale = [folder.legacy_weights]
    reference = getattr(model, "reference_inputs", None)
    if reference:
        with atomic_path(folder.reference) as tmp:
            save_file({k: v.contiguous() for k, v in reference.items()}, str(tmp), metadata={"format": "pt"})
    else:
        stale.append(folder.reference)
    if _llm_is_saved(model, cfg):
        _save_llm(model.lang_model, folder.llm)
    else:
        stale.append(folder.llm)
    if _is_peft(model.lang_model):
        _save_adapter(model.lang_model, cfg, folder.adapter)
    else:
        stale.append(folder.adapter)
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    return folder.root


def _save_llm(lang_model, dest: Path) -> None:
    """The LLM as a transformers folder; under peft, the base weights only, under the base model's own
    names."""
    llm = base_llm(lang_model)
    state = {k.replace(".base_layer.", "."): v for k, v in llm.state_dict().items() if "lora_" not in k}
    with atomic_dir(dest) as tmp, _quiet_transformers():
        llm.save_pretrained(tmp, state_dict=state)


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No transformers progress bar (one per shard, at every checkpoint of a training log) inside the
    block."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def _save_adapter(lang_model, cfg: Reg2RGConfig, dest: Path) -> None:
    """The LoRA adapter with peft's `save_pretrained` (no embedding tables: the kit rebuilds the added
    rows)."""
    peft_cfg = lang_model.peft_config["default"]
    recorded = peft_cfg.base_model_name_or_path
    if not cfg.llm_path:
        peft_cfg.base_model_name_or_path = SCRATCH_BASE_NAME
    try:
        with atomic_dir(dest) as tmp:
            # save_embedding_layers=False: "auto" would look the base up (on the Hub for a name) to compare
            # vocabularies
            lang_model.save_pretrained(str(tmp), save_embedding_layers=False)
    finally:
        peft_cfg.base_model_name_or_path = recorded


def _require(root: Path, paths: list[Path]) -> None:
    for path in paths:
        if not path.exists():
            raise BadInputError(root, f"not a Reg2RG checkpoint folder ({path.relative_to(root)} missing)")


def is_legacy_folder(path: str | os.PathLike[str]) -> bool:
    """True for a folder in the kit's older layout (one model.safetensors, no embedding_layer/)."""
    folder = ModelFolder(path)
    return not folder.embedding.exists() and folder.legacy_weights.exists()


def read_pretrained(path: str | os.PathLike[str]) -> tuple[Reg2RGConfig, Any, dict[str, torch.Tensor], Path]:
    """(config, tokenizer, saved tensors, weights file) of a `save_pretrained` folder (else a one-line error).

    The tensors are named as in the model: `embedding_layer.*` from embedding_layer/ (the LLM's parts are read
    by `read_llm` and `load_adapter`), or every tensor of an older folder's model.safetensors."""
    folder = ModelFolder(path)
    root = folder.root
    _require(root, [folder.config, folder.tokenizer])
    legacy = is_legacy_folder(root)
    weights = folder.legacy_weights if legacy else folder.embedding / EMBEDDING_WEIGHTS
    _require(root, [weights])
    cfg = Reg2RGConfig.load(folder.config)
    if not legacy:
        # llm/ holds what llm_path cannot give: a scratch LLM, or the weights of one trained in full
        needed = [folder.llm / "config.json"] if not cfg.llm_path or cfg.llm_finetune == "full" else []
        if cfg.llm_finetune == "lora":
            needed += [folder.adapter / ADAPTER_CONFIG, folder.adapter / ADAPTER_WEIGHTS]
        _require(root, needed)
    tokenizer = load_tokenizer(folder.tokenizer)
    try:
        state = load_file(weights)
    except Exception as err:
        raise BadInputError(weights, f"cannot read the weights ({err})") from None
    if not legacy:
        state = {f"embedding_layer.{k}": v for k, v in state.items()}
    return cfg, tokenizer, state, weights


def read_llm(path: str | os.PathLike[str]):
    """The LLM saved in the folder's `llm/` (a transformers model), or None where the folder has none."""
    folder = ModelFolder(path)
    if not folder.llm.is_dir():
        return None
    # transformers: slow to import (~10 s); only a saved LLM needs it here
    from transformers import AutoModelForCausalLM

    try:
        with _quiet_transformers():
            return AutoModelForCausalLM.from_pretrained(folder.llm, dtype="auto")
    except (OSError, ValueError) as err:
        raise BadInputError(folder.llm, f"cannot load the LLM ({str(err).splitlines()[0]})") from None


def load_adapter(model, path: str | os.PathLike[str]) -> None:
    """Load the folder's `llm_adapter/` into the model's peft-wrapped LLM (peft's
    `set_peft_model_state_dict`); the adapter's rank, alpha, targets and tensors must be the model's (else a
    one-line error)."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    adapter = ModelFolder(path).adapter
    if not _is_peft(model.lang_model):
        raise BadInputError(
            adapter, f"a LoRA adapter, but the config says llm_finetune={model.config.llm_finetune}"
        )
    saved_cfg = _read_json(adapter / ADAPTER_CONFIG)
    cfg = model.config
    ours = {"r": cfg.lora_r, "lora_alpha": cfg.lora_alpha, "target_modules": sorted(cfg.lora_targets)}
    theirs = {k: sorted(v) if isinstance(v, list) else v for k, v in saved_cfg.items() if k in ours}
    differ = [
        f"{k}={theirs.get(k)!r} there, {v!r} in config.json" for k, v in ours.items() if theirs.get(k) != v
    ]
    if differ:
        raise BadInputError(adapter / ADAPTER_CONFIG, f"another LoRA than the model's: {'; '.join(differ)}")
    try:
        state = load_file(adapter / ADAPTER_WEIGHTS)
    except Exception as err:
        raise BadInputError(adapter / ADAPTER_WEIGHTS, f"cannot read the adapter ({err})") from None
    expected = get_peft_model_state_dict(model.lang_model, save_embedding_layers=False)
    wrong = sorted(set(state) ^ set(expected)) or [k for k in state if state[k].shape != expected[k].shape]
    if wrong:
        raise BadInputError(adapter / ADAPTER_WEIGHTS, f"does not fit the model's LoRA ({wrong[0]})")
    set_peft_model_state_dict(model.lang_model, state)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise BadInputError(path, f"cannot read it ({err})") from None


def load_saved_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor], where: Path) -> None:
    """Load saved tensors into a freshly built model; every tensor must fit (else a one-line error naming
    it)."""
    own = model.state_dict()
    for key, tensor in state.items():
        if key not in own or own[key].shape != tensor.shape:
            found = list(own[key].shape) if key in own else "absent"
            raise BadInputError(where, f"{key} {list(tensor.shape)} does not fit the model ({found})")
    model.load_state_dict(state, strict=False)


def read_reference(path: str | os.PathLike[str]) -> dict[str, torch.Tensor] | None:
    """The model folder's reference inputs (`samples.reference`), None where it has none."""
    file = ModelFolder(path).reference
    if not file.is_file():
        return None
    try:
        return load_file(str(file))
    except Exception as err:
        raise BadInputError(file, f"unreadable reference inputs ({err}); delete it to recompute") from None
