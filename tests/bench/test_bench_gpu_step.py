"""`reg2rg bench gpu-step` (bench.gpu_step): a clear error without a GPU, the code path on the CPU."""

from __future__ import annotations

import pytest
import torch

from reg2rg_lib.cli import main as cli_main


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_gpu_step_needs_a_gpu(capsys):
    assert cli_main(["bench", "gpu-step"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


def test_gpu_step_code_path_runs_on_cpu_with_the_cpu_tiny_preset():
    from reg2rg_lib.bench.gpu_step import gpu_step, peak_tflops

    out = gpu_step("cpu-tiny", seq_len=300, steps=1)
    assert out["tokens_per_step"] <= 300 and out["model_tflops_per_step"] > 0
    assert peak_tflops("NVIDIA H200") == pytest.approx(989.4)
    assert peak_tflops("NVIDIA H100 PCIe") == pytest.approx(756.0)
