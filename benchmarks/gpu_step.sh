#!/usr/bin/env bash
# The prepared GPU benchmark of issue 8: `reg2rg bench gpu-step` (paper preset: LLaMA-2-7B shape with random
# weights, bf16, LoRA r=8 on q/v, RadFM-shaped ViT3D, one GPU) in the settings worth recording, one JSON line each.
#
#   bash benchmarks/gpu_step.sh [OUT_DIR]        # needs a CUDA build of torch and `pip install -e .` (README)
#
# ~15 GB of GPU memory for the weights; the model is built once per process (random init of 7B on the GPU), then
# each setting runs 2 warm-up + 5 timed steps. Paste the printed table into benchmarks/RESULTS.md with the date and the card.
set -euo pipefail
PY=${PYTHON:-python}
OUT=${1:-benchmarks/gpu_step_$(date +%Y%m%d)}
mkdir -p "$OUT"
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU visible'; print(torch.cuda.get_device_name(0))"
# the standard settings (reg2rg_lib/train_bench.py SWEEP) with one model build, then the best one with compiled layers
"$PY" -m reg2rg_lib.cli bench gpu-step --sweep --json | tee "$OUT/sweep.jsonl"
for b in 8 12; do
    "$PY" -m reg2rg_lib.cli bench gpu-step --compile --seq-len 1024 --batch-size $b --feature-cache --json \
        | tee -a "$OUT/compiled.jsonl"
done
"$PY" - "$OUT" <<'PY'
import json, sys, pathlib
rows = [json.loads(line) for p in sorted(pathlib.Path(sys.argv[1]).glob("*.jsonl"))
        for line in p.read_text().splitlines() if line.startswith("{")]
cols = ["seq_len", "batch_size", "feature_cache", "gradient_checkpointing", "compiled_layers", "step_s",
        "tokens_per_s", "achieved_tflops", "mfu", "mfu_6nt_convention", "peak_memory_gib"]
print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
for r in rows:
    if "error" in r:
        print(f"| {r} |"); continue
    print("| " + " | ".join(f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
PY
