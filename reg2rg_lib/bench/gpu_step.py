"""`reg2rg bench gpu-step`: the paper preset (LLaMA-2-7B shape, random weights, bf16, LoRA, ViT3D) on one GPU.

Figures: step time, tokens/s, peak memory and model FLOPs utilisation against the card's dense bf16 peak
(`BF16_PEAK_TFLOPS`, `step_flops`); `--sweep` measures the standard settings (`SWEEP`) with one model build.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from tokenizers import Tokenizer, models, pre_tokenizers

from reg2rg_lib.bench.common import report
from reg2rg_lib.env.doctor import machine
from reg2rg_lib.errors import KitError
from reg2rg_lib.regions import REGIONS

#: Dense bf16 peak TFLOPS (no sparsity) by a substring of `torch.cuda.get_device_name()`; --peak-tflops
#: overrides.
BF16_PEAK_TFLOPS: dict[str, float] = {
    "H200": 989.4, "H100 SXM": 989.4, "H100 80GB HBM3": 989.4, "H100 NVL": 835.0, "H100 PCIe": 756.0,
    "H100": 756.0, "GH200": 989.4, "B200": 2250.0, "A100": 312.0, "A800": 312.0, "L40S": 362.0, "L40": 181.0,
    "A6000": 154.8, "RTX 4090": 165.2, "A10": 125.0,
}


def register_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gpu-step", help="paper preset on one GPU: step time, tokens/s, peak memory, MFU")
    p.add_argument("--json", action="store_true", help="print one JSON line")
    p.add_argument(
        "--seq-len", type=int, default=1024, help="tokens per sample (prompt + target; default 1024)"
    )
    p.add_argument("--batch-size", type=int, default=1, help="samples per step (the paper: 1 per GPU)")
    p.add_argument("--steps", type=int, default=5, help="timed steps after 2 warm-ups (default 5)")
    p.add_argument(
        "--feature-cache", action="store_true", help="feed cached ViT features (skip the frozen ViT)"
    )
    p.add_argument(
        "--gradient-checkpointing", action="store_true", help="recompute LLM activations in backward"
    )
    p.add_argument(
        "--peak-tflops", type=float, default=None, help="the card's dense bf16 peak (default: table)"
    )
    p.add_argument("--sweep", action="store_true",
                   help="measure the standard settings (gpu_step.SWEEP) with one model build; one line each")
    p.add_argument("--compile", action="store_true", help="torch.compile each LLM decoder layer")
    p.add_argument("--preset", default="paper", help=argparse.SUPPRESS)  # tests run `cpu-tiny` on the CPU
    p.add_argument("--allow-cpu", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=_gpu_step)


def peak_tflops(device_name: str) -> float | None:
    for key in sorted(BF16_PEAK_TFLOPS, key=len, reverse=True):
        if key.lower() in device_name.lower():
            return BF16_PEAK_TFLOPS[key]
    return None


def synthetic_tokenizer(vocab_size: int) -> Any:
    """A word-level tokenizer with `vocab_size` entries (<unk> <s> </s> <pad> w4 w5 ...): the LLaMA-2
    vocabulary size without its files, for benchmarks with random weights."""
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
    """Model FLOPs of one training step (a multiply-add = 2 FLOPs), the work the maths needs (no
    recomputation).

    `model`: over the LLM's non-embedding weights and T tokens, 2 * N * T forward plus 2 * N * T for the input
    gradients of the backward pass, plus another 2 * N * T for weight gradients of the *trainable* weights
    only (LoRA leaves the base frozen, so a frozen weight costs 4 * N * T, a trained one 6 * N * T); causal
    attention 6 * layers * hidden * T * S (QK^T and AV, forward and backward, half the S x S square); the
    frozen ViT's forward 2 * weights * its tokens per image unless its features are cached. `convention_6nt`:
    the same with 6 * N * T for every LLM weight, as full-fine-tuning MFU figures are usually quoted (it
    overstates LoRA's work by ~1.5x).
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


# the settings `--sweep` measures in one process (the model is built once): (seq_len, batch, feature cache,
# GC)
SWEEP: tuple[tuple[int, int, bool, bool], ...] = (
    (1024, 1, False, False),  # the paper's code: batch 1 per GPU, frozen ViT recomputed every step
    (1024, 1, True, False),   # the kit's default: cached ViT features
    (1024, 4, True, False),
    (1024, 8, True, False),
    (2048, 8, True, True),    # the paper's 2048-token padding length, gradient checkpointing
)


def _gpu_step(args: argparse.Namespace) -> int:
    if not torch.cuda.is_available() and not args.allow_cpu:
        raise KitError(
            "bench gpu-step needs a CUDA GPU, and none is visible to torch "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); run it on a GPU "
            "machine with a CUDA build of torch (README: GPU installs)"
        )
    bench = GpuStepBench(args.preset, compile_layers=args.compile)
    settings = SWEEP if args.sweep else ((args.seq_len, args.batch_size, args.feature_cache,
                                          args.gradient_checkpointing),)
    for seq_len, batch_size, feature_cache, gc in settings:
        try:
            figures = bench.measure(
                seq_len=seq_len,
                batch_size=batch_size,
                steps=args.steps,
                feature_cache=feature_cache,
                gradient_checkpointing=gc,
                peak=args.peak_tflops,
            )
        except torch.OutOfMemoryError:
            figures = {
                "seq_len": seq_len,
                "batch_size": batch_size,
                "feature_cache": feature_cache,
                "gradient_checkpointing": gc,
                "error": "out of GPU memory",
            }
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
            visual["global_images"] = torch.rand(
                batch_size, cfg.in_channels, *size, device=device, dtype=dtype, generator=g
            )
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
            "preset": self.preset,
            "device": name,
            "dtype": str(dtype).removeprefix("torch."),
            "batch_size": batch_size,
            "tokens_per_step": tokens,
            "seq_len": length,
            "feature_cache": feature_cache,
            "gradient_checkpointing": gradient_checkpointing,
            "compiled_layers": self.compiled,
            "trainable_params": sum(p.numel() for p in model.trainable_parameters()),
            "loss": loss.item(),
            "step_s": step_s,
            "tokens_per_s": tokens / step_s,
            "model_tflops_per_step": flops["model"] / 1e12,
            "achieved_tflops": flops["model"] / step_s / 1e12,
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if self.cuda else float("nan"),
        }
        out["peak_bf16_tflops"] = peak if peak else float("nan")
        out["mfu"] = out["achieved_tflops"] / peak if peak else float("nan")
        out["mfu_6nt_convention"] = flops["convention_6nt"] / step_s / 1e12 / peak if peak else float("nan")
        return out
