"""How far the demo's training step is from this core's arithmetic peak (`bench train-demo --roofline`).

Two numbers, both measured here:

- **the work of a sample**: the floating-point operations of one step of today's loop (forward + backward) on
  the demo's batches, counted by `torch.utils.flop_counter.FlopCounterMode` (matrix products, convolutions and
  attention; element-wise work, normalisation and the optimizer are not counted). CPU attention runs as
  `_scaled_dot_product_flash_attention_for_cpu`, which torch's counter has no formula for: it gets the formula
  of the other attention kernels (`sdpa_flop_count`: the full square, not the causal half). The fast path is
  not counted (its causal-bias tensor subclass cannot be built under the counter's dispatch mode); it does the
  same work less the rows no loss reads, so its rate is given as today's work per second, an upper bound on
  the FLOPs it runs.
- **the peak**: the best rate of a large float32 matrix product (`n` x `n` by `n` x `n`) on the same threads,
  what these matrix kernels reach when a product is large enough to keep the core busy.

Their ratio bounds how fast today's work can run: samples/s cannot exceed peak / (work per sample). The 3x
goal of issue 25 asks for 3 x today's samples/s, i.e. today's work at 3 x today's rate; past the bound it
takes less work per sample, not faster kernels.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count


def _sdpa_cpu(query: torch.Size, key: torch.Size, value: torch.Size, *args: Any, out_shape: Any = None,
              **kwargs: Any) -> int:
    return sdpa_flop_count(query, key, value)


def _sdpa_cpu_backward(grad_out: torch.Size, query: torch.Size, key: torch.Size, value: torch.Size,
                       *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


#: the CPU attention kernel and its backward, with the formula torch's counter uses for the other kernels
CPU_ATTENTION = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_cpu_backward,
}


def step_flops(loss_fn: Callable[[], torch.Tensor], params: Sequence[torch.Tensor]) -> dict[str, int]:
    """FLOPs of `loss_fn()` and of its gradients with respect to `params` (nothing is updated)."""
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION) as forward:
        loss = loss_fn()
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION) as backward:
        torch.autograd.grad(loss, list(params))
    fwd, bwd = forward.get_total_flops(), backward.get_total_flops()
    attention = sum(v for counter in (forward, backward)
                    for op, v in counter.get_flop_counts()["Global"].items() if "attention" in str(op))
    return {"forward": fwd, "backward": bwd, "total": fwd + bwd, "attention": attention}


def matmul_peak(n: int = 1024, repeats: int = 5, min_seconds: float = 0.2) -> float:
    """FLOP/s of the best of `repeats` rounds of float32 `n` x `n` matrix products, on torch's current threads
    (each round runs for at least `min_seconds`)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm the kernels and caches
    best = 0.0
    for _ in range(repeats):
        count, start = 0, time.perf_counter()
        while True:
            torch.mm(a, b)
            count += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                break
        best = max(best, 2 * n**3 * count / elapsed)
    return best


def roofline(work: float, samples_per_s: dict[str, float], peak: float) -> dict[str, Any]:
    """Today's counted `work` (FLOPs per sample) done at each arm's measured samples/s ("old": today's loop,
    "new": the fast path): GFLOP/s and share of `peak`; the samples/s bound peak / work as a multiple of
    today's samples/s; and the share of `peak` that 3x today's samples/s would take.
    """
    out: dict[str, Any] = {"matmul_peak_gflops": peak / 1e9, "gflop_per_sample": work / 1e9}
    for arm, rate in samples_per_s.items():
        out[f"{arm}_gflops"] = work * rate / 1e9
        out[f"{arm}_share_of_peak"] = work * rate / peak
    out["bound_vs_today"] = peak / work / samples_per_s["old"]
    out["three_x_share_of_peak"] = 3 * work * samples_per_s["old"] / peak
    return out
