"""The LLM wrapper: compiling decoder layers one by one."""

from __future__ import annotations

import pytest
import torch


def test_compile_decoder_layers_wraps_every_layer_and_rejects_other_modules():
    from reg2rg_lib.bench.gpu_step import synthetic_tokenizer
    from reg2rg_lib.errors import BadInputError
    from reg2rg_lib.model import Reg2RG, Reg2RGConfig
    from reg2rg_lib.model.llm import compile_decoder_layers

    cfg = Reg2RGConfig.preset("cpu-tiny")
    model = Reg2RG(cfg, synthetic_tokenizer(cfg.llm_vocab))
    layers = model.llm().model.layers
    assert compile_decoder_layers(model.lang_model) == cfg.llm_layers == len(layers)
    assert all(layer._compiled_call_impl is not None for layer in layers)  # compiled lazily, on first call
    with pytest.raises(BadInputError, match="no `.model.layers`"):
        compile_decoder_layers(torch.nn.Linear(2, 2))
