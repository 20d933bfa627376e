# Shared by bench/gpu_check.sh and bench/gpu_setup_check.sh (sourced, not run): one harness run per
# call, its JSON record and stderr under $DEST/stdout/, and the summary table of those runs.
# Needs PY, DEVICE, DEST and START set; BUDGET_S (seconds from START) is optional.

run() {  # run LABEL TIMEOUT ARGS...: skipped once fewer than 30 s of the budget are left
  local label=$1 limit=$2; shift 2
  local left=$(( ${BUDGET_S:-86400} - ($(date +%s) - START) ))
  if (( left < 30 )); then echo "skipped (budget): $label" | tee -a "$DEST/skipped.txt"; return; fi
  (( limit > left )) && limit=$left
  echo "== $label (timeout ${limit}s, ${left}s left)"
  timeout $(( limit + 15 )) "$PY" -m harness --device "$DEVICE" --data synthetic --quiet --format json \
    --out "$DEST" --timeout "$limit" "$@" > "$DEST/stdout/$label.json" 2> "$DEST/stdout/$label.err"
  echo "   exit $?"
}

summarize() {  # one line per run: status, steady images/s, first epoch, peak GPU memory, error or interconnect
  "$PY" - "$DEST" <<'PYEOF' | tee "$DEST/summary.txt"
import glob, json, os, sys
print(f"{'run':<34} {'status':<7} {'img/s':>9} {'first_s':>8} {'peak_MiB':>9}  error / interconnect")
for f in sorted(glob.glob(os.path.join(sys.argv[1], "stdout", "*.json"))):
    name = os.path.basename(f)[:-5]
    try:
        r = json.load(open(f))
    except (OSError, ValueError):
        err = open(f[:-5] + ".err", errors="replace").read().strip().splitlines() or ["no output"]
        print(f"{name:<34} {'none':<7} {'':>9} {'':>8} {'':>9}  {err[-1][:80]}"); continue
    t, m = r.get("timing", {}), r.get("memory", {})
    link = (r.get("environment", {}).get("interconnect") or {}).get("summary") or ""
    print(f"{name:<34} {r['status']:<7} {t.get('steady_examples_per_s') or 0:>9.0f} {t.get('first_epoch_s') or 0:>8.1f} "
          f"{(m.get('peak_device_bytes') or 0) / 2**20:>9.0f}  {(r.get('error') or link)[:80]}")
PYEOF
}
