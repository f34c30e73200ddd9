"""The composed Reg2RG model: visual tokens from the embedding layer, spliced into the LLM's prompt
embeddings.

    global CT ─ ViT3D (frozen) ─┐
                                ├─ Perceiver (shared) ─ fc ──> 32 global tokens, 32 texture tokens per region
    region crop ─ ViT3D ────────┘
    region mask ─ geometry ViT ─ mean ─ mask_fc ─────────────> 1 geometry token per region
    prompt ids ─ LLM embeddings; <image>/<region> tokens from the official `image/region_token_weight`;
                 placeholder positions  <- visual tokens (masked_scatter) ─> LLM (LoRA) ─> report

Module names follow the official checkpoint: `embedding_layer.{vision_encoder, mask_encoder, perceiver, fc,
mask_fc, image_token_weight, region_token_weight}` and `lang_model` (the peft-wrapped LLM), so `checkpoint.py`
maps the released weights with almost no renaming.

One file over 400 lines: `Reg2RG` and the `Reg2RGEmbedding` it owns are one module tree, the official
checkpoint's, which `official_key_shapes` reads from these classes; the folder format is `weights.py`'s.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from reg2rg_lib.errors import KitError
from reg2rg_lib.model.config import Reg2RGConfig
from reg2rg_lib.model.geometry import MaskEncoder
from reg2rg_lib.model.llm import apply_finetuning, base_llm, build_llm
from reg2rg_lib.model.perceiver import PerceiverResampler
from reg2rg_lib.model.prompt import (
    GEOMETRY,
    GLOBAL,
    STRUCT,
    STRUCT_TOKENS,
    TEXT,
    TEXTURE,
    reg2rg_special_tokens,
    token_kinds,
)
from reg2rg_lib.model.tokenizer import add_reg2rg_tokens
from reg2rg_lib.model.vit3d import ViT3D
from reg2rg_lib.model.weights import (
    is_legacy_folder,
    load_adapter,
    load_radfm_perceiver,
    load_radfm_vision,
    load_saved_state,
    read_llm,
    read_pretrained,
    read_reference,
    save_pretrained,
)
from reg2rg_lib.regions import LABELS

#: Integer codes of the per-token kind table (a buffer indexed by token id).
KIND_CODES: dict[str, int] = {TEXT: 0, STRUCT: 1, GLOBAL: 2, TEXTURE: 3, GEOMETRY: 4}
#: Branch dropout codes, one per region row (`region_drop`; training only): which branch is zeroed.
BRANCH_KEEP, BRANCH_TEXTURE, BRANCH_GEOMETRY = 0, 1, 2


def drop_branches(tokens: dict[str, torch.Tensor], region_drop: torch.Tensor) -> dict[str, torch.Tensor]:
    """Branch dropout on `visual_tokens`' output: texture tokens (N*L, D) and geometry tokens (N, D) of the
    regions whose code in `region_drop` (N,) says so multiplied by 0 (the re-referenced copies follow)."""
    out = dict(tokens)
    codes = region_drop.to(next(iter(tokens.values())).device)
    if TEXTURE in out:
        tex = out[TEXTURE]
        keep = (codes != BRANCH_TEXTURE).to(tex.dtype)
        out[TEXTURE] = (tex.reshape(len(codes), -1, tex.shape[-1]) * keep[:, None, None]).reshape(tex.shape)
    if GEOMETRY in out:
        out[GEOMETRY] = out[GEOMETRY] * (codes != BRANCH_GEOMETRY).to(out[GEOMETRY].dtype)[:, None]
    return out


#: `Reg2RGEmbedding.feature_shift` / `feature_scale` rows (`vision_standardize`)
FEATURE_ROWS = {"global_feats": 0, "region_feats": 1}
FEATURE_SD_MIN = 1e-6  # a dimension that never varies over the train split is centred, not scaled up


class Reg2RGEmbedding(nn.Module):
    """Everything between the CT and the LLM (the official `embedding_layer`), minus the LLM's own token
    table.

    Only the parts the config uses are built (e.g. no geometry encoder when `use_geometry` is off), so
    parameter counts of an ablation are its own.
    """

    def __init__(self, cfg: Reg2RGConfig, llm_dim: int) -> None:
        super().__init__()
        # embeddings of <image>, </image> and <region>, </region> (trainable, as the official 2 x D tables)
        self.image_token_weight = nn.Parameter(torch.randn(2, llm_dim) * 0.02)
        self.region_token_weight = nn.Parameter(torch.randn(2, llm_dim) * 0.02)
        self.vision_encoder = self.perceiver = self.fc = None
        self.mask_encoder = self.mask_fc = None
        if cfg.global_tokens or cfg.texture_tokens:
            self.vision_encoder = ViT3D(
                cfg.image_size,
                cfg.vit_patch,
                cfg.vit_dim,
                cfg.vit_depth,
                cfg.vit_heads,
                cfg.vit_dim_head,
                cfg.vit_mlp,
                cfg.in_channels,
                cfg.vit_pos_rows,
                patch_norm=cfg.vit_patch_norm,
            )
        if cfg.geometry_tokens:
            self.mask_encoder = MaskEncoder.from_config(cfg)
        if cfg.global_tokens or cfg.texture_tokens:
            self.perceiver = PerceiverResampler(
                cfg.vit_dim,
                cfg.perceiver_depth,
                cfg.perceiver_heads,
                cfg.perceiver_dim_head,
                cfg.perceiver_latents,
                cfg.perceiver_ff_mult,
            )
            self.fc = nn.Linear(cfg.vit_dim, llm_dim)
            if cfg.vision_standardize:  # rows: global, region features; set from the train split
                self.register_buffer("feature_shift", torch.zeros(2, cfg.vit_dim))
                self.register_buffer("feature_scale", torch.ones(2, cfg.vit_dim))
                self.register_buffer("feature_count", torch.zeros(2, dtype=torch.long))  # 0: not set
        if cfg.geometry_tokens:
            self.mask_fc = nn.Linear(cfg.mask_dim, llm_dim)
        if cfg.label_head:  # the LLM's hidden state where a region's paragraph begins -> its labels' logits
            self.label_head = nn.Linear(llm_dim, len(LABELS))

    def set_feature_statistics(self, stats: dict[str, tuple[torch.Tensor, torch.Tensor, int]]) -> None:
        """`vision_standardize`: {"global_feats" | "region_feats": (mean, sd, tokens counted)}, each
        (vit_dim,), of the frozen ViT's train-split features (`samples.features.feature_statistics`)."""
        for key, (mean, sd, count) in stats.items():
            row = FEATURE_ROWS[key]
            self.feature_shift[row] = mean.to(self.feature_shift)
            self.feature_scale[row] = sd.to(self.feature_scale).clamp_min(FEATURE_SD_MIN)
            self.feature_count[row] = int(count)

    def standardize(self, key: str, feats: torch.Tensor) -> torch.Tensor:
        """The frozen ViT's features `feats` (n, T, vit_dim) as the Perceiver takes them: standardised with
        the train split's statistics when `vision_standardize` is on (an error when they were never set),
        else as they are."""
        if not hasattr(self, "feature_count"):
            return feats
        row = FEATURE_ROWS[key]
        if not self.feature_count.is_meta and int(self.feature_count[row]) == 0:
            raise KitError(f"vision_standardize is on but the {key} statistics were never set (train_run "
                           "sets them from the train split's features; a saved model carries them)")
        return (feats - self.feature_shift[row].to(feats)) / self.feature_scale[row].to(feats)

    @property
    def struct_table(self) -> torch.Tensor:
        """(4, D): <image>, </image>, <region>, </region> in `prompt.STRUCT_TOKENS` order."""
        return torch.cat([self.image_token_weight, self.region_token_weight], dim=0)


def label_head_loss(head: nn.Module, states: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
                    ) -> torch.Tensor:
    """The region label head's loss (`Reg2RGConfig.label_head`): binary cross-entropy of `head` on the LLM's
    final-norm states (N, D) where N regions' paragraphs begin, against their (N, 18) `targets`, averaged over
    the labels each region reports (`mask`, (N, 18))."""
    logits = head(states).float()
    mask = mask.to(logits.device).float()
    bce = nn.functional.binary_cross_entropy_with_logits(logits, targets.to(logits.device), reduction="none")
    return (bce * mask).sum() / mask.sum().clamp(min=1)


def splice(embeds: torch.Tensor, mask: torch.Tensor, features: torch.Tensor, what: str) -> torch.Tensor:
    """Write `features` (n, D) into the positions where `mask` (B, L) is True, in row-major order.

    The number of True positions must equal n (checked, except on the meta device where counts are unknown).
    """
    if not embeds.is_meta:
        n_pos, n_feat = int(mask.sum()), features.shape[0]
        if n_pos != n_feat:
            raise KitError(
                f"{what} tokens: the prompts have {n_pos} placeholder positions but {n_feat} feature "
                "vectors were given (check the region count per sample and the order of the regions)"
            )
    return embeds.masked_scatter(mask.unsqueeze(-1).expand_as(embeds), features.to(embeds.dtype))


def first_occurrence(input_ids: torch.Tensor, placeholder: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For re-reference: (source, repeated), both (B, L). `repeated` marks placeholder positions whose token
    id occurred earlier in the same row; `source` is the position of that id's first occurrence in the row (a
    position's own index elsewhere), so `embeds.gather(1, source)` copies the first occurrence's visual
    token."""
    b, length = input_ids.shape
    pos = torch.arange(length, device=input_ids.device).expand(b, length)
    first = torch.full((b, int(input_ids.max()) + 1), length, dtype=torch.long, device=input_ids.device)
    first.scatter_reduce_(1, torch.where(placeholder, input_ids, 0), torch.where(placeholder, pos, length),
                          reduce="amin")
    source = torch.where(placeholder, first.gather(1, input_ids), pos)
    return source, placeholder & (source != pos)


def official_key_shapes(cfg: Reg2RGConfig, base_vocab: int | None = None,
                        llm_dim: int | None = None) -> dict[str, list[int]]:
    """Names and shapes of the official embedding layer for `cfg` (keys without the `embedding_layer.`
    prefix).

    `weight` is the LLM's input table over the base vocabulary (`base_vocab`, default `cfg.llm_vocab`); the
    rest are this kit's `embedding_layer` tensors, whose names are the official ones. Built on the meta
    device.
    """
    dim = llm_dim or cfg.llm_hidden
    with torch.device("meta"):
        layer = Reg2RGEmbedding(cfg, dim)
    shapes = {"weight": [base_vocab or cfg.llm_vocab, dim]}
    shapes.update({k: list(v.shape) for k, v in layer.state_dict().items()})
    return shapes


class _MetaVocab:
    """Stand-in tokenizer for the meta device when the LLM's tokenizer is not at hand (the paper preset here):
    the Reg2RG tokens get ids after `cfg.llm_vocab`, as `add_reg2rg_tokens` would give them."""

    bos_token_id, eos_token_id, pad_token_id = 1, 2, 0

    def __init__(self, cfg: Reg2RGConfig) -> None:
        self._vocab = {t: cfg.llm_vocab + i for i, t in enumerate(reg2rg_special_tokens(cfg))}
        self._size = cfg.llm_vocab + len(self._vocab)

    def get_vocab(self) -> dict[str, int]:
        return dict(self._vocab)

    def __len__(self) -> int:
        return self._size


class Reg2RG(nn.Module):
    """Reg2RG: `embedding_layer` (vision, geometry, Perceiver, projections, structure tokens) + `lang_model`.

    Args:
        cfg: the configuration (image size, sizes, ablation switches).
        tokenizer: the HF tokenizer; the Reg2RG tokens are added to it (in place) if missing. May be None on
        the
            meta device only (ids are then laid out after `cfg.llm_vocab`).
        device: "meta" builds the model without allocating weights (inspection, FLOP counting). Other devices:
            build on CPU, then move with `.to(device)`.
        llm: the bare causal LM to use instead of building it from the config (a saved folder's `llm/`).
    """

    def __init__(self, cfg: Reg2RGConfig, tokenizer=None, device: str | torch.device | None = None,
                 llm: nn.Module | None = None) -> None:
        super().__init__()
        meta = device is not None and torch.device(device).type == "meta"
        if tokenizer is None:
            if not meta:
                raise KitError(
                    "Reg2RG needs a tokenizer (train_tokenizer / load_tokenizer); only device='meta' "
                    "may omit it"
                )
            tokenizer = _MetaVocab(cfg)
        else:
            add_reg2rg_tokens(tokenizer, cfg)
        self.config, self.tokenizer = cfg, tokenizer
        # each organ's average inputs over the train cases (`samples.reference`), saved with the model if set
        self.reference_inputs: dict[str, torch.Tensor] | None = None
        vocab = tokenizer.get_vocab()
        self.base_vocab = vocab[STRUCT_TOKENS[0]]  # rows of the LLM's original table (official `weight`)

        if llm is None:
            llm = build_llm(cfg, tokenizer if not isinstance(tokenizer, _MetaVocab) else None, device)
        if llm.get_input_embeddings().num_embeddings < len(tokenizer):
            if not meta:  # mean resizing samples the new rows; a checkpoint does not store a pretrained LLM's
                torch.manual_seed(cfg.seed)  # frozen table, so a reload must draw the same rows again
            llm.resize_token_embeddings(len(tokenizer), mean_resizing=not meta)
        llm_dim = llm.get_input_embeddings().embedding_dim
        if meta:
            with torch.device("meta"):
                self.embedding_layer = Reg2RGEmbedding(cfg, llm_dim)
        else:
            torch.manual_seed(cfg.seed)
            self.embedding_layer = Reg2RGEmbedding(cfg, llm_dim)
        if self.embedding_layer.vision_encoder is not None and cfg.freeze_vision:
            self.embedding_layer.vision_encoder.requires_grad_(False)
        self.lang_model = apply_finetuning(llm, cfg)

        kinds = torch.zeros(len(tokenizer), dtype=torch.long)  # token id -> KIND_CODES
        struct_index = torch.full((len(tokenizer),), -1, dtype=torch.long)  # token id -> row of struct_table
        for tid, kind in token_kinds(tokenizer, cfg).items():
            kinds[tid] = KIND_CODES[kind]
        for row, tok in enumerate(STRUCT_TOKENS):
            struct_index[vocab[tok]] = row
        buffer_device = torch.device("meta") if meta else None
        self.register_buffer("token_kind", kinds.to(buffer_device), persistent=False)
        self.register_buffer("struct_index", struct_index.to(buffer_device), persistent=False)
        self.reg2rg_token_ids = sorted(vocab[t] for t in reg2rg_special_tokens(cfg) if t in vocab)

        if not meta:
            if cfg.vision_checkpoint:
                load_radfm_vision(self, cfg.vision_checkpoint)
            if cfg.perceiver_checkpoint:
                load_radfm_perceiver(self, cfg.perceiver_checkpoint)

    # ---- visual tokens -------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.embedding_layer.image_token_weight.device

    def encode_vision(self, x: torch.Tensor) -> torch.Tensor:
        """ViT tokens of CT volumes: x (N, 1|C, H, W, D) -> (N, T, vit_dim). No autograd while the ViT is
        frozen, so the outputs can be computed once and cached (pass them back as `global_feats` /
        `region_feats`)."""
        enc = self.embedding_layer.vision_encoder
        if enc is None:
            raise KitError("this configuration has no vision encoder (no global and no texture tokens)")
        x = x.to(device=self.device, dtype=enc.to_patch_embedding[2].weight.dtype)
        if self.config.freeze_vision:
            with torch.no_grad():
                return enc(x)
        return enc(x)

    def visual_tokens(self, global_images=None, global_feats=None, region_images=None, region_feats=None,
                      region_masks=None, region_drop=None) -> dict[str, torch.Tensor]:
        """Kind -> (n, D_llm) tokens in prompt order: GLOBAL (B*L), TEXTURE (N*L), GEOMETRY (N) as
        configured. `region_drop` (N,) codes (training: branch dropout) zero a region's texture tokens
        (`BRANCH_TEXTURE`) or its geometry token (`BRANCH_GEOMETRY`)."""
        cfg, el = self.config, self.embedding_layer
        media, sizes = [], []  # Perceiver inputs, batched together (the Perceiver is shared)
        for kind, arg, used, feats, images in (
            (GLOBAL, "global", cfg.global_tokens, global_feats, global_images),
            (TEXTURE, "region", cfg.texture_tokens, region_feats, region_images),
        ):
            if not used:
                continue
            if feats is None:
                if images is None:
                    raise KitError(f"the configuration uses {kind} tokens: pass {arg}_images or {arg}_feats")
                feats = self.encode_vision(images)
            media.append(el.standardize(f"{arg}_feats", feats.to(device=self.device)))
            sizes.append((kind, feats.shape[0]))
        out: dict[str, torch.Tensor] = {}
        if media:
            dtype = el.fc.weight.dtype
            latents = el.perceiver(torch.cat(media).to(dtype))  # (B + N, L, vit_dim)
            tokens = el.fc(latents)  # (B + N, L, D)
            for (kind, _), chunk in zip(sizes, tokens.split([n for _, n in sizes])):
                out[kind] = chunk.reshape(-1, chunk.shape[-1])  # (n * L, D), row-major = prompt order
        if cfg.geometry_tokens:
            if region_masks is None:
                raise KitError("the configuration uses geometry tokens: pass region_masks")
            # bool/uint8 or float: the encoder casts chunk by chunk
            masks = region_masks.to(device=self.device)
            out[GEOMETRY] = el.mask_fc(el.mask_encoder(masks))  # (N, D)
        return drop_branches(out, region_drop) if region_drop is not None else out

    def embed_inputs(self, input_ids: torch.Tensor, **visual: Any) -> torch.Tensor:
        """(B, L) ids -> (B, L, D) embeddings with structure tokens and visual tokens spliced in."""
        input_ids = input_ids.to(self.device)
        embeds = self.lang_model.get_input_embeddings()(input_ids)  # (B, L, D)
        kinds = self.token_kind[input_ids]  # (B, L)
        table = self.embedding_layer.struct_table.to(embeds.dtype)  # (4, D)
        struct_rows = table[self.struct_index[input_ids].clamp(min=0)]  # (B, L, D), gathered, not one-hot
        embeds = torch.where((kinds == KIND_CODES[STRUCT]).unsqueeze(-1), struct_rows, embeds)
        tokens = self.visual_tokens(**visual)
        source = repeated = None
        if self.config.rereference and not embeds.is_meta:
            source, repeated = first_occurrence(input_ids, kinds >= KIND_CODES[GLOBAL])
        for kind in (GLOBAL, TEXTURE, GEOMETRY):
            mask = kinds == KIND_CODES[kind]
            if repeated is not None:
                mask = mask & ~repeated  # a re-referenced placeholder copies its first occurrence (below)
            if kind in tokens:
                embeds = splice(embeds, mask, tokens[kind], kind)
            elif not embeds.is_meta and bool(mask.any()):
                raise KitError(f"the prompts contain {kind} placeholders but the configuration produces none")
        if repeated is not None and bool(repeated.any()):
            copied = embeds.gather(1, source.unsqueeze(-1).expand_as(embeds))  # (B, L, D)
            embeds = torch.where(repeated.unsqueeze(-1), copied, embeds)
        return embeds

    # ---- LLM -----------------------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, use_cache: bool = False, **visual: Any):
        """Teacher-forced pass; `.loss` is the mean next-token cross-entropy over labels != -100."""
        embeds = self.embed_inputs(input_ids, **visual)
        if attention_mask is not None:
            attention_mask = attention_mask.to(self.device)
        if labels is not None:
            labels = labels.to(self.device)
        # use_cache=False by default: a teacher-forced pass needs no KV cache (building one costs memory and
        # copies, and makes compiled decoder layers recompile for each layer's cache state)
        return self.lang_model(inputs_embeds=embeds, attention_mask=attention_mask, labels=labels,
                               use_cache=use_cache)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        global_images=None,
        global_feats=None,
        region_images=None,
        region_feats=None,
        region_masks=None,
        max_new_tokens: int = 256,
        **generate_kwargs: Any,
    ) -> torch.Tensor:
        """Generate reports for a LEFT-padded batch of prompts; returns only the new token ids (B, new).

        Uses the HF `generate` on `inputs_embeds` (KV cache, greedy or sampling through `generate_kwargs`).
        The Reg2RG tokens are suppressed: the model must write text, not placeholders.
        """
        if attention_mask is not None and bool((attention_mask[:, -1] == 0).any()):
            raise KitError("generate expects left-padded prompts (collate(..., padding_side='left'))")
        embeds = self.embed_inputs(
            input_ids,
            global_images=global_images,
            global_feats=global_feats,
            region_images=region_images,
            region_feats=region_feats,
            region_masks=region_masks,
        )
        tok = self.tokenizer
        generate_kwargs.setdefault("pad_token_id", tok.pad_token_id)
        generate_kwargs.setdefault("eos_token_id", tok.eos_token_id)
        generate_kwargs.setdefault("suppress_tokens", self.reg2rg_token_ids)
        if attention_mask is not None:
            attention_mask = attention_mask.to(self.device)
        return self.lang_model.generate(inputs_embeds=embeds, attention_mask=attention_mask,
                                        max_new_tokens=max_new_tokens, **generate_kwargs)

    def decode(self, ids: torch.Tensor) -> list[str]:
        """Token ids -> report strings (special tokens dropped, whitespace trimmed)."""
        return [t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    # ---- parameters ----------------------------------------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def llm(self) -> nn.Module:
        """The underlying HF causal LM (without the peft wrapper)."""
        return base_llm(self.lang_model)

    def parameter_summary(self) -> dict[str, Any]:
        """Counts per component (+ trainable, total) and the official embedding-layer key shapes.

        `components` has exactly: vision_encoder, mask_encoder, perceiver, fc, mask_fc, llm (the LLM without
        LoRA, with its resized token table), lora. `total` also counts the 4 structure-token rows
        (image/region_token_weight), which belong to no listed component.
        """
        el = self.embedding_layer
        comp = {
            name: _count(getattr(el, name))
            for name in ("vision_encoder", "mask_encoder", "perceiver", "fc", "mask_fc")
        }
        lora = sum(p.numel() for n, p in self.lang_model.named_parameters() if "lora_" in n)
        comp["llm"] = _count(self.lang_model) - lora
        comp["lora"] = lora
        return {
            "components": comp,
            "trainable": sum(p.numel() for p in self.parameters() if p.requires_grad),
            "total": sum(p.numel() for p in self.parameters()),
            "official_keys": official_key_shapes(self.config, self.base_vocab, self.llm_dim),
        }

    def component_table(self) -> list[dict[str, Any]]:
        """One row per component: name, trainable and frozen parameter counts (for tables in notebooks)."""
        groups: dict[str, list[tuple[str, nn.Parameter]]] = {}
        for name, p in self.named_parameters():
            if name.startswith("embedding_layer."):
                part = name.split(".")[1]
                key = "structure tokens" if part.endswith("token_weight") else part
            else:
                key = "lora" if "lora_" in name else "llm"
            groups.setdefault(key, []).append((name, p))
        return [{"component": k, "trainable": sum(p.numel() for _, p in v if p.requires_grad),
                 "frozen": sum(p.numel() for _, p in v if not p.requires_grad)} for k, v in groups.items()]

    @property
    def llm_dim(self) -> int:
        return self.lang_model.get_input_embeddings().embedding_dim

    # ---- checkpoints (the folder format: weights.py) -------------------------------------------------------
    def save_pretrained(self, out_dir: str | os.PathLike[str]) -> None:
        save_pretrained(self, out_dir)

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike[str], device: str | torch.device | None = None
    ) -> Reg2RG:
        """Rebuild a model from a `save_pretrained` folder: the LLM from its `llm/` (else from `llm_path`),
        the LoRA from `llm_adapter/` through peft, the visual side from `embedding_layer/`; or a folder of the
        older layout (one model.safetensors). Every saved tensor must fit (else a one-line error)."""
        cfg, tokenizer, state, where = read_pretrained(path)
        legacy = is_legacy_folder(path)
        model = cls(cfg, tokenizer, llm=None if legacy else read_llm(path))
        load_saved_state(model, state, where)
        if not legacy and cfg.llm_finetune == "lora":
            load_adapter(model, path)
        model.reference_inputs = read_reference(path)
        return model.to(device) if device is not None else model


def _count(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())
