"""Tokenizers: a byte-level BPE trained locally on the report corpus (CPU presets), or the LLM's own (paper).

Nothing is downloaded: `train_tokenizer` uses the `tokenizers` library on the texts it is given and saves a
`PreTrainedTokenizerFast`; `load_tokenizer` reads a local folder (or an HF name, which is only fetched if the
user's environment allows it). `add_reg2rg_tokens` appends the Reg2RG special tokens (structure +
placeholders).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

from reg2rg_lib.data.prep import PrepCache, load_cache
from reg2rg_lib.env.assets import resolve_llm_path
from reg2rg_lib.errors import BadInputError, KitError
from reg2rg_lib.io import atomic_dir
from reg2rg_lib.model.config import PAPER_INSTRUCTION, SHORT_INSTRUCTION, Reg2RGConfig
from reg2rg_lib.model.prompt import reg2rg_special_tokens
from reg2rg_lib.paths import RunPaths
from reg2rg_lib.regions import REGIONS

#: Special tokens of the locally trained tokenizer (ids 0..3).
BASE_SPECIAL_TOKENS = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}


def prompt_texts(repeat: int = 20) -> list[str]:
    """The fixed wording of prompts and RRA targets ("The region 3 is lung:", the instructions, ...), repeated
    so that BPE learns them as few tokens: a region prefix then costs ~5 tokens instead of ~12."""
    cfg = Reg2RGConfig()
    lines = [cfg.global_template.format(tokens=""), PAPER_INSTRUCTION, SHORT_INSTRUCTION]
    lines += [
        cfg.target_template.format(i=i, region=r, report="") for i in range(cfg.max_regions) for r in REGIONS
    ]
    return lines * repeat


def train_tokenizer(
    texts: Iterable[str],
    out_dir: str | os.PathLike[str] | None = None,
    vocab_size: int = 1024,
    min_frequency: int = 2,
    include_prompt_text: bool = True,
):
    """Train a byte-level BPE on `texts` (report paragraphs); save it to `out_dir` (atomically) when given.

    Byte-level BPE round-trips any text exactly (no unknown characters), which keeps decoded reports
    comparable with the references. With `include_prompt_text` the prompt/target wording (`prompt_texts`)
    joins the corpus. Returns a `PreTrainedTokenizerFast` with <s>, </s>, <pad>, <unk>.
    """
    # transformers: slow to import (~10 s); only a built or loaded tokenizer needs it
    from transformers import PreTrainedTokenizerFast

    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise KitError("train_tokenizer: no texts to train on")
    if include_prompt_text:
        texts += prompt_texts()
    tok = Tokenizer(models.BPE(unk_token=BASE_SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
        special_tokens=list(BASE_SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **BASE_SPECIAL_TOKENS)
    if out_dir is not None:
        save_tokenizer(fast, out_dir)
    return fast


def save_tokenizer(tokenizer, out_dir: str | os.PathLike[str]) -> Path:
    """Save into `out_dir` via a temporary sibling folder renamed at the end: no half-written tokenizer."""
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        tokenizer.save_pretrained(tmp)
    return out


def load_tokenizer(path_or_name: str | os.PathLike[str]):
    """`AutoTokenizer.from_pretrained`, with a one-line error naming the folder when it is not a tokenizer.

    A symbolic LLM name (`smollm2`) loads the fetched asset's own tokenizer (a KitError says to run
    `reg2rg assets fetch` when it is missing); `Reg2RG` then appends the kit's tokens
    (`add_reg2rg_tokens`)."""
    # transformers: slow to import (~10 s); only a built or loaded tokenizer needs it
    from transformers import AutoTokenizer

    path, _ = resolve_llm_path(str(path_or_name))
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise BadInputError(path_or_name, f"cannot load a tokenizer ({str(err).splitlines()[0]})") from None
    if tok.pad_token is None:  # LLaMA has no pad token; padding positions are masked out anyway
        tok.pad_token = tok.unk_token or tok.eos_token
    return tok


def add_reg2rg_tokens(tokenizer, cfg: Reg2RGConfig) -> int:
    """Add the Reg2RG special tokens the config needs, in a fixed order; returns how many were new.

    Order: <image> </image> <region> </region>, <image0>..., <region0>... (see
    `prompt.reg2rg_special_tokens`).
    Idempotent: tokens already present keep their ids, so a tokenizer saved with a checkpoint is reused as is.
    """
    vocab = tokenizer.get_vocab()
    missing = [t for t in reg2rg_special_tokens(cfg) if t not in vocab]
    if not missing:
        return 0
    return tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in missing],
                                special_tokens=True)


def tokenizer_from_cache(cache: PrepCache, out_dir: str | os.PathLike[str] | None = None,
                         vocab_size: int = 1024):
    """The CPU presets' tokenizer: a byte-level BPE trained on the region paragraphs of the prep cache's train
    split, saved to `out_dir` when given (`reg2rg train` does; notebook 02 keeps it in memory)."""
    texts = [p for rec in cache.cases("train") for p in rec.reports.values()]
    return train_tokenizer(texts, out_dir, vocab_size=vocab_size)


def tokenizer_for_run(out_dir: str | os.PathLike[str], vocab_size: int = 1024):
    """The tokenizer of a profile run: `out_dir/tokenizer` when an earlier stage saved it, else one trained in
    memory (nothing written) on the prep cache (`tokenizer_from_cache`). A KitError says what to run first."""
    paths = RunPaths(out_dir)
    if paths.tokenizer.is_dir():
        return load_tokenizer(paths.tokenizer)
    try:
        cache = load_cache(paths.cache)
    except (OSError, KitError) as err:
        raise KitError(f"{paths.tokenizer}: no tokenizer, and no prep cache to train one ({err}); "
                       "run notebook 01 (or `reg2rg prepare`) first") from None
    return tokenizer_from_cache(cache, vocab_size=vocab_size)
