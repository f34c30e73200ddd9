#!/usr/bin/env bash
# The prepared GPU benchmark of issue 8: `reg2rg bench gpu-step` (paper preset: LLaMA-2-7B shape with random
# weights, bf16, LoRA r=8 on q/v, RadFM-shaped ViT3D, one GPU) in the settings worth recording, one JSON line each.
#
#   bash benchmarks/gpu_step.sh [OUT_DIR]        # needs a CUDA build of torch and `pip install -e .` (README)
#
# ~15 GB of GPU memory for the weights; each configuration takes about a minute (random init of 7B on the GPU,
# 2 warm-up + 5 timed steps). Paste the printed table into benchmarks/RESULTS.md with the date and the card.
set -euo pipefail
PY=${PYTHON:-python}
OUT=${1:-benchmarks/gpu_step_$(date +%Y%m%d)}
mkdir -p "$OUT"
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU visible'; print(torch.cuda.get_device_name(0))"
run() {  # name, extra flags
    local name=$1; shift
    "$PY" -m reg2rg_lib.cli bench gpu-step --json "$@" | tail -n 1 > "$OUT/$name.json"
    echo "$name: $(cat "$OUT/$name.json")"
}
run seq1024_vit          --seq-len 1024                      # the whole step, frozen ViT recomputed (paper code)
run seq1024_featcache    --seq-len 1024 --feature-cache      # the kit's default: cached ViT features
run seq1024_b4_featcache --seq-len 1024 --batch-size 4 --feature-cache
run seq2048_featcache_gc --seq-len 2048 --feature-cache --gradient-checkpointing
"$PY" - "$OUT" <<'PY'
import json, sys, pathlib
rows = [json.loads(p.read_text()) | {"config": p.stem} for p in sorted(pathlib.Path(sys.argv[1]).glob("*.json"))]
cols = ["config", "device", "batch_size", "tokens_per_step", "step_s", "tokens_per_s", "achieved_tflops",
        "mfu", "peak_memory_gib"]
print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
for r in rows:
    print("| " + " | ".join(f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
PY
