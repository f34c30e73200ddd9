"""The language model: any HF causal LM by path, or a LLaMA-architecture model built from the config (random
init, for CPUs and for inspecting the paper's shapes on the meta device); then LoRA / full / frozen
fine-tuning.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from reg2rg_lib.env.assets import resolve_llm_path
from reg2rg_lib.errors import BadInputError
from reg2rg_lib.model.config import Reg2RGConfig


def llama_config(cfg: Reg2RGConfig, vocab_size: int, tokenizer=None):
    """A `LlamaConfig` with the config's LLM sizes and `vocab_size` rows."""
    # transformers: slow to import (~10 s); only a real LLM needs it
    from transformers import LlamaConfig

    ids = {}
    if tokenizer is not None:
        ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                   pad_token_id=tokenizer.pad_token_id)
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.llm_hidden,
        intermediate_size=cfg.llm_intermediate,
        num_hidden_layers=cfg.llm_layers,
        num_attention_heads=cfg.llm_heads,
        num_key_value_heads=cfg.llm_kv_heads,
        max_position_embeddings=cfg.llm_max_positions,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        **ids,
    )


def build_llm(cfg: Reg2RGConfig, tokenizer=None, device: str | torch.device | None = None) -> nn.Module:
    """The bare causal LM: loaded from `cfg.llm_path` (pretrained) or built from the config (random init).

    `llm_path` may also be a symbolic name of a fetched asset (`smollm2`: SmolLM2-135M-Instruct, converted by
    `reg2rg assets fetch`, loaded in float32). On `device="meta"` nothing is allocated (`llm_path` is then
    ignored: the shapes come from the config). The
    vocabulary is the tokenizer's base vocabulary when known (`cfg.llm_vocab` otherwise); the caller resizes
    it to fit the added Reg2RG tokens.
    """
    # transformers: slow to import (~10 s); only a real LLM needs it
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    meta = device is not None and torch.device(device).type == "meta"
    if cfg.llm_path and not meta:
        # "smollm2": the converted asset folder (else a KitError)
        path, dtype = resolve_llm_path(cfg.llm_path)
        try:
            return AutoModelForCausalLM.from_pretrained(
                path, dtype=dtype if dtype == "auto" else getattr(torch, dtype)
            )
        except (OSError, ValueError) as err:
            raise BadInputError(cfg.llm_path, f"cannot load the LLM ({str(err).splitlines()[0]})") from None
    vocab = len(tokenizer) if tokenizer is not None else cfg.llm_vocab
    config = llama_config(cfg, vocab, tokenizer)
    if meta:
        with torch.device("meta"):
            return LlamaForCausalLM(config)
    torch.manual_seed(cfg.seed)
    return LlamaForCausalLM(config)


def set_gradient_checkpointing(llm: nn.Module, on: bool) -> None:
    """Recompute the LLM's activations in backward (`on`) or keep them; non-reentrant, under either name that
    transformers has used for the switch (`activation_checkpointing_*` from 5.x,
    `gradient_checkpointing_*`)."""
    new_api = hasattr(llm, "activation_checkpointing_enable")
    if on and new_api:
        llm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    elif on:
        llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    elif new_api:
        llm.activation_checkpointing_disable()
    else:
        llm.gradient_checkpointing_disable()


def apply_finetuning(llm: nn.Module, cfg: Reg2RGConfig) -> nn.Module:
    """Freeze / LoRA-wrap the LLM as `cfg.llm_finetune` says; returns the (possibly peft-wrapped) model.

    lora: the base model is frozen and LoRA adapters (r, alpha, dropout, target modules from the config) are
    the only trainable LLM weights (4,194,304 on LLaMA-2-7B with r=8 on q_proj/v_proj). full: every LLM weight
    trains (a random-init CPU LLM has nothing pretrained to preserve). frozen: nothing in the LLM trains.
    """
    if cfg.gradient_checkpointing:
        set_gradient_checkpointing(llm, True)
    if cfg.llm_finetune == "full":
        llm.requires_grad_(True)
        return llm
    llm.requires_grad_(False)
    if cfg.llm_finetune == "frozen":
        return llm

    # peft: slow to import (~5 s); only LoRA needs it
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.lora_targets), bias="none", task_type="CAUSAL_LM")
    with warnings.catch_warnings():  # peft calls a transformers API that warns about its own deprecation
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(llm, lora)


def base_llm(llm: nn.Module) -> nn.Module:
    """The underlying `PreTrainedModel` (unwraps peft)."""
    get_base = getattr(llm, "get_base_model", None)
    return get_base() if callable(get_base) else llm


def compile_decoder_layers(llm: nn.Module) -> int:
    """`torch.compile` each decoder layer in place (regional compilation: identical layers share one compiled
    graph, so a 32-layer model compiles in seconds, not minutes). Returns how many layers were compiled.

    On an H200 this takes the paper preset's LoRA step from 36% to 49% model-FLOPs utilisation
    (benchmarks/RESULTS.md).
    """
    layers = getattr(getattr(base_llm(llm), "model", None), "layers", None)
    if layers is None:
        raise BadInputError(type(base_llm(llm)).__name__, "has no `.model.layers` to compile")
    for layer in layers:
        layer.compile()
    return len(layers)
