"""Prompts, targets and token layout: the text side of Reg2RG.

The prompt (the paper's wording, `Reg2RGConfig.*_template`) reads

    The global information is provided as the context: <image><image0>...<image31></image>.
    The region 0 is <region><region0>...<region32></region>.
    The region 1 is <region><region33>...</region>. ...
    <instruction>

Region i owns placeholders `<region{i*P}>..<region{i*P+P-1}>` with P = `cfg.region_tokens` (32 texture + 1
geometry in the paper), numbered on across regions exactly as in the released `Question` column. The model
replaces every placeholder's embedding by a visual token (`reg2rg.Reg2RG`); the prompt never names the organs.

Region-report alignment (RRA): the target is "The region i is <organ>: <paragraph>" for each region, in the
prompt's order, and that order is shuffled every time a training sample is drawn, so the model must recognise
each organ from its visual tokens. Without RRA (the ablation) regions keep the canonical order and the target
is the plain concatenation of the region paragraphs, without the "The region i is <organ>:" prefixes.
"""

from __future__ import annotations

import random
import re
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from reg2rg_lib.errors import KitError
from reg2rg_lib.model.config import Reg2RGConfig

#: Structural tokens, in the order of the official `image_token_weight` (2 rows) and `region_token_weight` (2
#: rows).
STRUCT_TOKENS: tuple[str, ...] = ("<image>", "</image>", "<region>", "</region>")
IGNORE_INDEX = -100

#: Kinds of prompt positions (`token_kinds`, `token_layout`).
TEXT, STRUCT, GLOBAL, TEXTURE, GEOMETRY = "text", "special", "global", "texture", "geometry"


def reg2rg_special_tokens(cfg: Reg2RGConfig) -> list[str]:
    """Every Reg2RG token, in the order they are appended to a tokenizer.

    Placeholders are allocated for the largest layout (`max_regions` x (latents + 1)), so one tokenizer serves
    all ablations of a given latent count.
    """
    n_lat = cfg.perceiver_latents
    return (list(STRUCT_TOKENS) + [f"<image{k}>" for k in range(n_lat)]
            + [f"<region{k}>" for k in range(cfg.max_regions * (n_lat + 1))])


def token_kinds(tokenizer, cfg: Reg2RGConfig) -> dict[int, str]:
    """Token id -> kind (STRUCT, GLOBAL, TEXTURE, GEOMETRY) for every Reg2RG token under `cfg`'s layout.

    Placeholder tokens that `cfg` does not use (e.g. <region32> when the geometry token is off) are left out,
    so a prompt built for another layout fails the splice count check instead of silently misplacing tokens.
    """
    vocab = tokenizer.get_vocab()
    missing = [t for t in STRUCT_TOKENS if t not in vocab]
    if missing:
        raise KitError(f"tokenizer lacks the Reg2RG tokens {missing}; call add_reg2rg_tokens(tokenizer, cfg)")
    kinds = {vocab[t]: STRUCT for t in STRUCT_TOKENS}
    for k in range(cfg.global_tokens):
        kinds[vocab[f"<image{k}>"]] = GLOBAL
    per = cfg.region_tokens
    for j in range(cfg.max_regions * per):
        kinds[vocab[f"<region{j}>"]] = TEXTURE if j % per < cfg.texture_tokens else GEOMETRY
    return kinds


# ---- text --------------------------------------------------------------------------------------------------
def build_prompt(n_regions: int, cfg: Reg2RGConfig) -> str:
    """The prompt for `n_regions` regions (the released `Question` column for the paper config)."""
    if not 0 < n_regions <= cfg.max_regions:
        raise KitError(f"a prompt needs 1..{cfg.max_regions} regions, got {n_regions}")
    parts = []
    if cfg.use_global:
        tokens = "<image>" + "".join(f"<image{k}>" for k in range(cfg.perceiver_latents)) + "</image>"
        parts.append(cfg.global_template.format(tokens=tokens))
    per = cfg.region_tokens
    for i in range(n_regions):
        tokens = "<region>" + "".join(f"<region{i * per + k}>" for k in range(per)) + "</region>"
        parts.append(cfg.region_template.format(i=i, tokens=tokens))
    parts.append(cfg.instruction)
    return " ".join(p for p in parts if p)


def build_target(regions: Sequence[str], reports: Mapping[str, str], cfg: Reg2RGConfig) -> str:
    """The target report for `regions` in prompt order: RRA paragraphs, or (rra=False) plain paragraphs."""
    paragraphs = [" ".join(str(reports.get(r, "")).split()) for r in regions]
    if not cfg.rra:
        return " ".join(p for p in paragraphs if p)
    return " ".join(cfg.target_template.format(i=i, region=r, report=p) for i, (r, p) in
                    enumerate(zip(regions, paragraphs)))


# ---- token ids ---------------------------------------------------------------------------------------------
@dataclass
class Sample:
    """One prompt (+ target) as token ids. `order[i]` = index, in the case's region list, of prompt region
    i."""

    input_ids: list[int]
    labels: list[int]
    order: list[int]
    regions: list[str]
    prompt: str
    target: str = ""
    n_prompt: int = 0  # tokens of bos + prompt (labels are -100 there)
    meta: dict = field(default_factory=dict)
    #: input position of each token of the tokenized `target` (n_prompt + t, unless re-reference inserted
    #: tokens)
    target_positions: list[int] = field(default_factory=list)


#: prompt token ids per live tokenizer, keyed by (vocabulary size, text): a cache keyed by the tokenizer's
#: id() could give a new tokenizer at a freed one's address that one's ids; adding tokens changes the key
_PROMPT_IDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def encode_prompt(tokenizer, text: str) -> tuple[int, ...]:
    """`text`'s token ids without special tokens, cached per tokenizer (prompts repeat at every step)."""
    known = _PROMPT_IDS.setdefault(tokenizer, {})
    key = (len(tokenizer), text)
    if key not in known:
        if len(known) >= 64:  # prompts differ only by their region count: a handful per tokenizer
            known.clear()
        known[key] = tuple(tokenizer(text, add_special_tokens=False)["input_ids"])
    return known[key]


def build_sample(regions: Sequence[str], reports: Mapping[str, str] | None, tokenizer, cfg: Reg2RGConfig,
                 rng: random.Random | None = None, max_length: int | None = None) -> Sample:
    """Prompt + target token ids for a case with `regions` (canonical order) and `reports` (None: inference).

    With `cfg.rra` and an `rng`, the region order is shuffled (RRA training); otherwise it stays canonical.
    The prompt (and bos) is masked out of `labels` with -100; the target ends with eos. `max_length` truncates
    the target (keeping eos) so that the whole sample fits.
    """
    order = list(range(len(regions)))
    if rng is not None and cfg.rra:
        rng.shuffle(order)
    in_prompt = [regions[i] for i in order]
    prompt = build_prompt(len(order), cfg)
    prompt_ids = list(encode_prompt(tokenizer, prompt))
    expected = cfg.global_tokens + len(order) * cfg.region_tokens
    kinds = token_kinds(tokenizer, cfg)
    found = sum(1 for t in prompt_ids if kinds.get(t, STRUCT) != STRUCT)
    if found != expected:
        raise KitError(f"the prompt tokenized into {found} placeholder tokens, expected {expected}; "
                       "the tokenizer lacks Reg2RG tokens (call add_reg2rg_tokens)")
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    input_ids = bos + prompt_ids
    n_prompt = len(input_ids)
    if reports is None:
        return Sample(input_ids, [], order, in_prompt, prompt, "", n_prompt)
    target = build_target(in_prompt, reports, cfg)
    if cfg.rereference:
        target_ids, target_labels, index = rereference_target(target, tokenizer, cfg)
    else:
        target_ids = list(tokenizer(target, add_special_tokens=False)["input_ids"])
        target_labels, index = list(target_ids), list(range(len(target_ids)))
    if max_length is not None:
        keep = max(0, max_length - n_prompt - 1)
        target_ids, target_labels = target_ids[:keep], target_labels[:keep]
        index = [t for t in index if t < keep]
    target_ids.append(tokenizer.eos_token_id)
    target_labels.append(tokenizer.eos_token_id)
    labels = [IGNORE_INDEX] * n_prompt + target_labels
    return Sample(input_ids + target_ids, labels, order, in_prompt, prompt, target, n_prompt,
                  target_positions=[n_prompt + t for t in index])


#: "The region i is <organ>:" in a target or a generated report; group 1 is i.
HEAD_RE = re.compile(r"The region (\d+) is [^:.]{1,40}:")


def region_placeholder_ids(tokenizer, cfg: Reg2RGConfig, i: int) -> list[int]:
    """Token ids of prompt region i's placeholders (`<region{i*P}>..<region{i*P+P-1}>`, P =
    cfg.region_tokens)."""
    per = cfg.region_tokens
    return list(tokenizer.convert_tokens_to_ids([f"<region{i * per + k}>" for k in range(per)]))


def rereference_target(target: str, tokenizer, cfg: Reg2RGConfig) -> tuple[list[int], list[int], list[int]]:
    """Target ids with region i's placeholders inserted after each "The region i is <organ>:" (re-reference)
    and, with `cfg.rereference_sentences`, after each token of region i's paragraph that ends in "." too.

    Returns (ids, labels, index): the inserted placeholders are -100 in `labels` (the model reads them, it is
    not asked to write them), and `index[t]` is where token t of the plain tokenized target now sits. The
    insertion point is the end of the token that holds the head's colon (or the full stop), so the text's own
    tokens are unchanged.
    """
    enc = tokenizer(target, add_special_tokens=False, return_offsets_mapping=True)
    plain, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    after: dict[int, int] = {}  # plain token index -> prompt region whose placeholders follow it
    for m in HEAD_RE.finditer(target):
        region = int(m.group(1))
        t = next((k for k, (_, end) in enumerate(offsets) if end >= m.end()), None)
        if t is not None and region < cfg.max_regions:
            after[t] = region
    if cfg.rereference_sentences:
        after = _sentence_ends(target, offsets, after)
    ids: list[int] = []
    labels: list[int] = []
    index: list[int] = []
    for t, tid in enumerate(plain):
        index.append(len(ids))
        ids.append(tid)
        labels.append(tid)
        if t in after:
            extra = region_placeholder_ids(tokenizer, cfg, after[t])
            ids += extra
            labels += [IGNORE_INDEX] * len(extra)
    return ids, labels, index


def ends_sentence(text: str) -> bool:
    """Whether a token's text ends a sentence for `Reg2RGConfig.rereference_sentences` (its last visible
    character is a full stop): the one rule of training targets and the decoder."""
    return text.rstrip().endswith(".")


def _sentence_ends(target: str, offsets: Sequence[tuple[int, int]], heads: dict[int, int]) -> dict[int, int]:
    """`heads` (token index of a head's colon -> region) plus every later token that ends a sentence, mapped
    to the region whose paragraph it is in."""
    out, region = dict(heads), None
    for t, (start, end) in enumerate(offsets):
        if t in heads:
            region = heads[t]
        elif region is not None and ends_sentence(target[start:end]):
            out[t] = region
    return out


def collate(samples: Sequence[Sample], pad_id: int, padding_side: str = "right"):
    """Pad a list of samples into tensors: input_ids, attention_mask, labels (-100 on padding and prompt).

    Use `padding_side="left"` for generation, so that every row's prompt ends at the last column.
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    width = max(len(s.input_ids) for s in samples)
    ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(samples), width), dtype=torch.long)
    labels = torch.full((len(samples), width), IGNORE_INDEX, dtype=torch.long)
    for row, s in enumerate(samples):
        n = len(s.input_ids)
        cols = slice(width - n, width) if padding_side == "left" else slice(0, n)
        ids[row, cols] = torch.tensor(s.input_ids)
        mask[row, cols] = 1
        if s.labels:
            labels[row, cols] = torch.tensor(s.labels)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def token_layout(input_ids: Sequence[int], tokenizer, cfg: Reg2RGConfig) -> list[str]:
    """Kind of every position of a prompt: TEXT, STRUCT, GLOBAL, TEXTURE or GEOMETRY (for display and
    tests)."""
    kinds = token_kinds(tokenizer, cfg)
    return [kinds.get(int(t), TEXT) for t in input_ids]


def layout_runs(input_ids: Sequence[int], tokenizer, cfg: Reg2RGConfig) -> list[dict]:
    """The prompt as runs of same-kind positions: [{kind, start, length, text}] (text: the run's tokens
    decoded, shortened for placeholders), e.g. text "The global ...", special "<image>", global x32, special
    "</image>"."""
    kinds = token_layout(input_ids, tokenizer, cfg)
    runs: list[dict] = []
    for pos, (tid, kind) in enumerate(zip(input_ids, kinds)):
        if runs and runs[-1]["kind"] == kind and kind != STRUCT:
            runs[-1]["length"] += 1
            runs[-1]["ids"].append(int(tid))
        else:
            runs.append({"kind": kind, "start": pos, "length": 1, "ids": [int(tid)]})
    for run in runs:
        ids = run.pop("ids")
        if run["kind"] in (TEXT, STRUCT):
            run["text"] = tokenizer.decode(ids)
        else:
            first, last = tokenizer.convert_ids_to_tokens([ids[0], ids[-1]])
            run["text"] = first if len(ids) == 1 else f"{first} ... {last}"
    return runs
