#!/usr/bin/env bash
# The follow-up GPU check of the device-setup work (after bench/gpu_check.sh), inside ten minutes
# on one lent H100:
#   1. the record's interconnect: `nvidia-smi topo -m` as parsed into every record's environment;
#   2. JAX through its rewritten placement (local devices, node-major mesh; --nodes support):
#      resnet50 224 px bf16 and cnn fp32, to compare with gpu_check's numbers;
#   3. the cell gpu_check left empty: Keras/torch cnn fp32;
#   4. where Keras/torch loses its time on ResNet-50 (bench/keras_torch_layout.py).
# Results go to $OUT (or bench/results/gpu-setup-check-<date>): run records, stdout/, summary.txt.
#
#   PYTHON=python3 OUT=/tmp/x bash bench/gpu_setup_check.sh
#   PYTHON=.venv/bin/python DEVICE=cpu SMOKE=1 bash bench/gpu_setup_check.sh    # rehearsal on a CPU machine
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
BUDGET_S=${BUDGET_S:-420}  # the three harness runs; the layout bench after them has its own timeouts
DEST=${OUT:-bench/results/gpu-setup-check-$(date -u +%Y%m%dT%H%M%S)}
export DL_ROSETTA_DATA=${DL_ROSETTA_DATA:-${TMPDIR:-/tmp}/dl-rosetta-gpu-check-data}
mkdir -p "$DEST/stdout"
START=$(date +%s)
if [[ -n "${SMOKE:-}" ]]; then
  RESNET=(--image-size 32 --samples 128 --epochs 2); CNN=(--samples 256 --epochs 2)
  LAYOUT=(--image-size 32 --batch 8 --steps 2 --warmup 1 --timeout 60)
else
  RESNET=(--image-size 224 --samples 2048 --epochs 3); CNN=(--samples 16384 --epochs 3)
  LAYOUT=(--image-size 224 --batch 64 --steps 10 --warmup 3 --timeout 150)
fi

"$PY" - > "$DEST/interconnect.json" <<'EOF'
import json
from harness import environment
env = environment.collect()
print(json.dumps({"gpus": env["gpus"], "interconnect": env["interconnect"]}, indent=1))
EOF
cat "$DEST/interconnect.json"

source bench/gpu_runs.sh  # run, summarize
run resnet50-jax-bf16 120 --framework jax --model resnet50 "${RESNET[@]}" --precision bf16
run cnn-jax-fp32 90 --framework jax --model cnn "${CNN[@]}"
run cnn-keras-torch-fp32 120 --framework keras --backend torch --model cnn "${CNN[@]}"

summarize
echo "== keras_torch_layout ($(( $(date +%s) - START ))s in)"
"$PY" bench/keras_torch_layout.py --device "$DEVICE" "${LAYOUT[@]}" 2> "$DEST/stdout/layout.err" | tee "$DEST/layout.txt"
echo "gpu_setup_check: $(( $(date +%s) - START )) s; results in $DEST"
