"""Beam search in the kit's decoder: the report whose whole token sequence is most probable among `num_beams`
kept hypotheses, instead of the most probable token at each step (greedy).

Why a kit decoder has it: greedy decoding commits to the first token of a sentence. When a region's normal
sentence has probability 0.4 and five finding sentences that all start "There is" share 0.6, greedy writes
"There is", then the likeliest finding, so a finding the image does not support is written because the
findings *together* outweigh the normal sentence. Beam search compares whole continuations, so the choice is
made between sentences. Re-reference models (`Reg2RGConfig.rereference`) get region i's own tokens after each
"The region i is <organ>:" a hypothesis writes, exactly as in `greedy_generate_rereference`; other models
decode without insertions. With `num_beams=1` this is greedy search (the same tokens; a test checks it).

Scores are summed log-probabilities (no length normalisation: the reports of one case differ in length only by
the sentences chosen, and a normalised score would favour longer findings). A case stops when its best
hypothesis has ended, since the others can only lose probability.
"""

from __future__ import annotations

from typing import Any

import torch

from reg2rg_lib.errors import KitError
from reg2rg_lib.infer.decoder import (
    DecoderLayer,
    RowWriter,
    StaticKV,
    check_finite,
    decoder_pass,
    heads_written,
    region_tables,
    rope_table,
)
from reg2rg_lib.model import Reg2RG


class _Beams:
    """Per-hypothesis state of a beam search over B cases x K beams (row = case * K + beam)."""

    def __init__(self, b: int, k: int, cols: int, p: int, max_new: int, regions: int, pad: int,
                 dev: torch.device) -> None:
        self.b, self.k = b, k
        self.out = torch.full((b * k, max_new), pad, dtype=torch.long, device=dev)
        self.done = torch.zeros(b * k, dtype=torch.bool, device=dev)
        self.inserted = torch.zeros(b * k, regions, dtype=torch.bool, device=dev)
        self.valid = torch.zeros(b * k, cols, dtype=torch.bool, device=dev)
        self.ptr = torch.full((b * k,), p, dtype=torch.long, device=dev)  # next free column of each row
        self.pos = torch.zeros(b * k, dtype=torch.long, device=dev)  # next position id of each row
        self.scores = torch.zeros(b, k, device=dev)
        self.scores[:, 1:] = float("-inf")  # the K copies of a prompt are one hypothesis until the first step

    def reorder(self, parent: torch.Tensor, kv: StaticKV) -> None:
        """Every row takes the state of row `parent[row]` (its hypothesis' parent), key/value cache
        included."""
        for name in ("out", "done", "inserted", "valid", "ptr", "pos"):
            setattr(self, name, getattr(self, name)[parent])
        end = int(self.ptr.max())
        for buf in (*kv.keys, *kv.values):
            buf[:, :, :end] = buf[parent, :, :end]  # the gather copies before the write

    def finished(self) -> bool:
        """True when every case's best hypothesis has ended."""
        best = self.scores.argmax(1)
        return bool(self.done.view(self.b, self.k)[torch.arange(self.b, device=best.device), best].all())

    def best(self, steps: int) -> torch.Tensor:
        """The best hypothesis of each case, (B, steps)."""
        rows = self.scores.argmax(1) + torch.arange(self.b, device=self.scores.device) * self.k
        return self.out[rows, :steps]


@torch.inference_mode()
def beam_generate(model: Reg2RG, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                  num_beams: int = 4, max_new_tokens: int = 256, eos_token_id: int | None = None,
                  **visual: Any) -> torch.Tensor:
    """Beam-search reports for a LEFT-padded batch: new ids (B, steps) of each case's most probable hypothesis
    among `num_beams`, finished rows padded with the pad token. Re-reference models re-read region i's tokens
    after each head a hypothesis writes (`greedy_generate_rereference`'s rule)."""
    if num_beams < 1:
        raise KitError(f"num_beams must be >= 1, got {num_beams}")
    if model.config.rereference_sentences:
        raise KitError("beam search does not insert the sentence re-references of this model "
                       "(model.rereference_sentences); decode it greedily (generate.num_beams: 1)")
    llm, tok, cfg = model.llm(), model.tokenizer, model.config
    eos = tok.eos_token_id if eos_token_id is None else eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    if attention_mask is not None and bool((attention_mask[:, -1] == 0).any()):
        raise KitError("generate expects left-padded prompts (collate(..., padding_side='left'))")
    k = num_beams
    embeds = model.embed_inputs(input_ids, **visual)  # (B, P, D), once per case
    b, p, _ = embeds.shape
    dev, per = embeds.device, cfg.region_tokens
    table, has_region = region_tables(model, input_ids, embeds)
    table, has_region = table.repeat_interleave(k, 0), has_region.repeat_interleave(k, 0)
    embeds = embeds.repeat_interleave(k, 0)
    cols = p + max_new_tokens + (cfg.max_regions * per if cfg.rereference else 0)
    st = _Beams(b, k, cols, p, max_new_tokens, cfg.max_regions, pad, dev)
    if attention_mask is not None:
        st.valid[:, :p] = attention_mask.to(dev).bool().repeat_interleave(k, 0)
    else:
        st.valid[:, :p] = True
    positions = (st.valid[:, :p].long().cumsum(-1) - 1).clamp(min=0)
    prompt_mask = (torch.ones(p, p, dtype=torch.bool, device=dev).tril()[None, None]
                   & st.valid[:, None, None, :p]) if not bool(st.valid[:, :p].all()) else None
    layers = [DecoderLayer.of(layer) for layer in llm.model.layers]
    kv = StaticKV(len(layers), b * k, llm.config.num_key_value_heads, cols, layers[0].head_dim, embeds)
    rope = rope_table(llm, embeds, cols)
    logits = decoder_pass(llm, layers, embeds, positions, rope, kv, 0, prompt_mask)
    st.pos = positions[:, -1] + 1
    colon = torch.tensor([":" in t for t in tok.convert_ids_to_tokens(list(range(len(model.token_kind))))],
                         device=dev)  # tokens that can end a head
    suppress = torch.zeros(logits.shape[-1], dtype=torch.bool, device=dev)
    suppress[model.reg2rg_token_ids] = True
    embed, all_rows = llm.get_input_embeddings(), torch.arange(b * k, device=dev)
    offsets = (torch.arange(b, device=dev) * k)[:, None]

    def run(rows: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        writer = RowWriter(kv, rows, st.ptr[rows], n)
        mask = writer.mask(st.valid)
        st.valid[rows[:, None], writer.cols] = True
        where = st.pos[rows, None] + torch.arange(n, device=dev)
        st.ptr[rows] += n
        st.pos[rows] += n
        return decoder_pass(llm, layers, x, where, rope, writer, 0, mask)

    for step in range(max_new_tokens):
        check_finite(logits)
        logp = torch.log_softmax(logits.masked_fill(suppress, float("-inf")), -1)  # (BK, V)
        logp[st.done] = float("-inf")
        logp[st.done, pad] = 0.0  # an ended hypothesis only writes padding, at no cost
        vocab = logp.shape[-1]
        top, idx = (st.scores.view(-1, 1) + logp).view(b, k * vocab).topk(k, dim=1)  # (B, K)
        st.reorder((idx // vocab + offsets).flatten(), kv)
        st.scores, nxt = top, (idx % vocab).flatten()
        st.out[:, step] = nxt
        st.done = st.done | (nxt == eos)
        if st.finished() or step + 1 == max_new_tokens:
            return st.best(step + 1)
        logits = run(all_rows, embed(nxt[:, None]))
        if cfg.rereference:
            heads = heads_written(tok, st.out[:, : step + 1], colon[nxt] & ~st.done, has_region, st.inserted)
            if heads:
                rows = torch.tensor([r for r, _ in heads], device=dev)
                which = torch.tensor([i for _, i in heads], device=dev)
                logits[rows] = run(rows, table[rows, which])  # (rows, P, D): region i's own tokens again
    return st.best(0)
