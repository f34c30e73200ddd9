"""The kit's own LLaMA decoding loops over a preallocated key/value cache: greedy search (`greedy_generate`,
the tokens Hugging Face `generate(do_sample=False)` writes at a fraction of its per-step cost) and greedy
search for re-reference models (`greedy_generate_rereference`, region i's tokens fed again after each "The
region i is <organ>:"). Either loop can instead run image-contrastive greedy search (`contrast`, `plausible`):
each token is chosen against the same prompts with reference inputs (`samples.reference`), fed in the batch's
second half. `infer.generate` picks the loop for a run.

The pieces the loops are built from are public, so that `infer.beam` builds beam search from the same ones:

- `DecoderLayer.of(layer)`: one LLaMA decoder layer's modules, looked up once;
- `StaticKV`: every layer's keys and values in buffers allocated once (rows x columns);
  `RowWriter`: writes into it at each row's own column (re-reference rows run ahead of the others);
- `rope_table(llm, like, length)`: the rotary cos/sin table of the LLM's positions;
- `decoder_pass(llm, layers, x, positions, rope, kv, start, mask)`: new inputs through every layer ->
  the last position's logits;
- `region_tables(model, input_ids, embeds)`, `heads_written(...)`: what re-reference inserts, and which rows
  have just written "The region i is <organ>:"; `References`: which rows get region tokens again after a
  step (a head, and with `rereference_sentences` a full stop inside a region's paragraph).

One file over 400 lines: both loops are built from the same cache and layer pass and the same private token
choice (`_next_tokens`, `_pick`, `_halves`); split, that choice would become an API between files.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from reg2rg_lib.errors import KitError
from reg2rg_lib.model import Reg2RG
from reg2rg_lib.model.prompt import HEAD_RE, ends_sentence

#: Generation-config fields that add a logits processor or a stopping rule to HF greedy search, with the value
#: that adds none; the kit's loop runs only when every one is at that value.
_NEUTRAL_GENERATION = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "bad_words_ids": None,
                       "min_length": 0, "min_new_tokens": None, "forced_bos_token_id": None,
                       "forced_eos_token_id": None, "begin_suppress_tokens": None, "sequence_bias": None,
                       "num_beams": 1, "stop_strings": None, "encoder_repetition_penalty": 1.0}


def fast_greedy_blocker(model: Reg2RG) -> str | None:
    """Why `greedy_generate` cannot stand in for `Reg2RG.generate` on `model` (None: it can): it implements
    the LLaMA decoder layer (pre-norm attention with rotary positions, then the MLP), the architecture of the
    kit's CPU LLMs, SmolLM2 and LLaMA-2."""
    llm = model.llm()
    config = llm.config
    if getattr(config, "model_type", None) != "llama":
        return f"LLM type {getattr(config, 'model_type', type(llm).__name__)!r} (the loop implements 'llama')"
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type")) if isinstance(rope, dict) else None
    # their frequencies follow the length seen so far: one table won't do
    if rope_type in ("dynamic", "longrope"):
        return f"rotary scaling {rope_type!r}"
    gen = getattr(llm, "generation_config", None)
    for key, neutral in _NEUTRAL_GENERATION.items():
        value = getattr(gen, key, neutral) if gen is not None else neutral
        if value not in (neutral, None):
            return f"the LLM's generation config sets {key}={value!r}"
    return None


class StaticKV:
    """Keys and values of every layer in buffers allocated once for the prompt plus the new tokens, shape
    (rows, kv_heads, columns, head_dim); column c of every row is one time step (the prompts are left-padded).
    Only the first `rows` rows are live: `keep` moves the live ones up instead of reallocating."""

    def __init__(
        self, layers: int, rows: int, heads: int, columns: int, head_dim: int, like: torch.Tensor
    ) -> None:
        shape = (rows, heads, columns, head_dim)
        # zeros, not uninitialised memory: re-reference rows advance by different numbers of columns, so a
        # row has columns it never writes; they are masked, but a masked column still enters the products
        # (its weight is 0, and 0 * NaN is NaN), and NaN left there by earlier work in the process (training,
        # in a grid worker) cut reports
        self.keys = [like.new_zeros(shape) for _ in range(layers)]
        self.values = [like.new_zeros(shape) for _ in range(layers)]
        self.rows = rows

    def write(
        self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (rows, heads, n, head_dim) at columns start..start+n; return the keys/values up to
        there."""
        end, rows = start + k.shape[2], self.rows
        keys, values = self.keys[layer][:rows], self.values[layer][:rows]
        keys[:, :, start:end] = k
        values[:, :, start:end] = v
        return keys[:, :, :end], values[:, :, :end]

    def keep(self, rows: torch.Tensor, columns: int) -> None:
        """Keep only `rows` (indices of live rows, ascending), their first `columns` columns moved to the
        top."""
        for buf in (*self.keys, *self.values):
            buf[: len(rows), :, :columns] = buf[rows, :, :columns]  # the gather copies before the write
        self.rows = len(rows)


@dataclass(frozen=True)
class DecoderLayer:
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
    def of(cls, layer: torch.nn.Module) -> DecoderLayer:
        a = layer.self_attn
        return cls(
            layer.input_layernorm,
            a.q_proj,
            a.k_proj,
            a.v_proj,
            a.o_proj,
            layer.post_attention_layernorm,
            layer.mlp,
            a.head_dim,
            a.num_key_value_groups,
            a.scaling,
        )


def _rope(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Rotary positions, x (B, H, n, hd): transformers' `x * cos + rotate_half(x) * sin`, where
    rotate_half(x) * sin == roll(x, hd/2) * signed_sin (sin with its first half negated) term by term,
    exactly."""
    return x * cos + x.roll(x.shape[-1] // 2, -1) * signed_sin


def _attention(m: DecoderLayer, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
               kv: StaticKV | RowWriter, i: int, start: int, mask: torch.Tensor | None) -> torch.Tensor:
    """LLaMA self-attention of h (B, n, D) at columns start..start+n, computed as transformers' SDPA path
    does."""
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


def decoder_pass(llm: torch.nn.Module, layers: list[DecoderLayer], x: torch.Tensor, positions: torch.Tensor,
                 rope: tuple[torch.Tensor, torch.Tensor], kv: StaticKV | RowWriter, start: int,
                 mask: torch.Tensor | None) -> torch.Tensor:
    """x (B, n, D) at `positions` (B, n) through every decoder layer -> the last position's logits (B, V),
    float32. Keys and values go into `kv` at columns start..start+n (a `RowWriter`: at each row's own
    columns); `rope` is `rope_table`'s; `mask` is the attention mask (None: causal, no padding)."""
    cos, sin = rope[0][positions].unsqueeze(1), rope[1][positions].unsqueeze(1)  # (B, 1, n, hd)
    for i, m in enumerate(layers):
        x = x + _attention(m, m.norm1(x), cos, sin, kv, i, start, mask)
        x = x + m.mlp(m.norm2(x))
    return llm.lm_head(llm.model.norm(x)[:, -1:]).float()[:, -1]  # (B, V); normed whole, as HF does


def rope_table(llm: torch.nn.Module, like: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin (`_rope`) of positions 0..length-1, (length, hd), from the LLM's own rotary
    module."""
    cos, sin = llm.model.rotary_emb(like, torch.arange(length, device=like.device)[None])
    half = sin.shape[-1] // 2
    return cos[0], torch.cat([-sin[0, :, :half], sin[0, :, half:]], dim=-1)


@torch.inference_mode()
def greedy_generate(model: Reg2RG, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                    max_new_tokens: int = 256, drop_finished: bool = True, eos_token_id: int | None = None,
                    step_logits: list[torch.Tensor] | None = None, contrast: float = 0.0,
                    plausible: float = 0.3, **visual: Any) -> torch.Tensor:
    """Greedy reports for a LEFT-padded batch, the tokens `Reg2RG.generate(..., do_sample=False)` writes (new
    ids (B, steps), finished rows padded with the pad token), at a fraction of its per-step cost.

    One prompt pass fills a key/value cache allocated once for the prompt plus `max_new_tokens`; each step
    feeds the last tokens through the LLM's own modules. Finished rows leave the batch (`drop_finished`; once
    a quarter of the rows are done, so that the moves stay rare), and the step cost follows the reports still
    being written. `eos_token_id`: the token that ends a report (default: the tokenizer's). `step_logits`: a
    list that receives each step's raw logits (live rows, float32), for checks. Check `fast_greedy_blocker`
    first. `contrast`, `plausible`: image-contrastive greedy search, as in `greedy_generate_rereference` (the
    batch's second half holds the reference inputs; rows are then kept to the end). Ids (B/2, steps).
    """
    llm, tok = model.llm(), model.tokenizer
    eos = tok.eos_token_id if eos_token_id is None else eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos  # as HF generate falls back
    if attention_mask is not None and bool((attention_mask[:, -1] == 0).any()):
        raise KitError("generate expects left-padded prompts (collate(..., padding_side='left'))")
    embeds = model.embed_inputs(input_ids, **visual)  # (B, P, D)
    b, p, _ = embeds.shape
    half, drop_finished = _halves(b, contrast), drop_finished and not contrast
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
    cfg, layers = llm.config, [DecoderLayer.of(layer) for layer in llm.model.layers]
    kv = StaticKV(len(layers), b, cfg.num_key_value_heads, cols, layers[0].head_dim, embeds)
    rope = rope_table(llm, embeds, cols)
    logits = decoder_pass(llm, layers, embeds, positions, rope, kv, 0, prompt_mask)
    out = torch.full((b, max_new_tokens), pad, dtype=torch.long, device=embeds.device)
    suppress = torch.zeros(logits.shape[-1], dtype=torch.bool, device=embeds.device)  # the Reg2RG tokens
    suppress[model.reg2rg_token_ids] = True
    rows = torch.arange(b, device=embeds.device)  # batch row -> row of `out`
    done = torch.zeros(b, dtype=torch.bool, device=embeds.device)
    last, embed = positions[:, -1:], llm.get_input_embeddings()
    for step in range(max_new_tokens):
        if step_logits is not None:
            step_logits.append(logits.clone())
        nxt = _next_tokens(tok, logits, suppress, out[:half, :step], half, contrast, plausible)  # (rows,)
        nxt = nxt.masked_fill(done, pad)  # a finished row writes (and is fed) padding, as in HF generate
        out[rows, step] = nxt
        done = done | (nxt == eos)
        n_done = int(done.sum())
        if n_done == len(rows) or step + 1 == max_new_tokens:
            return out[:half, : step + 1]
        col = p + step
        if drop_finished and n_done and n_done * 4 >= len(rows):
            keep = (~done).nonzero().squeeze(1)
            kv.keep(keep, col)
            rows, nxt, last, done = rows[keep], nxt[keep], last[keep], done[keep]
            step_mask = step_mask[keep] if step_mask is not None else None
        last = last + 1
        mask = step_mask[:, :, :, : col + 1] if step_mask is not None else None
        logits = decoder_pass(llm, layers, embed(nxt[:, None]), last, rope, kv, col, mask)
    return out[:half, :0]


class RowWriter:
    """A key/value writer for re-reference decoding: every live row writes at its own column (`starts`), since
    a row that re-referenced a region has taken more columns than one that did not. `rows` are buffer rows."""

    def __init__(self, kv: StaticKV, rows: torch.Tensor, starts: torch.Tensor, n: int) -> None:
        self.kv, self.rows, self.cols = kv, rows, starts[:, None] + torch.arange(n, device=starts.device)
        self.end = int(self.cols.max()) + 1
        self.all = len(rows) == kv.rows and bool((rows == torch.arange(len(rows), device=rows.device)).all())

    def write(
        self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
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


def region_tables(
    model: Reg2RG, input_ids: torch.Tensor, embeds: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each prompt region's spliced placeholder embeddings, (B, max_regions, P, D), and which regions each
    row's prompt has, (B, max_regions): what re-reference inserts after "The region i is <organ>:"."""
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


def heads_written(tok: Any, written: torch.Tensor, candidates: torch.Tensor, has_region: torch.Tensor,
                   inserted: torch.Tensor) -> list[tuple[int, int]]:
    """(row, i) for each candidate row whose text now ends with "The region i is <organ>:", i a region of its
    prompt not re-referenced yet (marked in `inserted`). `written` (B, steps) is what the rows wrote so
    far."""
    heads = []
    for r in candidates.nonzero().flatten().tolist():
        m = _HEAD_END.search(tok.decode(written[r, -24:].tolist()))
        i = int(m.group(1)) if m else has_region.shape[1]
        if i < has_region.shape[1] and bool(has_region[r, i]) and not bool(inserted[r, i]):
            inserted[r, i] = True
            heads.append((r, i))
    return heads


#: Sentence re-references one row may take in a report (`References`): a cap, so that the KV cache is
#: allocated once; a report that ends more sentences than this (a loop) goes on without them.
SENTENCE_REFERENCES = 48


class References:
    """Where a re-reference model's decoder feeds region tokens again (`model.prompt.rereference_target`'s
    rule): after a row writes "The region i is <organ>:" (once per region i of its prompt), and with
    `cfg.rereference_sentences` after each token that ends a sentence inside region i's paragraph
    (`prompt.ends_sentence`), at most `SENTENCE_REFERENCES` of those a row."""

    def __init__(self, model: Reg2RG, rows: int, vocab: int, dev: torch.device) -> None:
        cfg, self.tok = model.config, model.tokenizer
        self.colon, self.suppress = _head_and_placeholder_tokens(model, vocab, dev)
        self.sentences = bool(cfg.rereference_sentences)
        self.inserted = torch.zeros(rows, cfg.max_regions, dtype=torch.bool, device=dev)
        self.current = torch.full((rows,), -1, dtype=torch.long, device=dev)  # the paragraph being written
        self.left = torch.full((rows,), SENTENCE_REFERENCES if self.sentences else 0, device=dev)
        stops = torch.zeros(vocab, dtype=torch.bool, device=dev)
        if self.sentences:
            ids = list(range(len(model.token_kind)))
            stops[: len(ids)] = torch.tensor([ends_sentence(self.tok.decode([i])) for i in ids])
            stops &= ~self.suppress
        self.stops = stops

    @staticmethod
    def columns(model: Reg2RG) -> int:
        """KV-cache columns a row may need for its re-references."""
        cfg = model.config
        count = cfg.max_regions + (SENTENCE_REFERENCES if cfg.rereference_sentences else 0)
        return count * cfg.region_tokens

    def after(self, written: torch.Tensor, nxt: torch.Tensor, done: torch.Tensor, has_region: torch.Tensor
              ) -> list[tuple[int, int]]:
        """(row, region) pairs to feed after the token `nxt` (B,) each row has just written (`written`: its
        ids so far)."""
        heads = heads_written(self.tok, written, self.colon[nxt] & ~done, has_region, self.inserted)
        for r, i in heads:
            self.current[r] = i
        if not self.sentences:
            return heads
        taken = {r for r, _ in heads}
        stop = self.stops[nxt] & ~done & (self.current >= 0) & (self.left > 0)
        more = [(r, int(self.current[r])) for r in stop.nonzero().flatten().tolist() if r not in taken]
        for r, _ in more:
            self.left[r] -= 1
        return heads + more


#: A region head being written ("The region", "The region 3 is hea"): its digit and organ name are chosen
#: without the contrast (the reference inputs show the same organ: contrasting would only add noise there).
_IN_HEAD = re.compile(r"The region[^:.]*$")


def _writing_head(tok: Any, written: torch.Tensor) -> torch.Tensor:
    """(rows,) bool: the row's text ends inside a region head."""
    return torch.tensor([bool(_IN_HEAD.search(tok.decode(row[-12:].tolist()))) for row in written],
                        dtype=torch.bool, device=written.device)


def _halves(rows: int, contrast: float) -> int:
    """The rows whose reports are returned: all, or with `contrast` the first half (the second holds the
    reference inputs)."""
    if contrast and rows % 2:
        raise KitError("contrastive decoding needs the batch's reference half: an even number of rows")
    return rows // 2 if contrast else rows


def _next_tokens(tok: Any, logits: torch.Tensor, suppress: torch.Tensor, written: torch.Tensor, half: int,
                 contrast: float, plausible: float) -> torch.Tensor:
    """The next token of every row (B,): greedy's, or the image-contrastive choice (`_pick`), which leaves a
    region head being written (`written`: the first half's ids so far) to greedy."""
    check_finite(logits)
    plain = _writing_head(tok, written) if contrast else None
    return _pick(logits.masked_fill(suppress, float("-inf")), half, contrast, plausible, plain)


def check_finite(logits: torch.Tensor) -> None:
    """Refuse NaN or infinite logits: an argmax over them picks an arbitrary token (often the end of the
    report), so the report would be silently cut or wrong."""
    if not bool(torch.isfinite(logits).all()):
        raise ValueError("the model's next-token logits are NaN or infinite (a checkpoint or an input "
                         "holding NaN/Inf, or an overflow): no report is written from them")


def _pick(scores: torch.Tensor, half: int, contrast: float, plausible: float,
          plain: torch.Tensor | None = None) -> torch.Tensor:
    """Greedy's next tokens (B,) from the masked logits (B, V); with `contrast`, the contrastive choice of
    rows :half (against rows half:), given to both halves; rows flagged in `plain` (half,) stay greedy."""
    if not contrast:
        return scores.argmax(-1)
    real, reference = scores[:half], scores[half:]
    logp = real.log_softmax(-1)
    keep = logp >= logp.max(-1, keepdim=True).values + math.log(plausible)  # the plausible tokens
    mixed = (real + contrast * (real - reference)).masked_fill(~keep, float("-inf"))
    nxt = mixed.argmax(-1)
    if plain is not None:
        nxt = torch.where(plain, real.argmax(-1), nxt)
    return torch.cat([nxt, nxt])


def _prompt_columns(attention_mask: torch.Tensor | None, b: int, p: int, cols: int, dev: torch.device
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(valid (B, cols): the prompt's non-padding columns, positions (B, P) as HF generate numbers them, the
    prompt pass's (B, 1, P, P) causal mask without padding, None when no row is padded)."""
    valid = torch.zeros(b, cols, dtype=torch.bool, device=dev)
    valid[:, :p] = attention_mask.to(dev).bool() if attention_mask is not None else True
    positions = (valid[:, :p].long().cumsum(-1) - 1).clamp(min=0)
    prompt_mask = (torch.ones(p, p, dtype=torch.bool, device=dev).tril()[None, None]
                   & valid[:, None, None, :p]) if not bool(valid[:, :p].all()) else None
    return valid, positions, prompt_mask


def _head_and_placeholder_tokens(model: Reg2RG, vocab: int, dev: torch.device
                                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens that can end a region head (a colon in them), the Reg2RG placeholder tokens never written)."""
    names = model.tokenizer.convert_ids_to_tokens(list(range(len(model.token_kind))))
    colon = torch.tensor([":" in t for t in names], device=dev)
    suppress = torch.zeros(vocab, dtype=torch.bool, device=dev)
    suppress[model.reg2rg_token_ids] = True
    return colon, suppress


@torch.inference_mode()
def greedy_generate_rereference(
    model: Reg2RG,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    max_new_tokens: int = 256,
    eos_token_id: int | None = None,
    step_logits: list[torch.Tensor] | None = None,
    forced: torch.Tensor | None = None,
    contrast: float = 0.0,
    plausible: float = 0.3,
    **visual: Any,
) -> torch.Tensor:
    """Greedy reports of a re-reference model (`Reg2RGConfig.rereference`): as `greedy_generate`, and when a
    row has written "The region i is <organ>:" (i a region of its prompt, once per region), region i's own
    spliced placeholder embeddings are fed right after the colon, and with `rereference_sentences` after each
    full stop of its paragraph, as in training (`model.prompt.rereference_target`; `References`). They take
    KV-cache columns but are not part of the returned ids (B, steps).

    `forced` (B, n): the tokens to write in the first n steps instead of the argmax (-1: free), for checks
    that compare these logits with a teacher-forced pass. `step_logits` receives each step's logits (every
    row).

    `contrast` > 0: image-contrastive greedy search (`samples.reference`). The batch's second half holds the
    first half's prompts with reference inputs (every region's average image); both halves are fed the same
    tokens, chosen on the first half as the argmax of `real + contrast * (real - reference)` (logits) among
    the tokens whose probability is at least `plausible` times the most probable one's, except inside a region
    head (its digit and organ name stay greedy's). Ids (B/2, steps).
    """
    llm, tok = model.llm(), model.tokenizer
    eos = tok.eos_token_id if eos_token_id is None else eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    if attention_mask is not None and bool((attention_mask[:, -1] == 0).any()):
        raise KitError("generate expects left-padded prompts (collate(..., padding_side='left'))")
    embeds = model.embed_inputs(input_ids, **visual)  # (B, P, D)
    b, p, _ = embeds.shape
    half, dev = _halves(b, contrast), embeds.device
    table, has_region = region_tables(model, input_ids, embeds)
    cols = p + max_new_tokens + References.columns(model)  # room for every re-reference a row may take
    valid, positions, prompt_mask = _prompt_columns(attention_mask, b, p, cols, dev)
    layers = [DecoderLayer.of(layer) for layer in llm.model.layers]
    kv = StaticKV(len(layers), b, llm.config.num_key_value_heads, cols, layers[0].head_dim, embeds)
    rope = rope_table(llm, embeds, cols)
    logits = decoder_pass(llm, layers, embeds, positions, rope, kv, 0, prompt_mask)
    refs = References(model, b, logits.shape[-1], dev)
    out = torch.full((b, max_new_tokens), pad, dtype=torch.long, device=dev)
    done = torch.zeros(b, dtype=torch.bool, device=dev)
    ptr = torch.full((b,), p, dtype=torch.long, device=dev)  # next free column of each row
    pos = positions[:, -1] + 1  # next position id of each row
    embed, all_rows = llm.get_input_embeddings(), torch.arange(b, device=dev)

    def run(rows: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        writer = RowWriter(kv, rows, ptr[rows], n)
        mask = writer.mask(valid)
        valid[rows[:, None], writer.cols] = True
        where = pos[rows, None] + torch.arange(n, device=dev)
        ptr[rows] += n
        pos[rows] += n
        return decoder_pass(llm, layers, x, where, rope, writer, 0, mask)

    for step in range(max_new_tokens):
        if step_logits is not None:
            step_logits.append(logits.clone())
        nxt = _next_tokens(tok, logits, refs.suppress, out[:half, :step], half, contrast, plausible)
        if forced is not None and step < forced.shape[1]:
            nxt = torch.where(forced[:, step].to(dev) >= 0, forced[:, step].to(dev), nxt)
        nxt = nxt.masked_fill(done, pad)
        out[:, step] = nxt
        done = done | (nxt == eos)
        if bool(done.all()) or step + 1 == max_new_tokens:
            return out[:half, : step + 1]
        logits = run(all_rows, embed(nxt[:, None]))
        again = refs.after(out[:, : step + 1], nxt, done, has_region)
        if again:
            rows = torch.tensor([r for r, _ in again], device=dev)
            which = torch.tensor([i for _, i in again], device=dev)
            logits[rows] = run(rows, table[rows, which])  # (rows, P, D): region i's own tokens again
    return out[:half, :0]
