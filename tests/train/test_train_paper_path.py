"""The paper's training path rehearsed on a CPU at tiny size, so that a GPU run of `paper` does not meet its
first bug after hours of setup.

A profile built from `paper` with only the sizes made tiny (the smoke benchmark's 32x32x8 images, the cpu-tiny
preset's ViT and LLM, 4 steps) keeps the paper's recipe: bf16 autocast, gradient checkpointing with LoRA on
q_proj/v_proj, batch 1 x gradient accumulation 2, AdamW at 5e-5, no feature cache, seed 42. It trains,
checkpoints and resumes in one process and on 2 CPU processes over gloo (torchrun, as
configs/accelerate/cpu_2proc.yaml advises). What needs a GPU (DeepSpeed ZeRO-2, FSDP, DDP over NCCL, the 7B
LLM) is listed in the README ("What only a GPU checks") and tested by `test_on_gpus_...`, skipped without
CUDA; a CPU launch that asks for FSDP or DeepSpeed is refused, because accelerate would silently train it
unsharded.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import reg2rg_lib.train.run as run_module
from reg2rg_lib.errors import KitError
from reg2rg_lib.model.llm import base_llm
from reg2rg_lib.profiles import load_profile
from reg2rg_lib.train.loop import TrainSettings, make_accelerator, read_train_log

#: `paper` with tiny sizes: everything else (precision, checkpointing, accumulation, lr, seed) is the paper's.
TINY_PAPER = {"data.image_size": [32, 32, 8], "model.preset": "cpu-tiny", "model.llm_path": None,
              "train.max_steps": 4, "train.save_every": 2, "train.warmup_steps": 1}
# the cpu-tiny preset trains its random LLM fully; the paper adapts it with LoRA
LORA = {"llm_finetune": "lora"}


def tiny_paper(**overrides):
    return load_profile("paper", overrides={**TINY_PAPER, **overrides})


def test_tiny_paper_profile_keeps_the_papers_training_recipe():
    paper, tiny = load_profile("paper").train, tiny_paper().train
    assert (tiny.precision, tiny.gradient_checkpointing, tiny.batch_size, tiny.grad_accum) == (
        "bf16",
        True,
        1,
        2,
    )
    assert (tiny.lr, tiny.seed, tiny.feature_cache) == (paper.lr, paper.seed, paper.feature_cache)


class _Probe:
    """Wraps `train.run.fit`: hooks the first LLM decoder layer (calls of its first norm, its MLP's output
    dtype)."""

    def __init__(self) -> None:
        self.calls, self.dtypes, self.model = 0, set(), None
        self._fit = run_module.fit

    def __call__(self, model, *args, **kwargs):
        self.model = model
        layer = base_llm(model.lang_model).model.layers[0]

        def count(_module, _inputs, _output):  # the layer's first op: runs again when backward recomputes it
            self.calls += 1

        # a matmul's: autocast decides it (the residual stream stays fp32)
        def dtype(_module, _inputs, output):
            self.dtypes.add(output.dtype)

        handles = [layer.input_layernorm.register_forward_hook(count),
                   layer.mlp.down_proj.register_forward_hook(dtype)]
        try:
            return self._fit(model, *args, **kwargs)
        finally:
            for handle in handles:
                handle.remove()


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one state per process whose mixed precision cannot change once set, so an fp32 run of
    an earlier test would make this test's bf16 `Accelerator` raise. Reset it before and after, as
    accelerate's own tests do (the process's device and rank, `PartialState`, stay)."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state()
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state()
    GradientState._reset_state()


def _train(smoke, run, monkeypatch, **kwargs):
    probe = _Probe()
    monkeypatch.setattr(run_module, "fit", probe)
    result = run_module.train_run(tiny_paper(), run, cache_dir=smoke.cache, tokenizer_dir=smoke.tokenizer,
                                  model_changes=LORA, progress=False, **kwargs)
    return result, probe


def test_paper_settings_train_in_bf16_with_checkpointing_lora_and_accumulation_and_resume(
    smoke, tmp_path, monkeypatch, fresh_accelerate_state
):
    full, probe = _train(smoke, tmp_path / "full", monkeypatch)
    assert full.steps == 4 and all(torch.isfinite(torch.tensor(full.losses)))
    assert probe.dtypes == {torch.bfloat16}  # accelerate's bf16 autocast reached the LLM
    llm = probe.model.lang_model
    base = base_llm(llm)  # transformers 5.x renamed the flag (the old name warns)
    assert getattr(base, "is_activation_checkpointing", None) or base.is_gradient_checkpointing
    # each of the 8 micro-batches: a forward, and its recomputation in backward
    assert probe.calls == 2 * 4 * 2
    trainable_llm = [n for n, p in llm.named_parameters() if p.requires_grad]
    assert trainable_llm and all("lora_" in n for n in trainable_llm)  # the LLM trains through LoRA only
    state = json.loads(
        (tmp_path / "full" / "checkpoints" / "step-00000004" / "trainer_state.json").read_text()
    )
    assert (state["step"], state["micro_step"]) == (4, 8)  # 2 micro-batches per optimizer step

    _train(smoke, tmp_path / "cut", monkeypatch, max_steps=2)
    resumed, _ = _train(smoke, tmp_path / "cut", monkeypatch, resume=True)
    assert resumed.resumed_from == 2
    assert resumed.weights_sha256 == full.weights_sha256
    assert [r["loss"] for r in read_train_log(tmp_path / "cut")] == [r["loss"] for r in read_train_log(
        tmp_path / "full")]


# One launch, three runs (each reads only what the one before wrote to disk): 4 steps uninterrupted; 2 steps;
# the 2-step run resumed to 4. One launch, because starting 2 processes that import torch is most of the cost.
_TRAIN_SCRIPT = """
import json, os, sys
from reg2rg_lib.io import enable_logging
from reg2rg_lib.profiles import load_profile
from reg2rg_lib.train.run import train_run
enable_logging()
overrides, root, cache, tokenizer = json.loads(sys.argv[1]), *sys.argv[2:5]
for name, folder, steps, resume in (
    ("full", "full", 4, False), ("cut", "cut", 2, False), ("resumed", "cut", 4, True)
):
    result = train_run(load_profile("paper", overrides=overrides), f"{root}/{folder}", cache_dir=cache,
                       tokenizer_dir=tokenizer, max_steps=steps, resume=resume,
                       model_changes={"llm_finetune": "lora"}, progress=False)
    # one file per rank: two ranks printing to one shared stdout pipe can interleave their lines
    with open(f"{root}/results_rank{os.environ.get('RANK', '0')}.jsonl", "a") as out:
        out.write(json.dumps({"run": name, "steps": result.steps, "resumed_from": result.resumed_from,
                              "world": result.world_size, "weights_sha256": result.weights_sha256}) + "\\n")
"""


def _launch(tmp_path, launcher: list[str]) -> list[str]:
    """`launcher` (ending in its port option) + a free port + `_TRAIN_SCRIPT`, written into `tmp_path`."""
    script = tmp_path / "train_tiny_paper.py"
    script.write_text(_TRAIN_SCRIPT)
    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    return [*launcher, port, str(script)]


def _run_script(cmd: list[str], root: Path, timeout: int = 600) -> list[dict]:
    """Run a launch of `_TRAIN_SCRIPT` writing into `root`; its results (one per run and rank)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "precision bf16" in res.stdout
    return [json.loads(line) for f in sorted(root.glob("results_rank*.jsonl"))
            for line in f.read_text().splitlines()]


@pytest.mark.slow
def test_paper_settings_on_two_gloo_processes_resume_to_the_same_weights(smoke, tmp_path):
    # torchrun: `accelerate launch` with configs/accelerate/cpu_2proc.yaml starts 1 process here (its comment)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port"]
    cmd = _launch(tmp_path, launcher) + [
        json.dumps(TINY_PAPER),
        str(tmp_path),
        str(smoke.cache),
        str(smoke.tokenizer),
    ]
    results = _run_script(cmd, tmp_path, timeout=300)
    by_run: dict[str, list[dict]] = {}
    for r in results:
        by_run.setdefault(r["run"], []).append(r)
    # ranks in sync
    assert all(len(ranks) == 2 and ranks[0] == ranks[1] for ranks in by_run.values()), results
    full, resumed = by_run["full"][0], by_run["resumed"][0]
    assert (resumed["resumed_from"], resumed["world"], resumed["steps"]) == (2, 2, 4)
    assert resumed["weights_sha256"] == full["weights_sha256"]
    assert [r["loss"] for r in read_train_log(tmp_path / "cut")] == [r["loss"] for r in read_train_log(
        tmp_path / "full")]


# ---- what only a GPU checks (README: "What only a GPU checks"); skipped without CUDA -----------------------
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="DeepSpeed, FSDP and DDP over NCCL need CUDA GPUs")
@pytest.mark.parametrize("config", ["ddp", "fsdp", "deepspeed_zero2"])
def test_on_gpus_each_accelerate_config_trains_the_tiny_paper_profile_and_resumes(smoke, tmp_path, repo_root,
                                                                                  config):
    if config == "deepspeed_zero2":
        pytest.importorskip("deepspeed")
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                str(repo_root / "configs" / "accelerate" / f"{config}.yaml"), "--num_processes",
                str(torch.cuda.device_count()), "--main_process_port"]
    cmd = _launch(tmp_path, launcher) + [
        json.dumps(TINY_PAPER),
        str(tmp_path),
        str(smoke.cache),
        str(smoke.tokenizer),
    ]
    results = _run_script(cmd, tmp_path)
    resumed = [r for r in results if r["run"] == "resumed"]
    assert resumed and all((r["resumed_from"], r["steps"]) == (2, 4) for r in resumed)
    assert resumed[0]["world"] == torch.cuda.device_count()
    full, cut = (read_train_log(tmp_path / name) for name in ("full", "cut"))
    assert len(full) == len(cut) == 4 and all(torch.isfinite(torch.tensor([r["loss"] for r in cut])))
    # GPU kernels need not be bitwise deterministic: the resumed run follows the uninterrupted one closely
    assert [r["loss"] for r in cut] == pytest.approx([r["loss"] for r in full], rel=2e-2)


@pytest.mark.parametrize("variable", ["ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"])
def test_a_sharding_launch_without_a_gpu_is_refused_not_run_unsharded(monkeypatch, variable):
    if torch.cuda.is_available():
        pytest.skip("on a GPU machine accelerate runs FSDP and DeepSpeed")
    monkeypatch.setenv(variable, "true")
    with pytest.raises(KitError, match="needs GPUs.*cpu_2proc.yaml"):
        make_accelerator(TrainSettings())
