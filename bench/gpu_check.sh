#!/usr/bin/env bash
# One prepared GPU check: inside ten minutes on one H100, train every implementation that can run on
# the machine (`python -m harness list`: on the lent H100 that is PyTorch and JAX, plus Keras on the
# jax/torch backends when a keras wheel was carried; no TensorFlow) on resnet50 (224 px, as the
# published ~2,600-2,800 img/s H100 figures) and cnn, synthetic data, fp32 and bf16.
# Results go to $OUT/gpu-check (or bench/results/gpu-check-<date>): the run records (the harness's
# store), each command's stdout/stderr under stdout/, and summary.txt.
#
#   bash bench/gpu_check.sh                   # PYTHON=python3 by default; BUDGET_S=540
#   PYTHON=.venv/bin/python OUT=/tmp/x bash bench/gpu_check.sh
#   PYTHON=.venv/bin/python DEVICE=cpu SMOKE=1 bash bench/gpu_check.sh   # rehearsal on a CPU machine:
#                                             # tiny sizes, same plan, same summary (fp16 is skipped)
#
# Every run is a fresh worker with --timeout; a failed run is kept as a failed record and the
# script goes on. Runs are ordered so that the most useful numbers come first if time runs out.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
BUDGET_S=${BUDGET_S:-540}
DEVICE=${DEVICE:-cuda}
if [[ -n "${SMOKE:-}" ]]; then  # images, samples, epochs per model
  RESNET=(--image-size 32 --samples 128 --epochs 2); CNN=(--samples 256 --epochs 2)
else
  # ResNet-50 at 224 px: 2,048 images = 32 steps of 64 per epoch; 3 epochs (the first compiles/tunes).
  # CNN on CIFAR-sized images: 16,384 images = 256 steps per epoch; 3 epochs.
  RESNET=(--image-size 224 --samples 2048 --epochs 3); CNN=(--samples 16384 --epochs 3)
fi
DEST=${OUT:+$OUT/gpu-check}
DEST=${DEST:-bench/results/gpu-check-$(date -u +%Y%m%dT%H%M%S)}
export DL_ROSETTA_DATA=${DL_ROSETTA_DATA:-${TMPDIR:-/tmp}/dl-rosetta-gpu-check-data}
mkdir -p "$DEST/stdout"
START=$(date +%s)

if ! "$PY" -c "import numpy, pandas" 2>/dev/null; then
  echo "gpu_check: $PY lacks numpy or pandas (the harness needs both); set PYTHON=" >&2; exit 2
fi
if [[ "$DEVICE" == cuda ]]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv | tee "$DEST/nvidia-smi.csv"
fi
"$PY" - > "$DEST/versions.txt" 2>&1 <<'EOF'
import importlib, platform
print("python", platform.python_version())
for m in ("numpy", "pandas", "torch", "jax", "jaxlib", "flax", "optax", "keras"):
    try:
        print(m, importlib.import_module(m).__version__)
    except Exception as e:  # absent here: its rows are skipped by the plan below
        print(m, "absent:", type(e).__name__, str(e)[:80])
EOF
cat "$DEST/versions.txt"
"$PY" -m harness list --format json > "$DEST/list.json" 2> "$DEST/list.err"
# runnable python implementations of cnn, as "framework[:backend]"
mapfile -t IMPLS < <("$PY" - "$DEST/list.json" <<'EOF'
import json, sys
rows = json.load(open(sys.argv[1]))
order = {"pytorch": 0, "jax": 1, "keras": 2}
gpu_paths = {("pytorch", ""), ("jax", ""), ("keras", "jax"), ("keras", "torch")}  # CUDA builds exist on the H100
ok = [r for r in rows if r["lang"] == "python" and r["model"] == "cnn" and r["runnable"] == "yes"
      and (r["framework"], r["backend"]) in gpu_paths]
for r in sorted(ok, key=lambda r: (order.get(r["framework"], 9), r["backend"])):
    print(r["framework"] + (":" + r["backend"] if r["backend"] else ""))
EOF
)
echo "implementations: ${IMPLS[*]}" | tee "$DEST/plan.txt"

source bench/gpu_runs.sh  # run, summarize

impl_args() {  # framework[:backend] -> harness options
  local fw=${1%%:*} be=${1#*:}
  if [[ "$1" == *:* ]]; then echo "--framework $fw --backend $be"; else echo "--framework $fw"; fi
}

for precision in bf16 fp32; do
  for impl in "${IMPLS[@]}"; do
    run "resnet50-${impl/:/-}-$precision" 150 $(impl_args "$impl") --model resnet50 "${RESNET[@]}" \
      --precision "$precision"
  done
done
for precision in bf16 fp32; do
  for impl in "${IMPLS[@]}"; do
    run "cnn-${impl/:/-}-$precision" 90 $(impl_args "$impl") --model cnn "${CNN[@]}" --precision "$precision"
  done
done
# Last, if time is left: PyTorch's opt-in torch.compile, and fp16 with a GradScaler (the published
# H100 figures are fp16).
run "resnet50-pytorch-bf16-compile" 150 --framework pytorch --model resnet50 "${RESNET[@]}" --precision bf16 --compile
[[ "$DEVICE" == cuda ]] && run "resnet50-pytorch-fp16" 120 --framework pytorch --model resnet50 "${RESNET[@]}" --precision fp16

summarize
echo "gpu_check: $(( $(date +%s) - START )) s; results in $DEST"
