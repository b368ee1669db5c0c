#!/usr/bin/env bash
# The GPU measurements of the project in one call (about 8 minutes on one recent GPU), for a machine that is
# lent briefly: codec speed at float32 / bfloat16 / float16 with batches of 1 and 64 windows, the per-stage
# roofline at float32 and bfloat16, GPU memory, and the LM trainer's throughput with the realistic recipe's
# model on a synthetic corpus. Everything lands in one folder; summary.txt collects the parseable lines.
#
#   bash benchmarks/gpu_suite.sh OUTPUT_DIR            # or GPU_SUITE_OUT=OUTPUT_DIR bash benchmarks/gpu_suite.sh
#   GPU_SUITE_DEVICE=cpu GPU_SUITE_QUICK=1 bash benchmarks/gpu_suite.sh /tmp/suite   # a smoke run without a GPU
#
# Each step has its own time limit (GPU_SUITE_STEP_LIMIT seconds, default 150) so that one slow step cannot use
# up the machine; a step that fails or times out is recorded and the next one runs.
set -u
OUT=${1:-${GPU_SUITE_OUT:-gpu-suite-$(date -u +%Y%m%dT%H%M%SZ)}}
DEVICE=${GPU_SUITE_DEVICE:-cuda}
QUICK=${GPU_SUITE_QUICK:-0}
LIMIT=${GPU_SUITE_STEP_LIMIT:-150}
PYTHON=${PYTHON:-python}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"

step() {  # step NAME COMMAND...: run with a time limit, keep its output, copy its parseable lines to the summary
    local name=$1
    shift
    echo "== $name: $*" | tee -a "$SUMMARY"
    local started=$SECONDS
    timeout "$LIMIT" "$@" > "$OUT/$name.txt" 2>&1
    local rc=$?
    echo "   rc=$rc in $((SECONDS - started)) s" | tee -a "$SUMMARY"
    grep -E '^(CPU|GPU|CODEC_|ROOFLINE|LM_|SUMMARY)|tokens/s|window' "$OUT/$name.txt" >> "$SUMMARY" || true
}

{ nvidia-smi || echo "no nvidia-smi"; } > "$OUT/nvidia-smi.txt" 2>&1
"$PYTHON" -c "import torch, transformers, diffusers; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'transformers', transformers.__version__, 'diffusers', diffusers.__version__); \
print('GPU', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none')" > "$OUT/versions.txt" 2>&1
cat "$OUT/versions.txt" >> "$SUMMARY"

DTYPES=(float32 bfloat16 float16)
[ "$DEVICE" = cpu ] && DTYPES=(float32 bfloat16)  # float16 decoding is for GPUs
if [ "$QUICK" = 1 ]; then
    SIZE=tiny; CLIPS=4; ROOF=(--quick); STEPS50=5; TRAIN_STEPS=4
else
    SIZE=full; CLIPS=64; ROOF=(--windows 8); STEPS50=50; TRAIN_STEPS=20
fi

# codec speed: batch 1 vs 64 windows, DDIM 50 for the hour-of-audio estimate, three decoder precisions
step codec_speed "$PYTHON" "$HERE/codec_speed.py" --device "$DEVICE" --size "$SIZE" --token-rates 100 \
    --clips "$CLIPS" --batch "$CLIPS" --decode-steps "$STEPS50" --samplers "ddim:$STEPS50" dpmsolver++:10 \
    --decoder-dtypes "${DTYPES[@]}"
step roofline_float32 "$PYTHON" "$HERE/roofline.py" --device "$DEVICE" "${ROOF[@]}"
step roofline_bfloat16 "$PYTHON" "$HERE/roofline.py" --device "$DEVICE" "${ROOF[@]}" --decoder-dtype bfloat16

# the LM trainer with the realistic recipe's model and a synthetic corpus (no tokenized data on a lent machine)
RECIPE="$OUT/lm_realistic_synthetic.yaml"
"$PYTHON" - "$HERE/../recipes/lm_realistic_gpu.yaml" "$RECIPE" "$QUICK" "$TRAIN_STEPS" <<'EOF'
import sys

import yaml

source, target, quick, steps = sys.argv[1], sys.argv[2], sys.argv[3] == "1", int(sys.argv[4])
recipe = yaml.safe_load(open(source))
recipe["data"].pop("tokenized_dir", None)
recipe["data"]["synthetic"] = {"num_clips": 2000, "frames": 1000, "semantic_vocab_size": 8192,
                               "acoustic_vocab_size": 8192, "pattern": "interleaved"}
recipe["train"]["max_steps"] = steps
recipe["train"]["global_batch_size"] = 32  # ids/s do not depend on it much; 256 blocks of 2048 would not fit the time
if quick:  # a model small enough for a CPU smoke run
    recipe["model"].update(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128)
    recipe["data"]["block_size"] = 256
    recipe["model"]["max_position_embeddings"] = 256
    recipe["train"]["global_batch_size"] = 8
    recipe["data"]["synthetic"].update(num_clips=64, frames=100)
yaml.safe_dump(recipe, open(target, "w"))
EOF
step lm_throughput "$PYTHON" "$HERE/lm_throughput.py" --config "$RECIPE" --warmup-steps 5 \
    --steps "$TRAIN_STEPS" --new-tokens 254

echo "written: $OUT (summary.txt has the parseable lines)"
