"""Reg2RG, assembled in our own code: frozen RadFM ViT3D -> shared Perceiver -> projections, a geometry ViT, and an
HF causal LM whose placeholder tokens are replaced by the visual tokens (`masked_scatter`).

Modules, top-down: `config` (dataclass + presets), `vit3d`, `perceiver`, `geometry` (building blocks), `prompt`
(templates, special tokens, samples, collate), `tokenizer`, `llm` (HF LLM, tiny LLaMA, LoRA), `reg2rg` (the
composed model + splice), `weights` (our safetensors folders, RadFM's files), `checkpoint` (the official key mapping),
`flops` (counts, FLOPs).

The API other stages code against (exact signatures)
----------------------------------------------------
Config::

    cfg = Reg2RGConfig.preset(name: str, image_size: tuple|list|None = None, **field_overrides) -> Reg2RGConfig
        # name: "cpu-tiny" | "cpu-small" | "paper"; image_size from the profile: profile.data.image_size
    cfg.replace(**changes) -> Reg2RGConfig          # ablations: cfg.replace(rra=False), (decoupled=False),
                                                    # (use_global=False, use_geometry=False), ...
    cfg.with_llm(arch: str) -> Reg2RGConfig         # arch in LLM_ARCHS: "scratch-2x64" | "scratch-2x128" | "scratch-4x256" | "llama2-7b"
    cfg.save(path) / Reg2RGConfig.load(path)

Tokenizer (CPU presets; the paper preset uses the LLM's own tokenizer via `load_tokenizer(llm_path)`)::

    tok = train_tokenizer(texts: Iterable[str], out_dir: str|Path|None = None, vocab_size: int = 1024)
        -> PreTrainedTokenizerFast      # byte-level BPE, <s> </s> <pad> <unk>; saved to out_dir when given
    tok = load_tokenizer(path_or_name: str|Path) -> PreTrainedTokenizerBase
    add_reg2rg_tokens(tok, cfg) -> int  # <image> </image> <region> </region> + placeholders; idempotent;
                                        # Reg2RG(cfg, tok) calls it, so the tokenizer passed in is updated

Samples (prompt + RRA target -> token ids and labels)::

    s = build_sample(regions: Sequence[str], reports: Mapping[str, str] | None, tokenizer, cfg,
                     rng: random.Random | None = None) -> Sample
        # regions: the case's regions in CaseRecord (canonical) order; reports: CaseRecord.reports (None at
        # inference). With cfg.rra and an rng the region order is shuffled (a new order per draw); rng=None keeps
        # the canonical order (test time).
        # Sample fields: input_ids list[int] (bos + prompt [+ target + eos]), labels list[int] (-100 over the
        # prompt; [] at inference), order list[int] (indices into `regions`, in prompt order: permute the cached
        # per-region tensors with it), regions list[str] (prompt order), prompt str (the `Question`), target str
    batch = collate(samples: Sequence[Sample], pad_id: int, padding_side: str = "right") -> dict
        # {"input_ids": (B, L) long, "attention_mask": (B, L) long, "labels": (B, L) long (-100 on padding)}
        # use padding_side="left" for generation
    build_prompt(n_regions: int, cfg) -> str; build_target(regions_in_prompt_order, reports, cfg) -> str

Model::

    model = Reg2RG(cfg, tokenizer, device: str|torch.device|None = None)   # device="meta" for inspection
    feats = model.encode_vision(x)          # x (N, 1|C, H, W, D) -> (N, T, vit_dim); no grad while frozen
    # the visual inputs of one cached case are built in the samples stage (samples/vision_inputs.py):
    # global_images (1,1,H,W,D), region_images (R,1,H,W,D), region_masks (R,1,H,W,D), None where the config skips
    out = model(input_ids, attention_mask=None, labels=None, *,
                global_images=None, global_feats=None,    # (B,1,H,W,D) images or (B,T,vit_dim) ViT features
                region_images=None, region_feats=None,    # (N,1,H,W,D) or (N,T,vit_dim), N = regions in batch,
                region_masks=None)                        # (N,1,H,W,D); regions packed sample by sample in
                                                          # prompt order (tensor[sample.order] per sample)
        -> transformers CausalLMOutputWithPast (.loss when labels are given, .logits)
    ids = model.generate(input_ids, attention_mask, *, <same visual kwargs>, max_new_tokens=256,
                         **hf_generate_kwargs) -> LongTensor (B, new_tokens)   # left-padded batch, KV cache
    texts = model.decode(ids) -> list[str]
    model.save_pretrained(dir) ; Reg2RG.from_pretrained(dir, device=None) -> Reg2RG
        # dir/config.json, dir/tokenizer/, dir/embedding_layer/ (safetensors + config), dir/llm/ (transformers
        # folder, when not re-read from llm_path), dir/llm_adapter/ (peft LoRA adapter); older folders with one
        # dir/model.safetensors load too (paths.ModelFolder, weights.py)
    model.parameter_summary() -> dict       # the `reg2rg model summary --json` object
    model.trainable_parameters() -> list[nn.Parameter]

Helpers for notebooks and reports::

    tokenizer_for_run(out_dir, vocab_size=1024)   # out_dir/tokenizer, else trained in memory on the prep cache
    prompt.token_layout(ids, tok, cfg) -> list[str]; prompt.layout_runs(ids, tok, cfg) -> list[dict]
    flops.parameter_table({name: model}) -> DataFrame; flops.training_flops(cfg, n_regions=10, ...) -> dict

Checkpoints::

    load_official_checkpoint(model, path_or_state_dict) -> LoadReport   # "embedding_layer.*" / "lang_model.*"
    load_radfm_vision(model, path) ; load_radfm_perceiver(model, path)
    official_key_shapes(cfg, base_vocab: int | None = None) -> dict[str, list[int]]
"""

from reg2rg_lib.model.checkpoint import LoadReport, load_official_checkpoint
from reg2rg_lib.model.config import (
    LLM_ARCH_ALIASES,
    LLM_ARCHS,
    PRESET_ALIASES,
    PRESETS,
    Reg2RGConfig,
    llm_arch_name,
)
from reg2rg_lib.model.prompt import Sample, build_prompt, build_sample, build_target, collate
from reg2rg_lib.model.reg2rg import Reg2RG, official_key_shapes
from reg2rg_lib.model.tokenizer import add_reg2rg_tokens, load_tokenizer, tokenizer_for_run, train_tokenizer
from reg2rg_lib.model.weights import load_radfm_perceiver, load_radfm_vision

__all__ = [
    "LLM_ARCHS", "LLM_ARCH_ALIASES", "LoadReport", "PRESETS", "PRESET_ALIASES", "Reg2RG", "Reg2RGConfig", "Sample",
    "add_reg2rg_tokens", "build_prompt", "build_sample", "build_target", "collate", "llm_arch_name",
    "load_official_checkpoint", "load_radfm_perceiver", "load_radfm_vision", "load_tokenizer",
    "official_key_shapes", "tokenizer_for_run", "train_tokenizer",
]
