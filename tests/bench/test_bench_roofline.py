"""`bench/roofline.py`: FLOPs counted as torch's counter counts them, the CPU attention kernel included."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import sdpa_flop_count

from reg2rg_lib.bench.roofline import matmul_peak, roofline, step_flops


def test_a_linear_layer_counts_its_product_forward_and_its_weight_gradient_backward():
    layer = torch.nn.Linear(8, 4, bias=False)
    x = torch.randn(3, 8)
    flops = step_flops(lambda: layer(x).sum(), [layer.weight])
    assert flops["forward"] == 2 * 3 * 8 * 4
    assert flops["backward"] == 2 * 3 * 8 * 4  # dW = dY^T x; no gradient for x
    assert flops["attention"] == 0 and flops["total"] == flops["forward"] + flops["backward"]


def test_cpu_attention_is_counted_with_the_other_kernels_formula():
    q = torch.randn(1, 2, 16, 8, requires_grad=True)
    k, v = torch.randn(1, 2, 16, 8), torch.randn(1, 2, 16, 8)
    flops = step_flops(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True).sum(), [q])
    assert flops["forward"] == sdpa_flop_count(q.shape, k.shape, v.shape) > 0
    assert flops["backward"] > 0 and flops["attention"] == flops["total"]


def test_the_bound_and_shares_follow_from_work_rate_and_peak():
    out = roofline(1e9, {"old": 10.0, "new": 20.0}, 100e9)
    assert out["gflop_per_sample"] == 1.0 and out["matmul_peak_gflops"] == 100.0
    assert (out["old_gflops"], out["new_gflops"]) == (10.0, 20.0)
    assert (out["old_share_of_peak"], out["new_share_of_peak"]) == (0.1, 0.2)
    assert out["bound_vs_today"] == pytest.approx(10.0)
    assert out["three_x_share_of_peak"] == pytest.approx(0.3)


def test_the_matmul_peak_is_a_positive_rate():
    assert 1e6 < matmul_peak(n=64, repeats=1, min_seconds=0.01) < 1e14
