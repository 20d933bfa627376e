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

run() {  # run LABEL TIMEOUT ARGS...
  local label=$1 limit=$2; shift 2
  echo "== $label (timeout ${limit}s, $(( $(date +%s) - START ))s in)"
  timeout $(( limit + 15 )) "$PY" -m harness --device "$DEVICE" --data synthetic --quiet --format json \
    --out "$DEST" --timeout "$limit" "$@" > "$DEST/stdout/$label.json" 2> "$DEST/stdout/$label.err"
  echo "   exit $?"
}
run resnet50-jax-bf16 120 --framework jax --model resnet50 "${RESNET[@]}" --precision bf16
run cnn-jax-fp32 90 --framework jax --model cnn "${CNN[@]}"
run cnn-keras-torch-fp32 120 --framework keras --backend torch --model cnn "${CNN[@]}"

"$PY" - "$DEST" <<'EOF' | tee "$DEST/summary.txt"
import glob, json, os, sys
print(f"{'run':<24} {'status':<7} {'img/s':>9} {'first_s':>8} {'peak_MiB':>9}  interconnect / error")
for f in sorted(glob.glob(os.path.join(sys.argv[1], "stdout", "*.json"))):
    name = os.path.basename(f)[:-5]
    try:
        r = json.load(open(f))
    except (OSError, ValueError):
        print(f"{name:<24} none"); continue
    t, m = r.get("timing", {}), r.get("memory", {})
    link = (r["environment"].get("interconnect") or {}).get("summary")
    print(f"{name:<24} {r['status']:<7} {t.get('steady_examples_per_s') or 0:>9.0f} {t.get('first_epoch_s') or 0:>8.1f} "
          f"{(m.get('peak_device_bytes') or 0) / 2**20:>9.0f}  {r.get('error') or link}")
EOF
echo "== keras_torch_layout ($(( $(date +%s) - START ))s in)"
"$PY" bench/keras_torch_layout.py --device "$DEVICE" "${LAYOUT[@]}" 2> "$DEST/stdout/layout.err" | tee "$DEST/layout.txt"
echo "gpu_setup_check: $(( $(date +%s) - START )) s; results in $DEST"
