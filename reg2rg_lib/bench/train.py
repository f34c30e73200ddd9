"""`reg2rg bench train-step | generate | gpu-step`: what the training and inference paths cost, as ratios.

train-step: the same tiny model and batch through the kit's path (dynamic padding, `masked_scatter` splice, cached
    frozen-ViT features) and through the paper code's recipe (every sample padded to 2048 tokens, the visual tokens
    spliced by multiplying a one-hot matrix over the extended vocabulary with the embedding table, the frozen ViT
    recomputed at every step). Both start from the same weights, so their first losses must agree.
generate: batched greedy generation against batch size 1 on the same cases, as `reg2rg generate` runs it (cached
    frozen-ViT features, the kit's greedy loop): reports/s and the ratio, the arms alternating batch by batch.
gpu-step: the paper preset (LLaMA-2-7B shape, random weights, bf16, LoRA, ViT3D) on one GPU: step time, tokens/s,
    peak memory and model FLOPs utilisation against the card's bf16 peak.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, models, pre_tokenizers

from reg2rg_lib.bench.common import report
from reg2rg_lib.env.doctor import machine
from reg2rg_lib.errors import KitError
from reg2rg_lib.paths import RunPaths, default_out_dir
from reg2rg_lib.profiles import load_profile
from reg2rg_lib.regions import REGIONS

RECIPE_PAD = 2048  # the paper's code pads every sample to this many tokens

#: Dense bf16 peak TFLOPS (no sparsity) by a substring of `torch.cuda.get_device_name()`; --peak-tflops overrides.
BF16_PEAK_TFLOPS: dict[str, float] = {
    "H200": 989.4, "H100 SXM": 989.4, "H100 80GB HBM3": 989.4, "H100 NVL": 835.0, "H100 PCIe": 756.0,
    "H100": 756.0, "GH200": 989.4, "B200": 2250.0, "A100": 312.0, "A800": 312.0, "L40S": 362.0, "L40": 181.0,
    "A6000": 154.8, "RTX 4090": 165.2, "A10": 125.0,
}


def register_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-step", help="training step: the kit's path vs the paper's recipe (samples/s, ratio)")
    _common(p)
    p.add_argument("--batch-size", type=int, default=4, help="samples per step (default 4)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per path after one warm-up (default 3)")
    p.set_defaults(func=_train_step)

    p = sub.add_parser("generate", help="batched generation vs batch size 1 (reports/s, ratio)")
    _common(p)
    p.add_argument("--checkpoint", default=None,
                   help="trained run/checkpoint (default: OUT/runs/full if it exists, else an untrained model)")
    p.add_argument("--cases", type=int, default=8, help="test cases to generate (default 8)")
    p.add_argument("--batch-size", type=int, default=None, help="batched size (default: the profile's)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: the profile's")
    p.add_argument("--engine", choices=("auto", "hf", "kit"), default="auto",
                   help="auto (default): the kit's greedy loop where it applies; hf: Hugging Face generate")
    p.add_argument("--repeat", type=int, default=3,
                   help="rounds of both arms; the figures are the median round's (default 3)")
    p.add_argument("--no-feature-cache", dest="feature_cache", action="store_false",
                   help="run the frozen ViT inside the timed generation (default: cached features, as "
                        "`reg2rg generate`)")
    p.set_defaults(func=_generate)

    p = sub.add_parser("gpu-step", help="paper preset on one GPU: step time, tokens/s, peak memory, MFU")
    p.add_argument("--json", action="store_true", help="print one JSON line")
    p.add_argument("--seq-len", type=int, default=1024, help="tokens per sample (prompt + target; default 1024)")
    p.add_argument("--batch-size", type=int, default=1, help="samples per step (the paper: 1 per GPU)")
    p.add_argument("--steps", type=int, default=5, help="timed steps after 2 warm-ups (default 5)")
    p.add_argument("--feature-cache", action="store_true", help="feed cached ViT features (skip the frozen ViT)")
    p.add_argument("--gradient-checkpointing", action="store_true", help="recompute LLM activations in backward")
    p.add_argument("--peak-tflops", type=float, default=None, help="the card's dense bf16 peak (default: table)")
    p.add_argument("--sweep", action="store_true",
                   help="measure the standard settings (train_bench.SWEEP) with one model build; one line each")
    p.add_argument("--compile", action="store_true", help="torch.compile each LLM decoder layer")
    p.add_argument("--preset", default="paper", help=argparse.SUPPRESS)  # tests run `cpu-tiny` on the CPU
    p.add_argument("--allow-cpu", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=_gpu_step)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON line")
    p.add_argument("--profile", default="demo", help="model and image size of this profile (default: demo)")
    p.add_argument("--out", default=None, help="the profile's output folder holding cache/ and tokenizer/ (default: "
                   "outputs/<profile>; when absent, smoke-sized inputs are built in a temporary folder)")


# ---- inputs ------------------------------------------------------------------------------------------------------
def bench_inputs(profile_name: str, out: str | None, tmp: Path) -> tuple[Any, Any, Any, str]:
    """(profile, prep cache, tokenizer, where) for a benchmark: the profile run's inputs if present, else the smoke
    profile's, built under `tmp` (same code path, smaller images)."""
    # bench modules load at `reg2rg --help`: each handler imports the stage it measures when it runs
    from reg2rg_lib.data.prep import load_cache
    from reg2rg_lib.model import load_tokenizer
    from reg2rg_lib.samples.inputs import ensure_inputs

    paths = RunPaths(out or default_out_dir(profile_name))
    profile = load_profile(profile_name)
    if not ((paths.cache / "manifest.json").is_file() and paths.tokenizer.is_dir()):
        profile, paths = load_profile("smoke"), RunPaths(tmp)
        train_logger = logging.getLogger("reg2rg_lib.train")  # its progress lines would mix with the figures
        level = train_logger.level
        train_logger.setLevel(logging.WARNING)
        try:
            ensure_inputs(profile, paths, paths.cache, paths.tokenizer)
        finally:
            train_logger.setLevel(level)
    return profile, load_cache(paths.cache), load_tokenizer(paths.tokenizer), str(paths.root)


# ---- train-step --------------------------------------------------------------------------------------------------
def recipe_embeddings(model: Any, input_ids: torch.Tensor, **visual: Any) -> torch.Tensor:
    """The paper code's splice: per sample, one-hot(ids over [LLM table; structure rows; that sample's visual
    tokens]) @ that table. Equal in value to `Reg2RG.embed_inputs`, at O(L x (V + n)) cost per sample."""
    from reg2rg_lib.model.prompt import GEOMETRY, GLOBAL, STRUCT, TEXTURE
    from reg2rg_lib.model.reg2rg import KIND_CODES

    el, device = model.embedding_layer, model.device
    input_ids = input_ids.to(device)
    weight = model.lang_model.get_input_embeddings().weight  # (V, D)
    tokens = model.visual_tokens(**visual)  # kind -> (n, D) in prompt order over the whole batch
    kinds = model.token_kind[input_ids]  # (B, L)
    per_kind = {}  # kind -> the batch's tokens split per sample
    for kind, code in ((GLOBAL, KIND_CODES[GLOBAL]), (TEXTURE, KIND_CODES[TEXTURE]),
                       (GEOMETRY, KIND_CODES[GEOMETRY])):
        if kind in tokens:
            counts = (kinds == code).sum(1).tolist()
            per_kind[code] = list(tokens[kind].split(counts))
    rows = []
    for b in range(input_ids.shape[0]):
        ids, kb = input_ids[b], kinds[b]
        table = [weight, el.struct_table.to(weight.dtype)]  # (V, D), (4, D)
        remap = ids.clone()
        struct = kb == KIND_CODES[STRUCT]
        remap[struct] = weight.shape[0] + model.struct_index[ids[struct]]
        offset = weight.shape[0] + 4
        for code, chunks in per_kind.items():
            where = (kb == code).nonzero().squeeze(1)
            remap[where] = offset + torch.arange(len(where), device=device)
            table.append(chunks[b].to(weight.dtype))
            offset += len(where)
        full = torch.cat(table)  # (V + 4 + n_b, D)
        onehot = torch.nn.functional.one_hot(remap, full.shape[0]).to(weight.dtype)  # (L, V + 4 + n_b)
        rows.append(onehot @ full)  # (L, D)
    return torch.stack(rows)  # (B, L, D)


def pad_to(batch: dict[str, Any], length: int) -> dict[str, Any]:
    """Right-pad input_ids / attention_mask / labels to `length` (the recipe's fixed 2048)."""
    out = dict(batch)
    extra = length - batch["input_ids"].shape[1]
    if extra < 0:
        raise KitError(f"a sample has {batch['input_ids'].shape[1]} tokens, more than the recipe's {length}")
    pad = torch.nn.functional.pad
    out["input_ids"] = pad(batch["input_ids"], (0, extra), value=0)
    out["attention_mask"] = pad(batch["attention_mask"], (0, extra), value=0)
    out["labels"] = pad(batch["labels"], (0, extra), value=-100)
    return out


def train_step_bench(model: Any, kit_batch: dict[str, Any], recipe_batch: dict[str, Any], steps: int = 3,
                     lr: float = 1e-4) -> dict[str, Any]:
    """Time `steps` AdamW steps of each path (after one warm-up) on copies of `model`; compare the first losses."""
    from reg2rg_lib.samples.collate import VISUAL_KEYS, model_inputs

    def kit_loss(m: Any) -> torch.Tensor:
        return m(**model_inputs(kit_batch)).loss

    def recipe_loss(m: Any) -> torch.Tensor:
        visual = {k: recipe_batch[k] for k in VISUAL_KEYS if k in recipe_batch}
        embeds = recipe_embeddings(m, recipe_batch["input_ids"], **visual)
        return m.lang_model(inputs_embeds=embeds, attention_mask=recipe_batch["attention_mask"],
                            labels=recipe_batch["labels"]).loss

    result: dict[str, Any] = {}
    n = kit_batch["input_ids"].shape[0]
    for name, loss_fn in (("kit", kit_loss), ("recipe", recipe_loss)):
        m = copy.deepcopy(model).train()
        opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=lr)
        times = []
        for i in range(steps + 1):
            t0 = time.perf_counter()
            loss = loss_fn(m)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i == 0:
                result[f"{name}_loss"] = loss.item()  # from the shared initial weights
            else:
                times.append(time.perf_counter() - t0)
        result[f"{name}_step_s"] = sorted(times)[len(times) // 2]
        result[f"{name}_samples_per_s"] = n / result[f"{name}_step_s"]
    result["speedup_vs_recipe"] = result["kit_samples_per_s"] / result["recipe_samples_per_s"]
    result["loss_rel_diff"] = abs(result["kit_loss"] - result["recipe_loss"]) / abs(result["recipe_loss"])
    return result


def _train_step(args: argparse.Namespace) -> int:
    from reg2rg_lib.model import Reg2RG
    from reg2rg_lib.samples.collate import Collator
    from reg2rg_lib.samples.dataset import ReportDataset
    from reg2rg_lib.samples.features import feature_cache_for, use_feature_cache
    from reg2rg_lib.train.loop import seed_everything
    from reg2rg_lib.train.run import model_config

    with tempfile.TemporaryDirectory(prefix="reg2rg-bench-") as tmp:
        profile, cache, tok, where = bench_inputs(args.profile, args.out, Path(tmp))
        cfg = model_config(profile)
        seed_everything(0)
        model = Reg2RG(cfg, tok)
        names = [r.name for r in cache.cases("train")][: args.batch_size]
        # the kit's path: cached features whenever the model has a ViT to cache (this bench measures them)
        features = feature_cache_for(model, cache, names, progress=False) if use_feature_cache(model, True) else None
        kit_ds = ReportDataset(cache, "train", tok, cfg, features=features, seed=0, names=names)
        raw_ds = ReportDataset(cache, "train", tok, cfg, features=None, seed=0, names=names)
        collate = Collator(tok.pad_token_id)
        kit_batch = collate([kit_ds[i] for i in range(len(kit_ds))])
        recipe_batch = pad_to(collate([raw_ds[i] for i in range(len(raw_ds))]), RECIPE_PAD)
        figures = {"profile": profile.name, "inputs": where, "batch_size": len(names),
                   "kit_tokens": int(kit_batch["input_ids"].shape[1]), "recipe_tokens": RECIPE_PAD}
        figures.update(train_step_bench(model, kit_batch, recipe_batch, steps=args.steps))
    figures.update(machine())
    return report(figures, args.json)


# ---- generate ----------------------------------------------------------------------------------------------------
def _generate(args: argparse.Namespace) -> int:
    from reg2rg_lib.infer.generate import DecodeSettings, batch_groups, decode_engine, load_model
    from reg2rg_lib.model import Reg2RG
    from reg2rg_lib.samples.features import feature_cache_for, use_feature_cache
    from reg2rg_lib.train.loop import seed_everything
    from reg2rg_lib.train.run import model_config

    with tempfile.TemporaryDirectory(prefix="reg2rg-bench-") as tmp:
        profile, cache, tok, where = bench_inputs(args.profile, args.out, Path(tmp))
        ckpt = args.checkpoint or RunPaths(args.out or default_out_dir(args.profile)).run("full")
        trained = Path(ckpt).is_dir() and profile.name == args.profile
        if trained:
            model = load_model(ckpt, device="cpu")
        else:
            seed_everything(0)
            model = Reg2RG(model_config(profile), tok)
        decode = DecodeSettings.from_profile(profile.generate, max_new_tokens=args.max_new_tokens)
        batch = args.batch_size or profile.generate.batch_size
        records = cache.cases("test")[: args.cases]
        features = None  # as `reg2rg generate`: the frozen ViT's features from the cache, built before the clock
        if use_feature_cache(model, None if args.feature_cache else False):
            features = feature_cache_for(model, cache, [r.name for r in records], progress=False)
        figures: dict[str, Any] = {"profile": profile.name, "inputs": where, "model": str(ckpt) if trained
                                   else "untrained", "cases": len(records), "decoding": decode.describe(),
                                   "engine": decode_engine(model, decode, args.engine),
                                   "feature_cache": features is not None}
        groups = batch_groups([r.name for r in records], [len(r.regions) for r in records], batch)
        figures.update(generate_bench(model, cache, groups, decode, batch, Path(tmp), repeat=args.repeat,
                                      features=features, engine=args.engine))
    figures.update(machine())
    return report(figures, args.json)


def generate_bench(model: Any, cache: Any, groups: list[list[str]], decode: Any, batch_size: int, tmp: Path,
                   repeat: int = 3, **kwargs: Any) -> dict[str, Any]:
    """Time `generate_predictions` at `batch_size` and at 1 on the same cases, batch by batch, the two arms
    alternating (which goes first alternates too), so a change in the machine's load falls on both; `repeat`
    rounds, the figures of the round with the median speedup (every round's speedup in `speedup_rounds`).
    Untimed first: a 2-token pass over every batch, so both arms find the cases' files in the page cache and
    the first calls' allocations done. `groups`: the batched arm's batches (`batch_groups`); `kwargs` go to
    `generate_predictions`."""
    from reg2rg_lib.infer.generate import generate_predictions
    from reg2rg_lib.infer.predictions import read_predictions

    warm = dataclasses.replace(decode, max_new_tokens=2)
    for k, group in enumerate(groups):
        generate_predictions(model, cache, tmp / f"warm-up-{k}.csv", decode=warm, batch_size=batch_size,
                             names=group, progress=False, **kwargs)
    generate_predictions(model, cache, tmp / "warm-up.csv", decode=warm, batch_size=1, names=groups[0][:1],
                         progress=False, **kwargs)
    arms = (("batched", batch_size), ("single", 1))
    rounds, texts = [], {"batched": {}, "single": {}}
    load = [os.getloadavg()[0]]
    for r in range(max(1, repeat)):
        seconds = {"batched": 0.0, "single": 0.0}
        for k, group in enumerate(groups):
            for label, size in arms if (k + r) % 2 == 0 else arms[::-1]:
                out = tmp / f"{label}-{r}-{k}.csv"
                t0 = time.perf_counter()
                generate_predictions(model, cache, out, decode=decode, batch_size=size, names=group,
                                     progress=False, **kwargs)
                seconds[label] += time.perf_counter() - t0
                texts[label].update({row["AccNum"]: row["Pred_combined_report"] for row in read_predictions(out)})
        rounds.append(seconds)
    load.append(os.getloadavg()[0])
    speedups = [sec["single"] / sec["batched"] for sec in rounds]
    median = rounds[sorted(range(len(rounds)), key=speedups.__getitem__)[len(rounds) // 2]]
    n = sum(len(g) for g in groups)
    figures: dict[str, Any] = {}
    for label, size in arms:
        figures[f"{label}_batch_size"] = size
        figures[f"{label}_seconds"] = median[label]
        figures[f"{label}_reports_per_s"] = n / median[label]
    figures["speedup_batched"] = median["single"] / median["batched"]
    figures["speedup_rounds"] = [round(x, 3) for x in speedups]
    figures["same_text_fraction"] = sum(texts["batched"][c] == texts["single"].get(c) for c in texts["batched"]) \
        / max(1, len(texts["batched"]))
    figures["load_avg_1min"] = [round(x, 2) for x in load]  # before, after: other work on the machine
    return figures


# ---- gpu-step ----------------------------------------------------------------------------------------------------
def peak_tflops(device_name: str) -> float | None:
    for key in sorted(BF16_PEAK_TFLOPS, key=len, reverse=True):
        if key.lower() in device_name.lower():
            return BF16_PEAK_TFLOPS[key]
    return None


def synthetic_tokenizer(vocab_size: int) -> Any:
    """A word-level tokenizer with `vocab_size` entries (<unk> <s> </s> <pad> w4 w5 ...): the LLaMA-2 vocabulary
    size without its files, for benchmarks with random weights."""
    # transformers: slow to import (~10 s); only the recipe tokenizer needs it
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<unk>", "<s>", "</s>", "<pad>"])}
    vocab.update({f"w{i}": i for i in range(4, vocab_size)})
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")


def step_flops(model: Any, cfg: Any, n_tokens: int, seq_len: int, n_images: int, feature_cache: bool
               ) -> dict[str, float]:
    """Model FLOPs of one training step (a multiply-add = 2 FLOPs), the work the maths needs (no recomputation).

    `model`: over the LLM's non-embedding weights and T tokens, 2 * N * T forward plus 2 * N * T for the input
    gradients of the backward pass, plus another 2 * N * T for weight gradients of the *trainable* weights only (LoRA
    leaves the base frozen, so a frozen weight costs 4 * N * T, a trained one 6 * N * T); causal attention
    6 * layers * hidden * T * S (QK^T and AV, forward and backward, half the S x S square); the frozen ViT's forward
    2 * weights * its tokens per image unless its features are cached. `convention_6nt`: the same with 6 * N * T
    for every LLM weight, as full-fine-tuning MFU figures are usually quoted (it overstates LoRA's work by ~1.5x).
    """
    llm = model.llm()
    weights = [(n, p) for n, p in llm.named_parameters() if "embed_tokens" not in n]
    n_all = sum(p.numel() for _, p in weights)
    n_trained = sum(p.numel() for _, p in weights if p.requires_grad)
    attention = 6.0 * cfg.llm_layers * cfg.llm_hidden * n_tokens * seq_len
    vit = 0.0
    if not feature_cache and model.embedding_layer.vision_encoder is not None:
        n_vit = sum(p.numel() for p in model.embedding_layer.vision_encoder.parameters())
        vit = 2.0 * n_vit * cfg.vit_tokens * n_images
    return {"model": 4.0 * n_all * n_tokens + 2.0 * n_trained * n_tokens + attention + vit,
            "convention_6nt": 6.0 * n_all * n_tokens + attention + vit}


# the settings `--sweep` measures in one process (the model is built once): (seq_len, batch, feature cache, GC)
SWEEP: tuple[tuple[int, int, bool, bool], ...] = (
    (1024, 1, False, False),  # the paper's code: batch 1 per GPU, frozen ViT recomputed every step
    (1024, 1, True, False),   # the kit's default: cached ViT features
    (1024, 4, True, False),
    (1024, 8, True, False),
    (2048, 8, True, True),    # the paper's 2048-token padding length, gradient checkpointing
)


def _gpu_step(args: argparse.Namespace) -> int:
    if not torch.cuda.is_available() and not args.allow_cpu:
        raise KitError("bench gpu-step needs a CUDA GPU, and none is visible to torch "
                       f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); run it on a GPU "
                       "machine with a CUDA build of torch (README: GPU installs)")
    bench = GpuStepBench(args.preset, compile_layers=args.compile)
    settings = SWEEP if args.sweep else ((args.seq_len, args.batch_size, args.feature_cache,
                                          args.gradient_checkpointing),)
    for seq_len, batch_size, feature_cache, gc in settings:
        try:
            figures = bench.measure(seq_len=seq_len, batch_size=batch_size, steps=args.steps,
                                    feature_cache=feature_cache, gradient_checkpointing=gc, peak=args.peak_tflops)
        except torch.OutOfMemoryError:
            figures = {"seq_len": seq_len, "batch_size": batch_size, "feature_cache": feature_cache,
                       "gradient_checkpointing": gc, "error": "out of GPU memory"}
            torch.cuda.empty_cache()
        figures.update(machine())
        report(figures, args.json)
    return 0


def gpu_step(preset: str = "paper", seq_len: int = 1024, batch_size: int = 1, steps: int = 5,
             feature_cache: bool = False, gradient_checkpointing: bool = False,
             peak: float | None = None, compile_layers: bool = False) -> dict[str, Any]:
    """One training step of `preset` with random weights on the current device (bf16 on CUDA, fp32 on CPU)."""
    return GpuStepBench(preset, compile_layers=compile_layers).measure(
        seq_len=seq_len, batch_size=batch_size, steps=steps, feature_cache=feature_cache,
        gradient_checkpointing=gradient_checkpointing, peak=peak)


class GpuStepBench:
    """`preset` built once with random weights directly on the device (bf16 on CUDA: no 28 GB fp32 host copy),
    then timed in several settings. `compile_layers` compiles each LLM decoder layer with `torch.compile`
    (regional compilation: the 32 identical layers share one compiled graph, so it compiles in seconds)."""

    def __init__(self, preset: str = "paper", compile_layers: bool = False) -> None:
        from reg2rg_lib.model import Reg2RG, Reg2RGConfig

        self.cuda = torch.cuda.is_available()
        self.device = torch.device("cuda" if self.cuda else "cpu")
        self.dtype = torch.bfloat16 if self.cuda else torch.float32
        self.preset = preset
        self.cfg = Reg2RGConfig.preset(preset)
        self.tok = synthetic_tokenizer(self.cfg.llm_vocab)
        torch.manual_seed(0)
        default_dtype = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)
        try:
            with torch.device(self.device):
                self.model = Reg2RG(self.cfg, self.tok)
        finally:
            torch.set_default_dtype(default_dtype)
        self.model.to(self.device)
        self.compiled = compile_layers
        if compile_layers:
            from reg2rg_lib.model.llm import compile_decoder_layers

            compile_decoder_layers(self.model.llm())
        self.opt = torch.optim.AdamW(self.model.trainable_parameters(), lr=1e-5)

    def measure(self, seq_len: int = 1024, batch_size: int = 1, steps: int = 5, feature_cache: bool = False,
                gradient_checkpointing: bool = False, peak: float | None = None) -> dict[str, Any]:
        from reg2rg_lib.model import build_sample, collate

        cfg, tok, device, dtype, model = self.cfg, self.tok, self.device, self.dtype, self.model
        from reg2rg_lib.model.llm import set_gradient_checkpointing

        set_gradient_checkpointing(model.llm(), gradient_checkpointing)
        # a sample with all 10 regions; the target is filled with words up to `seq_len` tokens
        probe = build_sample(list(REGIONS), {r: "w5" for r in REGIONS}, tok, cfg)
        n_words = max(1, (seq_len - len(probe.input_ids)) // len(REGIONS))
        reports = {r: " ".join(f"w{4 + (i * 7919 + k) % (cfg.llm_vocab - 4)}" for i in range(n_words))
                   for k, r in enumerate(REGIONS)}
        samples = [build_sample(list(REGIONS), reports, tok, cfg) for _ in range(batch_size)]
        batch = {k: v.to(device) for k, v in collate(samples, tok.pad_token_id).items()}
        tokens = int(batch["attention_mask"].sum())
        length = batch["input_ids"].shape[1]
        size = cfg.image_size
        n_img = batch_size * (1 + len(REGIONS))
        g = torch.Generator(device=device).manual_seed(0)
        visual: dict[str, torch.Tensor] = {}
        if feature_cache:
            visual["global_feats"] = torch.randn(batch_size, cfg.vit_tokens, cfg.vit_dim, device=device,
                                                 dtype=dtype, generator=g)
            visual["region_feats"] = torch.randn(batch_size * len(REGIONS), cfg.vit_tokens, cfg.vit_dim,
                                                 device=device, dtype=dtype, generator=g)
        else:
            visual["global_images"] = torch.rand(batch_size, cfg.in_channels, *size, device=device, dtype=dtype,
                                                 generator=g)
            visual["region_images"] = torch.rand(batch_size * len(REGIONS), cfg.in_channels, *size,
                                                 device=device, dtype=dtype, generator=g)
        visual["region_masks"] = (torch.rand(batch_size * len(REGIONS), 1, *size, device=device, generator=g)
                                  > 0.5).to(dtype)
        model.train()
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        times = []
        for i in range(steps + 2):
            if self.cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            loss = model(**batch, **visual).loss
            loss.backward()
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            if self.cuda:
                torch.cuda.synchronize()
            if i >= 2:
                times.append(time.perf_counter() - t0)
        step_s = sorted(times)[len(times) // 2]
        flops = step_flops(model, cfg, tokens, length, n_img, feature_cache)
        name = torch.cuda.get_device_name(0) if self.cuda else "cpu"
        peak = peak or (peak_tflops(name) if self.cuda else None)
        out: dict[str, Any] = {
            "preset": self.preset, "device": name, "dtype": str(dtype).removeprefix("torch."),
            "batch_size": batch_size, "tokens_per_step": tokens, "seq_len": length, "feature_cache": feature_cache,
            "gradient_checkpointing": gradient_checkpointing, "compiled_layers": self.compiled,
            "trainable_params": sum(p.numel() for p in model.trainable_parameters()), "loss": loss.item(),
            "step_s": step_s, "tokens_per_s": tokens / step_s, "model_tflops_per_step": flops["model"] / 1e12,
            "achieved_tflops": flops["model"] / step_s / 1e12,
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if self.cuda else float("nan"),
        }
        out["peak_bf16_tflops"] = peak if peak else float("nan")
        out["mfu"] = out["achieved_tflops"] / peak if peak else float("nan")
        out["mfu_6nt_convention"] = flops["convention_6nt"] / step_s / 1e12 / peak if peak else float("nan")
        return out
