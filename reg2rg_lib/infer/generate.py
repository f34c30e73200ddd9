"""Batched report generation over a split of the prep cache, into the predictions CSV (`predictions.py`).

Decoding: greedy by default (deterministic, what the kit's tables report); `DecodeSettings.paper()` gives the
paper's settings, top_k=30 and max_new_tokens=500 on top of the Llama-2-chat generation config (sampling with
temperature 0.6 and top_p 0.9), which is what produced the published numbers.

Greedy search on a LLaMA-architecture LLM runs the kit's own loop (`greedy_generate`): the model's own modules
(norms, projections with their LoRA adapters, MLP, head) driven step by step over a preallocated key/value cache,
with finished rows dropped from the batch. It writes the same tokens as `Reg2RG.generate` (Hugging Face
`generate`) at a fraction of the per-step cost; sampling, other LLM families and generation configs with extra
logits processors go through `Reg2RG.generate` (`fast_greedy_blocker` says why).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from reg2rg_lib.data.prep import PrepCache, load_cache
from reg2rg_lib.errors import BadInputError, KitError
from reg2rg_lib.infer.predictions import PRED_COLUMNS, PredictionWriter, decoding_path, read_predictions
from reg2rg_lib.io import write_csv_atomic, write_json_atomic
from reg2rg_lib.model import Reg2RG, Reg2RGConfig, build_target, load_official_checkpoint, load_tokenizer
from reg2rg_lib.model.prompt import HEAD_RE
from reg2rg_lib.profiles import GenerateSection
from reg2rg_lib.train.checkpoints import COMPLETE, latest_checkpoint
from reg2rg_lib.train.collate import Collator, model_inputs
from reg2rg_lib.train.dataset import ReportDataset
from reg2rg_lib.train.features import FeatureCache, feature_cache_for, use_feature_cache
from reg2rg_lib.train.loop import batch_names, to_device

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecodeSettings:
    """How reports are decoded. The default is deterministic greedy search."""

    max_new_tokens: int = 320
    do_sample: bool = False
    top_k: int | None = None
    top_p: float | None = None
    temperature: float | None = None
    seed: int = 0  # for sampling: the same seed gives the same reports

    @classmethod
    def paper(cls, seed: int = 0) -> DecodeSettings:
        """The paper's decoding: `generate(top_k=30, max_new_tokens=500)` with Llama-2-chat's generation config
        (do_sample=True, temperature=0.6, top_p=0.9)."""
        return cls(max_new_tokens=500, do_sample=True, top_k=30, top_p=0.9, temperature=0.6, seed=seed)

    @classmethod
    def from_profile(cls, section: GenerateSection | None, **overrides: Any) -> DecodeSettings:
        """The profile's `generate` settings (None: the defaults); `overrides` that are not None win. Sampling
        without a temperature takes the Llama-2-chat generation config's (temperature 0.6, top_p 0.9)."""
        keys = {"max_new_tokens", "do_sample", "top_k", "top_p", "temperature", "seed"}
        given = asdict(section) if section is not None else {}
        values = {k: v for k, v in given.items() if k in keys and v is not None}
        values.update({k: v for k, v in overrides.items() if v is not None})
        if values.get("do_sample") and "temperature" not in values:  # the Llama-2-chat generation config
            values.setdefault("top_p", 0.9)
            values["temperature"] = 0.6
        return cls(**values)

    def describe(self) -> str:
        if not self.do_sample:
            return f"greedy, max_new_tokens={self.max_new_tokens}"
        return (f"sampling top_k={self.top_k}, top_p={self.top_p}, temperature={self.temperature}, "
                f"max_new_tokens={self.max_new_tokens}, seed={self.seed}")

    def hf_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for a Hugging Face `generate` call."""
        out = {k: v for k, v in asdict(self).items() if k not in ("seed",) and v is not None}
        if not self.do_sample:
            for k in ("top_k", "top_p", "temperature"):
                out.pop(k, None)
        return out


def chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def batch_groups(items: list[Any], region_counts: list[int], size: int) -> list[list[Any]]:
    """`items` in batches of `size`, after a stable sort by region count: cases with as many regions batch
    together (prompts of one length, so less padding). The order `generate_predictions` decodes in."""
    order = sorted(range(len(items)), key=lambda k: region_counts[k])
    return list(chunks([items[k] for k in order], size))


# ---- the kit's greedy loop -------------------------------------------------------------------------------------
#: Generation-config fields that add a logits processor or a stopping rule to HF greedy search, with the value
#: that adds none; the kit's loop runs only when every one is at that value.
_NEUTRAL_GENERATION = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "bad_words_ids": None,
                       "min_length": 0, "min_new_tokens": None, "forced_bos_token_id": None,
                       "forced_eos_token_id": None, "begin_suppress_tokens": None, "sequence_bias": None,
                       "num_beams": 1, "stop_strings": None, "encoder_repetition_penalty": 1.0}


def fast_greedy_blocker(model: Reg2RG) -> str | None:
    """Why `greedy_generate` cannot stand in for `Reg2RG.generate` on `model` (None: it can): it implements the
    LLaMA decoder layer (pre-norm attention with rotary positions, then the MLP), the architecture of the kit's CPU
    LLMs, SmolLM2 and LLaMA-2."""
    llm = model.llm()
    config = llm.config
    if getattr(config, "model_type", None) != "llama":
        return f"LLM type {getattr(config, 'model_type', type(llm).__name__)!r} (the loop implements 'llama')"
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type")) if isinstance(rope, dict) else None
    if rope_type in ("dynamic", "longrope"):  # their frequencies follow the length seen so far: one table won't do
        return f"rotary scaling {rope_type!r}"
    gen = getattr(llm, "generation_config", None)
    for key, neutral in _NEUTRAL_GENERATION.items():
        value = getattr(gen, key, neutral) if gen is not None else neutral
        if value not in (neutral, None):
            return f"the LLM's generation config sets {key}={value!r}"
    return None


class _StaticKV:
    """Keys and values of every layer in buffers allocated once for the prompt plus the new tokens, shape
    (rows, kv_heads, columns, head_dim); column c of every row is one time step (the prompts are left-padded).
    Only the first `rows` rows are live: `keep` moves the live ones up instead of reallocating."""

    def __init__(self, layers: int, rows: int, heads: int, columns: int, head_dim: int, like: torch.Tensor) -> None:
        shape = (rows, heads, columns, head_dim)
        self.keys = [like.new_empty(shape) for _ in range(layers)]
        self.values = [like.new_empty(shape) for _ in range(layers)]
        self.rows = rows

    def write(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (rows, heads, n, head_dim) at columns start..start+n; return the keys/values up to there."""
        end, rows = start + k.shape[2], self.rows
        keys, values = self.keys[layer][:rows], self.values[layer][:rows]
        keys[:, :, start:end] = k
        values[:, :, start:end] = v
        return keys[:, :, :end], values[:, :, :end]

    def keep(self, rows: torch.Tensor, columns: int) -> None:
        """Keep only `rows` (indices of live rows, ascending), their first `columns` columns moved to the top."""
        for buf in (*self.keys, *self.values):
            buf[: len(rows), :, :columns] = buf[rows, :, :columns]  # the gather copies before the write
        self.rows = len(rows)


@dataclass(frozen=True)
class _Layer:
    """One LLaMA decoder layer's modules, looked up once (attribute access on modules costs per step)."""

    norm1: torch.nn.Module
    q: torch.nn.Module
    k: torch.nn.Module
    v: torch.nn.Module
    o: torch.nn.Module
    norm2: torch.nn.Module
    mlp: torch.nn.Module
    head_dim: int
    groups: int
    scaling: float

    @classmethod
    def of(cls, layer: torch.nn.Module) -> _Layer:
        a = layer.self_attn
        return cls(layer.input_layernorm, a.q_proj, a.k_proj, a.v_proj, a.o_proj, layer.post_attention_layernorm,
                   layer.mlp, a.head_dim, a.num_key_value_groups, a.scaling)


def _rope(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Rotary positions, x (B, H, n, hd): transformers' `x * cos + rotate_half(x) * sin`, where
    rotate_half(x) * sin == roll(x, hd/2) * signed_sin (sin with its first half negated) term by term, exactly."""
    return x * cos + x.roll(x.shape[-1] // 2, -1) * signed_sin


def _attention(m: _Layer, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, kv: _StaticKV, i: int,
               start: int, mask: torch.Tensor | None) -> torch.Tensor:
    """LLaMA self-attention of h (B, n, D) at columns start..start+n, computed as transformers' SDPA path does."""
    b, n, _ = h.shape
    q = _rope(m.q(h).view(b, n, -1, m.head_dim).transpose(1, 2), cos, sin)  # (B, Hq, n, hd)
    k = _rope(m.k(h).view(b, n, -1, m.head_dim).transpose(1, 2), cos, sin)  # (B, Hkv, n, hd)
    keys, values = kv.write(i, start, k, m.v(h).view(b, n, -1, m.head_dim).transpose(1, 2))  # (B, Hkv, S, hd)
    extra: dict[str, Any] = {}
    packed = m.groups > 1 and n == 1 and mask is not None
    if packed:  # one query: its heads become the query rows of their kv head
        q = q.reshape(b, -1, m.groups, m.head_dim)
    elif m.groups > 1 and mask is None:
        extra["enable_gqa"] = True
    elif m.groups > 1:
        keys, values = keys.repeat_interleave(m.groups, dim=1), values.repeat_interleave(m.groups, dim=1)
    out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=m.scaling,
                                         is_causal=mask is None and n > 1, **extra)
    if packed:
        out = out.reshape(b, -1, 1, m.head_dim)  # (B, Hq, 1, hd)
    return m.o(out.transpose(1, 2).reshape(b, n, -1))


def _decoder_pass(llm: torch.nn.Module, layers: list[_Layer], x: torch.Tensor, positions: torch.Tensor,
                  rope: tuple[torch.Tensor, torch.Tensor], kv: _StaticKV, start: int,
                  mask: torch.Tensor | None) -> torch.Tensor:
    """x (B, n, D) at `positions` (B, n) through every decoder layer -> the last position's logits (B, V), float32."""
    cos, sin = rope[0][positions].unsqueeze(1), rope[1][positions].unsqueeze(1)  # (B, 1, n, hd)
    for i, m in enumerate(layers):
        x = x + _attention(m, m.norm1(x), cos, sin, kv, i, start, mask)
        x = x + m.mlp(m.norm2(x))
    return llm.lm_head(llm.model.norm(x)[:, -1:]).float()[:, -1]  # (B, V); normed whole, as HF does


def _rope_table(llm: torch.nn.Module, like: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin (`_rope`) of positions 0..length-1, (length, hd), from the LLM's own rotary module."""
    cos, sin = llm.model.rotary_emb(like, torch.arange(length, device=like.device)[None])
    half = sin.shape[-1] // 2
    return cos[0], torch.cat([-sin[0, :, :half], sin[0, :, half:]], dim=-1)


@torch.inference_mode()
def greedy_generate(model: Reg2RG, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                    max_new_tokens: int = 256, drop_finished: bool = True, eos_token_id: int | None = None,
                    step_logits: list[torch.Tensor] | None = None, **visual: Any) -> torch.Tensor:
    """Greedy reports for a LEFT-padded batch, the tokens `Reg2RG.generate(..., do_sample=False)` writes (new ids
    (B, steps), finished rows padded with the pad token), at a fraction of its per-step cost.

    One prompt pass fills a key/value cache allocated once for the prompt plus `max_new_tokens`; each step feeds
    the last tokens through the LLM's own modules. Finished rows leave the batch (`drop_finished`; once a
    quarter of the rows are done, so that the moves stay rare), and the step cost follows the reports still being
    written. `eos_token_id`: the token that ends a report (default: the tokenizer's). `step_logits`: a list that
    receives each step's raw logits (live rows, float32), for checks. Check `fast_greedy_blocker` first.
    """
    llm, tok = model.llm(), model.tokenizer
    eos = tok.eos_token_id if eos_token_id is None else eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos  # as HF generate falls back
    if attention_mask is not None and bool((attention_mask[:, -1] == 0).any()):
        raise KitError("generate expects left-padded prompts (collate(..., padding_side='left'))")
    embeds = model.embed_inputs(input_ids, **visual)  # (B, P, D)
    b, p, _ = embeds.shape
    cols = p + max_new_tokens
    valid = torch.ones(b, cols, dtype=torch.bool, device=embeds.device)  # generated columns count too
    if attention_mask is not None:
        valid[:, :p] = attention_mask.to(embeds.device).bool()
    padded = not bool(valid.all())
    positions = (valid[:, :p].long().cumsum(-1) - 1).clamp(min=0)  # (B, P), as HF generate numbers them
    prompt_mask = (torch.ones(p, p, dtype=torch.bool, device=embeds.device).tril()[None, None]
                   & valid[:, None, None, :p]) if padded else None  # (B, 1, P, P): causal, no padding
    # one additive mask for the steps: 0 where attended, -inf at padding (what SDPA makes of a boolean mask)
    step_mask = torch.zeros(b, 1, 1, cols, dtype=embeds.dtype, device=embeds.device).masked_fill(
        ~valid[:, None, None, :], float("-inf")) if padded else None
    cfg, layers = llm.config, [_Layer.of(layer) for layer in llm.model.layers]
    kv = _StaticKV(len(layers), b, cfg.num_key_value_heads, cols, layers[0].head_dim, embeds)
    rope = _rope_table(llm, embeds, cols)
    logits = _decoder_pass(llm, layers, embeds, positions, rope, kv, 0, prompt_mask)
    out = torch.full((b, max_new_tokens), pad, dtype=torch.long, device=embeds.device)
    suppress = torch.zeros(logits.shape[-1], dtype=torch.bool, device=embeds.device)  # the Reg2RG tokens
    suppress[model.reg2rg_token_ids] = True
    rows = torch.arange(b, device=embeds.device)  # batch row -> row of `out`
    done = torch.zeros(b, dtype=torch.bool, device=embeds.device)
    last, embed = positions[:, -1:], llm.get_input_embeddings()
    for step in range(max_new_tokens):
        if step_logits is not None:
            step_logits.append(logits.clone())
        nxt = logits.masked_fill_(suppress, float("-inf")).argmax(-1)  # (rows,)
        nxt = nxt.masked_fill(done, pad)  # a finished row writes (and is fed) padding, as in HF generate
        out[rows, step] = nxt
        done = done | (nxt == eos)
        n_done = int(done.sum())
        if n_done == len(rows) or step + 1 == max_new_tokens:
            return out[:, : step + 1]
        col = p + step
        if drop_finished and n_done and n_done * 4 >= len(rows):
            keep = (~done).nonzero().squeeze(1)
            kv.keep(keep, col)
            rows, nxt, last, done = rows[keep], nxt[keep], last[keep], done[keep]
            step_mask = step_mask[keep] if step_mask is not None else None
        last = last + 1
        mask = step_mask[:, :, :, : col + 1] if step_mask is not None else None
        logits = _decoder_pass(llm, layers, embed(nxt[:, None]), last, rope, kv, col, mask)
    return out[:, :0]


class _RowWriter:
    """A key/value writer for re-reference decoding: every live row writes at its own column (`starts`), since a
    row that re-referenced a region has taken more columns than one that did not. `rows` are buffer rows."""

    def __init__(self, kv: _StaticKV, rows: torch.Tensor, starts: torch.Tensor, n: int) -> None:
        self.kv, self.rows, self.cols = kv, rows, starts[:, None] + torch.arange(n, device=starts.device)
        self.end = int(self.cols.max()) + 1
        self.all = len(rows) == kv.rows and bool((rows == torch.arange(len(rows), device=rows.device)).all())

    def write(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.kv.keys[layer], self.kv.values[layer]
        r = self.rows[:, None].expand_as(self.cols)
        keys[r, :, self.cols] = k.transpose(1, 2)  # (rows, n, heads, hd) at (row, column) pairs
        values[r, :, self.cols] = v.transpose(1, 2)
        if self.all:
            return keys[: self.kv.rows, :, : self.end], values[: self.kv.rows, :, : self.end]
        return keys[self.rows, :, : self.end], values[self.rows, :, : self.end]

    def mask(self, valid: torch.Tensor) -> torch.Tensor:
        """(rows, 1, n, end) boolean: every earlier valid column of the row, and the chunk causally."""
        seen = valid[self.rows, : self.end].clone()
        seen.scatter_(1, self.cols, True)
        cols = torch.arange(self.end, device=seen.device)
        return (seen[:, None, :] & (cols[None, None, :] <= self.cols[:, :, None]))[:, None]


#: The end of a region head in generated text ("... The region 3 is heart:"); group 1 is i.
_HEAD_END = re.compile(HEAD_RE.pattern + r"\s*$")


def _region_tables(model: Reg2RG, input_ids: torch.Tensor, embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each prompt region's spliced placeholder embeddings, (B, max_regions, P, D), and which regions each row's
    prompt has, (B, max_regions): what re-reference inserts after "The region i is <organ>:"."""
    cfg, vocab = model.config, model.tokenizer.get_vocab()
    per, b, _, d = cfg.region_tokens, *embeds.shape
    slot = torch.full((len(model.token_kind),), -1, dtype=torch.long, device=embeds.device)
    for j in range(cfg.max_regions * per):
        slot[vocab[f"<region{j}>"]] = j
    where = slot[input_ids.to(embeds.device)]  # (B, P): placeholder number or -1
    table = embeds.new_zeros(b, cfg.max_regions * per, d)
    present = torch.zeros(b, cfg.max_regions * per, dtype=torch.bool, device=embeds.device)
    r, c = (where >= 0).nonzero(as_tuple=True)
    table[r, where[r, c]] = embeds[r, c]
    present[r, where[r, c]] = True
    return table.view(b, cfg.max_regions, per, d), present.view(b, cfg.max_regions, per).all(-1)


def _heads_written(tok: Any, written: torch.Tensor, candidates: torch.Tensor, has_region: torch.Tensor,
                   inserted: torch.Tensor) -> list[tuple[int, int]]:
    """(row, i) for each candidate row whose text now ends with "The region i is <organ>:", i a region of its prompt
    not re-referenced yet (marked in `inserted`). `written` (B, steps) is what the rows wrote so far."""
    heads = []
    for r in candidates.nonzero().flatten().tolist():
        m = _HEAD_END.search(tok.decode(written[r, -24:].tolist()))
        i = int(m.group(1)) if m else has_region.shape[1]
        if i < has_region.shape[1] and bool(has_region[r, i]) and not bool(inserted[r, i]):
            inserted[r, i] = True
            heads.append((r, i))
    return heads


@torch.inference_mode()
def greedy_generate_rereference(model: Reg2RG, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                                *, max_new_tokens: int = 256, eos_token_id: int | None = None,
                                step_logits: list[torch.Tensor] | None = None, forced: torch.Tensor | None = None,
                                **visual: Any) -> torch.Tensor:
    """Greedy reports of a re-reference model (`Reg2RGConfig.rereference`): as `greedy_generate`, and when a row
    has written "The region i is <organ>:" (i a region of its prompt, once per region), region i's own spliced
    placeholder embeddings are fed right after the colon, as in training (`model.prompt.rereference_target`).
    They take KV-cache columns but are not part of the returned ids (B, steps).

    `forced` (B, n): the tokens to write in the first n steps instead of the argmax (-1: free), for checks that
    compare these logits with a teacher-forced pass. `step_logits` receives each step's logits (every row).
    """
    llm, tok, cfg = model.llm(), model.tokenizer, model.config
    eos = tok.eos_token_id if eos_token_id is None else eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    if attention_mask is not None and bool((attention_mask[:, -1] == 0).any()):
        raise KitError("generate expects left-padded prompts (collate(..., padding_side='left'))")
    embeds = model.embed_inputs(input_ids, **visual)  # (B, P, D)
    b, p, _ = embeds.shape
    dev, per = embeds.device, cfg.region_tokens
    table, has_region = _region_tables(model, input_ids, embeds)
    cols = p + max_new_tokens + cfg.max_regions * per  # room for one re-reference of every region
    valid = torch.zeros(b, cols, dtype=torch.bool, device=dev)
    valid[:, :p] = attention_mask.to(dev).bool() if attention_mask is not None else True
    positions = (valid[:, :p].long().cumsum(-1) - 1).clamp(min=0)
    prompt_mask = (torch.ones(p, p, dtype=torch.bool, device=dev).tril()[None, None]
                   & valid[:, None, None, :p]) if not bool(valid[:, :p].all()) else None
    layers = [_Layer.of(layer) for layer in llm.model.layers]
    kv = _StaticKV(len(layers), b, llm.config.num_key_value_heads, cols, layers[0].head_dim, embeds)
    rope = _rope_table(llm, embeds, cols)
    logits = _decoder_pass(llm, layers, embeds, positions, rope, kv, 0, prompt_mask)
    colon = torch.tensor([":" in t for t in tok.convert_ids_to_tokens(list(range(len(model.token_kind))))],
                         device=dev)  # tokens that can end a head
    suppress = torch.zeros(logits.shape[-1], dtype=torch.bool, device=dev)
    suppress[model.reg2rg_token_ids] = True
    out = torch.full((b, max_new_tokens), pad, dtype=torch.long, device=dev)
    done = torch.zeros(b, dtype=torch.bool, device=dev)
    inserted = torch.zeros(b, cfg.max_regions, dtype=torch.bool, device=dev)
    ptr = torch.full((b,), p, dtype=torch.long, device=dev)  # next free column of each row
    pos = positions[:, -1] + 1  # next position id of each row
    embed, all_rows = llm.get_input_embeddings(), torch.arange(b, device=dev)

    def run(rows: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        writer = _RowWriter(kv, rows, ptr[rows], n)
        mask = writer.mask(valid)
        valid[rows[:, None], writer.cols] = True
        where = pos[rows, None] + torch.arange(n, device=dev)
        ptr[rows] += n
        pos[rows] += n
        return _decoder_pass(llm, layers, x, where, rope, writer, 0, mask)

    for step in range(max_new_tokens):
        if step_logits is not None:
            step_logits.append(logits.clone())
        nxt = logits.masked_fill(suppress, float("-inf")).argmax(-1)
        if forced is not None and step < forced.shape[1]:
            nxt = torch.where(forced[:, step].to(dev) >= 0, forced[:, step].to(dev), nxt)
        nxt = nxt.masked_fill(done, pad)
        out[:, step] = nxt
        done = done | (nxt == eos)
        if bool(done.all()) or step + 1 == max_new_tokens:
            return out[:, : step + 1]
        logits = run(all_rows, embed(nxt[:, None]))
        heads = _heads_written(tok, out[:, : step + 1], (colon[nxt] & ~done), has_region, inserted)
        if heads:
            rows = torch.tensor([r for r, _ in heads], device=dev)
            which = torch.tensor([i for _, i in heads], device=dev)
            logits[rows] = run(rows, table[rows, which])  # (rows, P, D): region i's own tokens again
    return out[:, :0]


def decode_engine(model: Reg2RG, decode: DecodeSettings, engine: str = "auto") -> str:
    """"kit" (`greedy_generate`) or "hf" (`Reg2RG.generate`) for `decode` on `model`, as `engine` asks."""
    if engine not in ("auto", "hf", "kit"):
        raise KitError(f"unknown generation engine {engine!r}; expected auto, hf or kit")
    if engine == "hf" and not model.config.rereference:
        return "hf"
    blocker = "sampling" if decode.do_sample else fast_greedy_blocker(model)
    if blocker is None:
        return "kit"
    if model.config.rereference:
        raise KitError(f"a re-reference model (model.rereference) decodes with the kit's greedy loop only, and it "
                       f"cannot decode this: {blocker}; set generate.do_sample: false, or use a model trained "
                       "without re-reference")
    if engine == "kit":
        raise KitError(f"the kit's greedy loop cannot decode this: {blocker}")
    logger.info(f"[generate] Hugging Face generate ({blocker})")
    return "hf"


# ---- Reg2RG: generation over a split of the prep cache ---------------------------------------------------------
def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A `save_pretrained` folder from: itself, a training checkpoint (`.../step-N/model`), or a run folder
    (its newest complete checkpoint)."""
    path = Path(path).expanduser()
    if (path / "config.json").is_file():
        return path
    if (path / COMPLETE).is_file() and (path / "model" / "config.json").is_file():
        return path / "model"
    if (path / "checkpoints").is_dir():
        latest = latest_checkpoint(path / "checkpoints")
        if latest is not None and (latest / "model" / "config.json").is_file():
            return latest / "model"
        raise BadInputError(path, "no complete checkpoint with a model export under checkpoints/; train it first")
    raise BadInputError(path, "not a model folder (config.json), a checkpoint (COMPLETE) or a run folder "
                              "(checkpoints/)")


def generate_predictions(
    model: Reg2RG,
    cache: PrepCache,
    out_csv: str | os.PathLike[str],
    *,
    split: str = "test",
    decode: DecodeSettings = DecodeSettings(),
    batch_size: int = 8,
    features: FeatureCache | None = None,
    names: list[str] | None = None,
    progress: bool = True,
    region_order: str = "canonical",
    engine: str = "auto",
) -> Path:
    """Generate a report for every case of `split` into `out_csv` (released format), batched with the KV cache.

    Cases already in `out_csv` are skipped, so an interrupted run resumes. Regions are in the canonical order;
    the ground truth is the target the model was trained to write (`build_target` in canonical order). Batches
    group cases with the same number of regions (less padding), and the finished file is rewritten in the
    split's case order. `engine`: "auto" (greedy search through the kit's loop where `fast_greedy_blocker`
    allows, else Hugging Face `generate`), "hf" (always `Reg2RG.generate`) or "kit" (the kit's loop or an error).
    """
    use_kit = decode_engine(model, decode, engine) == "kit"
    tok, cfg = model.tokenizer, model.config
    if region_order not in ("canonical", "shuffled"):
        raise KitError(f"region_order must be 'canonical' or 'shuffled', got {region_order!r}")
    # "shuffled" (an RRA model only): each case's regions in a fixed random order (the dataset's seed-0 draw), the
    # reference in that order too; a probe of whether the model reads each region's features or its position
    data = ReportDataset(cache, split, tok, cfg, features=features, shuffle_regions=region_order == "shuffled",
                         with_targets=False, names=names)
    device = next(model.parameters()).device
    collate = Collator(tok.pad_token_id, padding_side="left")
    model.eval()
    write_json_atomic(decoding_path(out_csv), {"decoding": decode.describe(), "settings": asdict(decode),
                                               "batch_size": batch_size, "split": split,
                                               "engine": "kit greedy loop" if use_kit else "hf generate"})
    with PredictionWriter(out_csv) as writer:
        todo = [i for i, r in enumerate(data.records) if r.name not in writer.done]
        bar = tqdm(total=len(data), initial=len(data) - len(todo), desc=f"generate ({split})",
                   disable=not progress, dynamic_ncols=True)
        for group in batch_groups(todo, [len(data.records[i].regions) for i in todo], batch_size):
            batch = collate([data[i] for i in group])
            inputs = {k: v for k, v in model_inputs(to_device(batch, device)).items() if k != "labels"}
            if decode.do_sample:  # sampling is seeded per batch: a resumed run draws what it would have
                torch.manual_seed(decode.seed + group[0])
            try:
                with torch.inference_mode():
                    if use_kit and cfg.rereference:
                        ids = greedy_generate_rereference(model, **inputs, max_new_tokens=decode.max_new_tokens)
                    elif use_kit:
                        ids = greedy_generate(model, **inputs, max_new_tokens=decode.max_new_tokens)
                    else:
                        ids = model.generate(**inputs, **decode.hf_kwargs())  # (B, new_tokens)
            except torch.OutOfMemoryError as err:
                raise KitError(f"out of memory generating case(s) {batch_names(batch)}: lower generate."
                               f"batch_size (now {batch_size})") from err
            except (RuntimeError, ValueError, IndexError) as err:
                raise KitError(f"generation failed on case(s) {batch_names(batch)}: {type(err).__name__}: "
                               f"{str(err).splitlines()[0] if str(err) else ''}") from err
            rows = []
            for i, sample, text in zip(group, batch["samples"], model.decode(ids)):
                rec = data.records[i]
                gt = build_target(sample.regions, rec.reports, cfg)  # the prompt's region order
                rows.append((rec.name, sample.prompt, gt, " ".join(text.split())))
            writer.write_batch(rows)  # one write and one fsync per batch
            bar.update(len(group))
        bar.close()
    order = {n: k for k, n in enumerate(data.names)}
    rows = sorted(read_predictions(out_csv), key=lambda r: order.get(r["AccNum"], len(order)))
    write_csv_atomic(out_csv, PRED_COLUMNS, rows, lineterminator="\n")
    return Path(out_csv)


def load_model(checkpoint: str | os.PathLike[str], device: str | None = None) -> Reg2RG:
    """`Reg2RG.from_pretrained` on what `resolve_checkpoint` finds, on `device` (default: CUDA when present)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return Reg2RG.from_pretrained(resolve_checkpoint(checkpoint), device=device)


def load_official_model(checkpoint: str | os.PathLike[str], llm_path: str | os.PathLike[str],
                        device: str | None = None) -> Reg2RG:
    """The paper preset with the authors' released whole-model checkpoint (LLaMA-2-7B-chat from `llm_path`, the
    Reg2RG weights and LoRA from `checkpoint`), for `reg2rg generate --official CKPT --llm PATH` on a GPU."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    cfg = Reg2RGConfig.preset("paper", llm_path=str(llm_path))
    model = Reg2RG(cfg, load_tokenizer(llm_path))
    report = load_official_checkpoint(model, str(checkpoint))
    logger.info(f"[generate] official checkpoint {checkpoint}: {report}")
    return model.to(device)


def generate_run(
    checkpoint: str | os.PathLike[str] | Reg2RG,
    cache_dir: str | os.PathLike[str],
    out_csv: str | os.PathLike[str],
    *,
    decode: DecodeSettings = DecodeSettings(),
    batch_size: int = 8,
    split: str = "test",
    feature_cache: bool = True,
    limit: int | None = None,
    progress: bool = True,
    region_order: str = "canonical",
) -> Path:
    """Load a trained model (or take a loaded `Reg2RG`) and write predictions for `split` of the prep cache at
    `cache_dir` (`reg2rg generate`). `feature_cache`: feed cached frozen-ViT features when the ViT is frozen
    (`use_feature_cache`); False: run the ViT on every case."""
    model = load_model(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else checkpoint
    cache = load_cache(cache_dir)
    names = [r.name for r in cache.cases(split)][:limit] if limit else None
    features = None
    if use_feature_cache(model, None if feature_cache else False):
        features = feature_cache_for(model, cache, names or [r.name for r in cache.cases(split)],
                                     progress=progress)
    return generate_predictions(model, cache, out_csv, split=split, decode=decode, batch_size=batch_size,
                                features=features, names=names, progress=progress, region_order=region_order)
