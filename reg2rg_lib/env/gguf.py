"""GGUF -> a transformers folder (safetensors + tokenizer), done once when the pretrained LLM asset is
fetched.

transformers reads a GGUF file (`from_pretrained(dir, gguf_file=...)`, with the `gguf` package) by
de-quantizing every tensor to float32, but refuses to `save_pretrained` the result (it still carries the GGUF
quantization config). So the weights are copied into a plain model of the same architecture (every key must
match) and that model is saved. Storage is float16 (half the size of float32): Q4_1 weights are 4-bit steps of
an fp16 scale plus an fp16 minimum, so fp16 keeps them to a relative error of ~4e-4, and the folder is loaded
back in float32 (`LLM_LOAD_DTYPE`). Measured 2026-12-02 (benchmarks/RESULTS.md): the same greedy tokens as the
GGUF model, where bfloat16 storage changed one of three 40-token continuations.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

from reg2rg_lib.errors import KitError

logger = logging.getLogger(__name__)

#: How the converted weights are stored, and how they are loaded for compute (torch dtype names: torch is
#: imported where used, so `reg2rg --help` and the doctor stay fast).
STORE_DTYPE = "float16"
LLM_LOAD_DTYPE = "float32"


def load_gguf(gguf_file: Path) -> tuple[Any, Any]:
    """(model, tokenizer) of a GGUF file, de-quantized to float32 by transformers."""
    # torch, transformers: slow to import (~10 s); only the conversion needs them
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_file.parent), gguf_file.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except (OSError, ValueError, ImportError) as err:
        raise KitError(f"{gguf_file}: transformers cannot read this GGUF file ({str(err).splitlines()[0]}); "
                       "is the `gguf` package installed (pip install 'gguf>=0.10')?") from None
    return model.eval(), tokenizer


def convert_gguf(gguf_file: Path, out_dir: Path) -> dict[str, Any]:
    """Write `out_dir` (config.json, model.safetensors, generation_config.json, tokenizer files) from a GGUF
    file; returns what was done (architecture, tensors, parameter count, dtypes) for the provenance record."""
    # torch, transformers: slow to import (~10 s); only the conversion needs them
    import torch
    from transformers import AutoModelForCausalLM

    store = getattr(torch, STORE_DTYPE)
    quantized, tokenizer = load_gguf(gguf_file)
    config = copy.deepcopy(quantized.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the plain model holds ordinary tensors
    config.dtype = store
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = quantized.state_dict()
    result = plain.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise KitError(f"{gguf_file}: the de-quantized tensors do not fit a plain {config.model_type} model "
                       f"(missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})")
    plain.generation_config = quantized.generation_config
    plain.to(store).save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    logger.info(f"[assets] converted {gguf_file.name} -> {out_dir} ({len(state)} tensors, {STORE_DTYPE})")
    return {
        "from": f"GGUF ({gguf_file.name}), de-quantized to float32 by transformers' GGUF reader",
        "to": "transformers folder: model.safetensors + config.json + tokenizer",
        "architecture": type(plain).__name__,
        "tensors": len(state),
        "parameters": sum(p.numel() for p in plain.parameters()),
        "stored_dtype": STORE_DTYPE,
        "load_dtype": LLM_LOAD_DTYPE,
    }
