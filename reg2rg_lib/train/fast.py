"""The fast training path on cached inputs: the loss of `run.reg2rg_step` on the same batches, for less work.

`fit(model, fast, fast.collate, fast_step_fn(...), ...)` with `fast = FastTrainData(model, dataset)` trains on
the batches `fit(model, dataset, Collator(...), reg2rg_step, ...)` would train on (same cases, region orders,
dropped regions, targets and loss weights) and computes the same loss up to float rounding
(`reg2rg bench train-demo` prints both, their difference and the samples/s of each: on the demo ~1.6x today's
at batch 2, ~2x at batch 8, one core; benchmarks/RESULTS.md). What it does differently, each exact in real
arithmetic:

- **Text**: a sample's target is the prompt-order join of one piece per region ("The region i is <organ>:
  ..."); each piece is tokenised once and reused (with re-reference, region i's placeholders inserted after
  its head, as `prompt.rereference_target` does), with its organ-name token positions, instead of tokenising
  every sample's ~700-character target twice per step. The prompt's ids are computed once per region count.
  `verify` checks every case against `ReportDataset.__getitem__` before training (ids, labels, the loss masks,
  the region order), and any target the pieces do not spell exactly is built by the dataset instead.
- **Visual inputs**: the frozen ViT's features and the region masks are read into tables once. Both reach
  trainable weights only through a LayerNorm, so their normalised values are cached
  (`perceiver.normalize_media`, `geometry.PatchTable`) and the LayerNorm's affine part is folded into the next
  Linear; uniform mask patches (~70%) embed to one row (`geometry.encode_patch_rows`). The Perceiver's first
  layer, whose queries are the same for every image, attends without projecting the media's keys and values
  (`perceiver.resample_normed`).
- **Splice**: one gather from [token table; structure rows; global, texture, geometry tokens] with an index
  built at collate time, instead of an embedding lookup, a `where` and three `masked_scatter`s over (B, L, D)
  (a re-referenced placeholder reads the row of its first occurrence, as `reg2rg.first_occurrence` copies it).
- **LLM**: no padding mask (right padding under a causal mask never reaches a real position, and the padded
  positions carry no loss), so attention runs its causal kernel; the last decoder layer computes queries,
  attention, MLP and the final norm only from the first position that predicts a target token on, and the
  output layer and cross-entropy only at positions whose next token is a target (the prompt, ~55% of a demo
  sample, is skipped there).
- **Region label head** (`train.label_weight`): its rows are the last layer's states at the positions that
  predict each paragraph's first word (`_Piece.start`, found once per piece as
  `samples.dataset.paragraph_starts` finds them), through the final norm, as `run.region_label_loss` reads
  them.

It needs cached ViT features (`train.feature_cache`), a LLaMA-architecture LLM without dropout in attention
and without gradient checkpointing, and one process (it calls the model's parts, not a DDP wrapper's forward);
`unsupported_reason` says why it does not apply.

One file over 400 lines: `FastTrainData`'s batches are laid out for `fast_loss` alone (the splice index, the
normalised media, the target rows), and `verify` checks its items against the dataset's before that loss
trains on them; split, the batch layout would become an API between files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right

from reg2rg_lib.errors import KitError
from reg2rg_lib.model import Sample, build_sample, build_target
from reg2rg_lib.model.geometry import PatchTable, encode_patch_rows
from reg2rg_lib.model.llm import base_llm
from reg2rg_lib.model.perceiver import normalize_media, resample_normed
from reg2rg_lib.model.prompt import GEOMETRY, GLOBAL, STRUCT, STRUCT_TOKENS, TEXT, TEXTURE, rereference_target
from reg2rg_lib.model.reg2rg import KIND_CODES, drop_branches, first_occurrence, label_head_loss
from reg2rg_lib.samples.dataset import label_rows, name_positions, paragraph_starts

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100


def unsupported_reason(model: Any, dataset: Any) -> str | None:
    """Why the fast path cannot train `model` on `dataset` (None: it can)."""
    if getattr(dataset, "features", None) is None:
        return "it needs cached frozen-ViT features (train.feature_cache)"
    if not getattr(dataset, "with_targets", True):
        return "it trains on targets (the dataset was built without them)"
    llm = base_llm(model.lang_model)
    if type(llm).__name__ != "LlamaForCausalLM":
        return f"it runs LLaMA-architecture LLMs, not {type(llm).__name__}"
    if getattr(llm.config, "attention_dropout", 0.0):
        return "the LLM has attention dropout"
    checkpointing = getattr(type(llm), "is_activation_checkpointing", None)  # transformers >= 5.x's name
    if getattr(
        llm,
        "is_activation_checkpointing" if checkpointing is not None else "is_gradient_checkpointing",
        False,
    ):
        return "gradient checkpointing is on"
    if set(KIND_CODES) != {TEXT, STRUCT, GLOBAL, TEXTURE, GEOMETRY}:
        return f"the prompts have token kinds it does not splice ({sorted(KIND_CODES)})"
    return None


@dataclass
class _Piece:
    """One region's part of a target, tokenised: ids (with re-reference, region i's placeholders after its
    head), labels (-100 on those placeholders), and the positions (within the piece) of its organ-name
    tokens."""

    ids: list[int]
    labels: list[int]
    names: list[int]
    start: int = -1  # the position (within the piece) that predicts its paragraph's first word


@dataclass
class FastItem:
    """What `FastTrainData[i]` gives `collate`: the case, its region rows in prompt order, the token ids, and
    the positions of the loss-weighted tokens (absolute, in `ids`)."""

    name: str
    case: int
    rows: torch.Tensor  # (R,) rows of the region tables, in prompt order
    ids: list[int]
    labels: list[int]
    n_prompt: int
    names: list[int]
    drop: torch.Tensor | None = None  # (R,) branch dropout codes, prompt order (`ReportDataset.branch_drop`)
    # the region label head's targets (`samples.dataset.region_label_targets`), prompt order; None without it
    label_positions: list[int] | None = None
    label_targets: torch.Tensor | None = None  # (R, 18)
    label_mask: torch.Tensor | None = None  # (R, 18)


class FastTrainData(torch.utils.data.Dataset):
    """The training items of `dataset` (a `ReportDataset` with a feature cache) for `fast_loss`.

    Reads each case's ViT features and masks once into tables (normalised: `normalize_media`, `PatchTable`);
    `verify` (default) checks every case's first-epoch item against the dataset's own before training."""

    def __init__(self, model: Any, dataset: Any, *, verify: bool = True) -> None:
        reason = unsupported_reason(model, dataset)
        if reason:
            raise KitError(f"the fast training path does not apply: {reason}")
        self.ds, self.cfg, self.tok = dataset, dataset.cfg, dataset.tokenizer
        el = model.embedding_layer
        self.records = dataset.records
        self._pieces: dict[tuple[str, bool], _Piece] = {}
        self._prompts: dict[int, tuple[list[int], int]] = {}
        self.fallbacks = 0  # items whose target the pieces did not spell: built by the dataset
        # --- the splice's lookup tables (model buffers; they never change) ---
        self.token_kind = model.token_kind.cpu()
        self.struct_index = model.struct_index.cpu()
        self.vocab = model.lang_model.get_input_embeddings().num_embeddings
        self.pad_id = self.tok.pad_token_id
        # --- per-case tensors, in the case's canonical region order ---
        global_hat, region_hat, masks, first = [], [], [], [0]
        for rec in self.records:
            feats = dataset.features.get(rec.name)
            n = len(rec.regions)
            for key, out in (("global_feats", global_hat), ("region_feats", region_hat)):
                if key in feats:
                    out.append(normalize_media(el.perceiver, el.standardize(key, feats[key])))
            mask = dataset._images[rec.name].get("region_masks")  # (R, 1, H, W, D), as the dataset feeds them
            if mask is not None:
                masks.append(mask)
            first.append(first[-1] + n)
        self.first_row = first[:-1]  # each case's first row in the region tables
        self.global_hat = torch.cat(global_hat) if global_hat else None  # (cases, T, vit_dim)
        self.region_hat = torch.cat(region_hat) if region_hat else None  # (regions, T, vit_dim)
        self.patches = PatchTable.build(el.mask_encoder, torch.cat(masks)) if masks else None
        self.latents = model.config.perceiver_latents
        self.standardize = el.standardize  # `vision_standardize` (identity when off)
        self.media_eps = next(iter({layer[0].norm_media.eps for layer in el.perceiver.layers}), 1e-5) \
            if el.perceiver is not None else 1e-5
        if verify:
            self.verify()

    # ---- items ---------------------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        self.ds.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def _prompt(self, n_regions: int) -> tuple[list[int], int]:
        """bos + prompt ids for `n_regions` regions (computed once per count by `build_sample`)."""
        if n_regions not in self._prompts:
            sample = build_sample(self.records[0].regions[:1] * n_regions, None, self.tok, self.cfg)
            self._prompts[n_regions] = (list(sample.input_ids), sample.n_prompt)
        return self._prompts[n_regions]

    def _piece(self, text: str, first: bool) -> _Piece:
        """The tokens of one region's part of a target (with the space that joins it to the previous part)."""
        key = (text, first)
        piece = self._pieces.get(key)
        if piece is None:
            text = text if first else " " + text
            # region i's placeholders after "The region i is <organ>:", as build_sample
            if self.cfg.rereference:
                ids, labels, where = rereference_target(text, self.tok, self.cfg)
            else:
                ids = list(self.tok(text, add_special_tokens=False)["input_ids"])
                labels, where = list(ids), []
            probe = Sample(input_ids=ids, labels=[], order=[], regions=[], prompt="", target=text, n_prompt=0,
                           target_positions=where)
            starts = list(paragraph_starts(probe, self.tok).values())
            piece = self._pieces[key] = _Piece(ids, labels, name_positions(probe, self.tok),
                                               starts[0] if len(starts) == 1 else -1)
        return piece

    def _texts(self, regions: list[str], reports: dict[str, str]) -> list[str]:
        """The target's parts, one per region, whose join with single spaces is `build_target`'s target."""
        paragraphs = [" ".join(str(reports.get(r, "")).split()) for r in regions]
        if not self.cfg.rra:
            return [p for p in paragraphs if p]
        return [self.cfg.target_template.format(i=i, region=r, report=p)
                for i, (r, p) in enumerate(zip(regions, paragraphs))]

    def __getitem__(self, index: int) -> FastItem:
        rec = self.records[index]
        rng = self.ds.region_rng(rec.name)
        keep = self.ds.kept_regions(len(rec.regions), rng)
        regions = [rec.regions[i] for i in keep]
        order = list(range(len(regions)))
        if rng is not None and self.cfg.rra:  # as build_sample shuffles
            rng.shuffle(order)
        rows = torch.as_tensor([self.first_row[index] + keep[i] for i in order], dtype=torch.long)
        in_prompt = [regions[i] for i in order]
        reports = {r: rec.reports[r] for r in regions if r in rec.reports}
        texts = self._texts(in_prompt, reports)
        if " ".join(texts) != build_target(in_prompt, reports, self.cfg):
            return self._from_dataset(index, order, rows)
        ids, n_prompt = self._prompt(len(order))
        ids = list(ids)
        labels = [IGNORE_INDEX] * n_prompt
        names, starts = [], []
        for k, text in enumerate(texts):
            piece = self._piece(text, k == 0)
            names += [len(ids) + p for p in piece.names]
            starts.append(len(ids) + piece.start if piece.start >= 0 else -1)
            ids += piece.ids
            labels += piece.labels
        ids.append(self.tok.eos_token_id)
        labels.append(self.tok.eos_token_id)
        item = FastItem(rec.name, index, rows, ids, labels, n_prompt, names,
                        self.ds.branch_drop(rec.name, len(order)))
        if self.ds.region_labels:  # as `region_label_targets`
            item.label_positions = starts
            item.label_targets, item.label_mask = label_rows(rec.labels, in_prompt)
        return item

    def _from_dataset(self, index: int, order: list[int], rows: torch.Tensor) -> FastItem:
        """The item's tokens as `ReportDataset` builds them (a target the pieces do not spell)."""
        if not self.fallbacks:
            logger.warning(
                f"[train] fast path: case {self.records[index].name}'s target is not the join of its "
                "regions' pieces; such items are built by the dataset (slower, the same)"
            )
        self.fallbacks += 1
        item = self.ds[index]
        sample = item["sample"]
        if list(sample.order) != order:
            raise KitError(
                f"case {item['name']}: the dataset ordered the regions {sample.order}, the fast path "
                f"{order}; train without the fast path"
            )
        out = FastItem(
            item["name"],
            index,
            rows,
            list(sample.input_ids),
            list(sample.labels),
            sample.n_prompt,
            list(item.get("name_positions", [])),
            item.get("region_drop"),
        )
        if "label_positions" in item:
            out.label_positions = item["label_positions"].tolist()
            out.label_targets, out.label_mask = item["label_targets"], item["label_mask"]
        return out

    def _normalized(self, key: str, feats: torch.Tensor) -> torch.Tensor:
        """Features normalised as the tables hold them (for comparisons with the dataset's items)."""
        feats = self.standardize(key, feats)
        return F.layer_norm(feats.float(), feats.shape[-1:], eps=self.media_eps)

    def verify(self, indices: list[int] | None = None) -> None:
        """Check items against `ReportDataset.__getitem__` at the current epoch: token ids, labels,
        loss-weighted positions and region features; raises a KitError naming the first case that differs."""
        indices = range(len(self)) if indices is None else indices
        for i in indices:
            mine, ref = self[i], self.ds[i]
            sample = ref["sample"]
            checks = {
                "token ids": mine.ids == list(sample.input_ids),
                "labels": mine.labels == list(sample.labels),
                "organ-name positions": mine.names == list(ref.get("name_positions", [])),
                "branch dropout": (mine.drop is None) == (ref.get("region_drop") is None)
                and (mine.drop is None or torch.equal(mine.drop, ref["region_drop"])),
                "region label targets": (mine.label_positions is None) == ("label_positions" not in ref)
                and (mine.label_positions is None or (
                    mine.label_positions == ref["label_positions"].tolist()
                    and torch.equal(mine.label_targets, ref["label_targets"])
                    and torch.equal(mine.label_mask, ref["label_mask"]))),
            }
            if self.region_hat is not None and "region_feats" in ref:
                want = self._normalized("region_feats", ref["region_feats"])
                checks["region order"] = torch.equal(self.region_hat[mine.rows], want)
            if self.global_hat is not None and "global_feats" in ref:
                checks["global features"] = torch.equal(self.global_hat[i:i + 1],
                                                        self._normalized("global_feats", ref["global_feats"]))
            bad = [k for k, ok in checks.items() if not ok]
            if bad:
                raise KitError(f"case {mine.name}: the fast training path's item differs from the dataset's "
                               f"({', '.join(bad)}); train without it")

    # ---- batches -------------------------------------------------------------------------------------------
    def collate(self, items: list[FastItem]) -> dict[str, Any]:
        """A batch for `fast_loss`: ids, the splice index, the normalised visual inputs and the target
        rows."""
        b = len(items)
        width = max(len(it.ids) for it in items)
        ids = torch.full((b, width), self.pad_id, dtype=torch.long)
        labels = torch.full((b, width), IGNORE_INDEX, dtype=torch.long)
        names = torch.zeros((b, width), dtype=torch.bool)
        for row, it in enumerate(items):
            n = len(it.ids)
            ids[row, :n] = torch.as_tensor(it.ids)
            labels[row, :n] = torch.as_tensor(it.labels)
            names[row, it.names] = True
        rows = torch.cat([it.rows for it in items])
        cases = torch.as_tensor([it.case for it in items], dtype=torch.long)
        batch: dict[str, Any] = {"names": [it.name for it in items], "input_ids": ids, "labels": labels}
        if items[0].drop is not None:
            batch["region_drop"] = torch.cat([it.drop for it in items])
        # the splice: each position's row in [token table (V); 4 structure rows; global; texture; geometry
        # tokens]
        kinds = self.token_kind[ids]
        index = ids.clone()
        struct = kinds == KIND_CODES[STRUCT]
        index[struct] = self.vocab + self.struct_index[ids[struct]]
        offset = self.vocab + len(STRUCT_TOKENS)
        # re-reference: a placeholder seen earlier in its row reads its first occurrence's token
        repeated = None
        if self.cfg.rereference:
            source, repeated = first_occurrence(ids, kinds >= KIND_CODES[GLOBAL])
        expected = {GLOBAL: b * self.latents if self.global_hat is not None else 0,
                    TEXTURE: len(rows) * self.latents if self.region_hat is not None else 0,
                    GEOMETRY: len(rows) if self.patches is not None else 0}
        for kind, count in expected.items():
            where = kinds == KIND_CODES[kind]
            if repeated is not None:
                where &= ~repeated
            found = int(where.sum())
            if found != count:
                raise KitError(
                    f"{kind} tokens: the prompts of case(s) {', '.join(batch['names'])} have {found} "
                    f"placeholder positions, the fast path makes {count} tokens"
                )
            index[where] = torch.arange(offset, offset + count)
            offset += count
        if repeated is not None:
            index = torch.where(repeated, index.gather(1, source), index)
        batch["embed_index"] = index
        media = []
        if self.global_hat is not None:
            media.append(self.global_hat[cases])
        if self.region_hat is not None:
            media.append(self.region_hat[rows])
        if media:
            batch["media_hat"] = torch.cat(media)  # (B + N, T, vit_dim): the Perceiver's input, global first
            batch["n_global"] = b if self.global_hat is not None else 0
        if self.patches is not None:
            batch["patch_rows"], batch["patch_index"] = self.patches.gather(rows)
            batch["mask_size"] = self.patches.spatial
        # the loss: positions start.. of the last layer; of those, the ones whose next token is a target
        start = max(0, min(it.n_prompt for it in items) - 1)
        nxt = labels[:, start + 1:]  # (B, L - start - 1): the token each position start..L-2 predicts
        valid = nxt != IGNORE_INDEX
        batch.update(start=start, target_index=valid.flatten().nonzero().squeeze(1), targets=nxt[valid],
                     name_targets=names[:, start + 1:][valid])
        if items[0].label_positions is not None:  # rows of hidden[:, :-1] (positions start..L-2), flattened
            pos = torch.as_tensor([p for it in items for p in it.label_positions], dtype=torch.long)
            row = torch.cat([torch.full((len(it.label_positions),), r) for r, it in enumerate(items)])
            keep = pos >= 0
            batch.update(label_index=row[keep] * (width - start - 1) + pos[keep] - start,
                         label_targets=torch.cat([it.label_targets for it in items])[keep],
                         label_mask=torch.cat([it.label_mask for it in items])[keep])
        return batch


# ---- the loss ----------------------------------------------------------------------------------------------
def fast_loss(model: Any, batch: dict[str, Any], name_weight: float = 1.0,
              label_weight: float = 0.0) -> torch.Tensor:
    """`run.reg2rg_step(model, <the Collator batch of the same items>, name_weight, label_weight)`, up to
    float rounding,
    from a `FastTrainData.collate` batch."""
    # a DDP-style wrapper: its forward would be bypassed, and its sync
    if not hasattr(model, "embedding_layer"):
        raise KitError("the fast training path runs in one process; train across processes without it")
    el = model.embedding_layer
    llm = base_llm(model.lang_model)
    emb = llm.get_input_embeddings()
    dtype = emb.weight.dtype
    parts = [emb.weight, el.struct_table.to(dtype)]
    visual: dict[str, torch.Tensor] = {}
    if "media_hat" in batch:
        tokens = el.fc(resample_normed(el.perceiver, batch["media_hat"]))  # (B + N, latents, D)
        n_global = batch["n_global"]
        parts.append(tokens[:n_global].reshape(-1, tokens.shape[-1]))
        visual[TEXTURE] = tokens[n_global:].reshape(-1, tokens.shape[-1])
    if "patch_rows" in batch:
        visual[GEOMETRY] = el.mask_fc(encode_patch_rows(el.mask_encoder, batch["patch_rows"],
                                                        batch["patch_index"], batch["mask_size"]))
    if "region_drop" in batch:  # branch dropout, as `Reg2RG.visual_tokens` applies it
        visual = drop_branches(visual, batch["region_drop"])
    parts += [visual[kind] for kind in (TEXTURE, GEOMETRY) if kind in visual]
    table = torch.cat([p.to(dtype) for p in parts])
    embeds = F.embedding(batch["embed_index"], table, padding_idx=emb.padding_idx)  # (B, L, D)
    hidden = llama_tail_hidden(llm, embeds, batch["start"])  # (B, L - start, D)
    rows = hidden[:, :-1].reshape(-1, hidden.shape[-1]).index_select(0, batch["target_index"])
    logits = llm.lm_head(llm.model.norm(rows)).float()  # (n_targets, V): the output layer at targets only
    ce = F.cross_entropy(logits, batch["targets"], reduction="none")
    weight = torch.ones_like(ce)
    if name_weight != 1.0:
        weight = torch.where(batch["name_targets"], torch.full_like(weight, name_weight), weight)
    loss = (ce * weight).sum() / max(1, ce.shape[0])
    if label_weight and "label_index" in batch:  # `run.region_label_loss` at the paragraphs' first words
        at = hidden[:, :-1].reshape(-1, hidden.shape[-1]).index_select(0, batch["label_index"])
        head = label_head_loss(el.label_head, llm.model.norm(at), batch["label_targets"], batch["label_mask"])
        loss = loss + label_weight * head
    return loss


def fast_step_fn(name_weight: float = 1.0, label_weight: float = 0.0):
    """A `step_fn(model, batch)` for `fit` with the fast batches (as
    `functools.partial(reg2rg_step, ...)`)."""
    def step(model: Any, batch: dict[str, Any]) -> torch.Tensor:
        return fast_loss(model, batch, name_weight, label_weight)
    return step


def llama_tail_hidden(llm: Any, embeds: torch.Tensor, start: int) -> torch.Tensor:
    """The LLaMA decoder's last hidden states (before the final norm) at positions `start`.. (B, L - start,
    D).

    Every layer but the last runs as transformers runs it without a padding mask (the causal kernel); the last
    one needs keys and values at every position but queries, attention output and MLP only from `start` on."""
    # transformers: slow to import; only this path needs its LLaMA helpers
    from transformers.models.llama.modeling_llama import repeat_kv, rotate_half

    body = llm.model
    length = embeds.shape[1]
    positions = torch.arange(length, device=embeds.device).unsqueeze(0)
    cos, sin = body.rotary_emb(embeds, positions)
    layers = list(body.layers[: body.config.num_hidden_layers])
    hidden = embeds
    for layer in layers[:-1]:
        hidden = layer(hidden, attention_mask=None, position_ids=positions, position_embeddings=(cos, sin))
    layer = layers[-1]
    attn = layer.self_attn
    x = layer.input_layernorm(hidden)
    b, q_len = x.shape[0], length - start
    k = attn.k_proj(x).view(b, length, -1, attn.head_dim).transpose(1, 2)
    v = attn.v_proj(x).view(b, length, -1, attn.head_dim).transpose(1, 2)
    q = attn.q_proj(x[:, start:]).view(b, q_len, -1, attn.head_dim).transpose(1, 2)
    cos_q, sin_q = cos[:, start:].unsqueeze(1), sin[:, start:].unsqueeze(1)
    q = q * cos_q + rotate_half(q) * sin_q
    k = k * cos.unsqueeze(1) + rotate_half(k) * sin.unsqueeze(1)
    k, v = repeat_kv(k, attn.num_key_value_groups), repeat_kv(v, attn.num_key_value_groups)
    causal = causal_lower_right(q_len, length)  # query start + i sees keys 0 .. start + i
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=causal, scale=attn.scaling)  # (B, heads, Lq, dh)
    hidden = hidden[:, start:] + attn.o_proj(out.transpose(1, 2).reshape(b, q_len, -1))
    return hidden + layer.mlp(layer.post_attention_layernorm(hidden))
