"""The cost of the R binding: the same model, Keras backend and data, written in R vs in Python.

Both implementations (r_models/keras/<model>.R through rpy2 and reticulate, and
python_models/keras/<model>.py) run in this one process, on the same prepared arrays, under the
harness's own clock (harness.benchmark.timed_epochs), epochs interleaved (Python, R, Python, R, ...)
so that machine drift hits both alike. Both train with the same loop: model.fit per epoch over
the harness-ordered batches. Also measured, once: R's start-up inside this process (rpy2 starting
R, then reticulate attaching to this Python), the hand-off of the training arrays to R
(fit_data), and for scale what converting those arrays into R doubles would have cost instead.

    .venv/bin/python bench/r_binding_cost.py [--model cnn] [--backend tensorflow] [--samples 2048] [--rounds 5]

Writes bench/results/r_binding_cost-<model>-<backend>-<UTC time>.json and prints the ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness import data, environment# noqa: E402
from harness.data.cache import open_prepared  # noqa: E402
from harness.protocol import RunOptions  # noqa: E402
from harness.registry import select  # noqa: E402
from harness.specs import get_spec  # noqa: E402
from harness.benchmark import timed_epochs  # noqa: E402
from harness.model_input import to_layout  # noqa: E402


def conversion_seconds(x) -> float:
    """What the hand-off would cost as R doubles: reticulate's py_to_r of the array, timed in R."""
    import rpy2.robjects as ro

    from harness.runtimes import r

    bridge = r._bridge()
    bridge.probe = x
    seconds = ro.r(f'function() {{ x <- reticulate::import("{r.BRIDGE}", convert = FALSE)$probe; '
                   'system.time(a <- reticulate::py_to_r(x))[["elapsed"]] }')()[0]
    del bridge.probe
    ro.r("invisible(gc())")
    return float(seconds)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="cnn", choices=("cnn", "resnet50", "rnn"))
    p.add_argument("--backend", default="tensorflow", choices=("tensorflow", "jax", "torch"))
    p.add_argument("--samples", type=int, default=2048)
    p.add_argument("--rounds", type=int, default=5, help="timed epochs per language, after one warm-up each")
    p.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = p.parse_args()
    os.environ["KERAS_BACKEND"] = args.backend  # before Keras is imported, by either language

    from harness.runtimes import python as py_runtime
    from harness.runtimes import r as r_runtime

    spec = get_spec(args.model)
    options = RunOptions(seed=0, backend=args.backend)
    prepared = data.prepare("synthetic", spec, args.samples)
    arrays = open_prepared(prepared.folder, args.samples)
    (py_impl,) = select("python", "keras", args.backend, args.model)
    (r_impl,) = select("r", "keras", args.backend, args.model)
    for impl in (py_impl, r_impl):
        reason = r_runtime.availability(impl) if impl.lang == "r" else py_runtime.availability(impl)
        if reason:
            print(f"{impl.label} cannot run here: {reason}", file=sys.stderr)
            return 2

    t = time.monotonic()
    versions = py_runtime.import_framework(py_impl, options)
    python_import_s = time.monotonic() - t
    t = time.monotonic()
    versions |= r_runtime.import_framework(r_impl, options)  # R starts; Keras is already imported
    r_import_s = time.monotonic() - t
    trainers = {"python": py_runtime.build(py_impl, spec, options), "r": r_runtime.build(r_impl, spec, options)}

    x = to_layout(arrays["x_train"], trainers["r"].info.get("layout", "NCHW"))
    y = arrays["y_train"]
    handoff = {}
    for lang, trainer in trainers.items():
        t = time.monotonic()
        trainer.fit_data(x, y)
        handoff[lang] = time.monotonic() - t
    as_r_doubles_s = conversion_seconds(x)

    n, bs = len(x), spec.batch_size
    seconds = {"python": [], "r": []}
    for r in range(args.rounds + 1):  # round 0 warms both up (tracing, compilation) and is not counted
        line = []
        for lang, trainer in trainers.items():
            row = timed_epochs(trainer, n, bs, seed=r, count=1)[0]
            if r:
                seconds[lang].append(row["seconds"])
            line.append(f"{lang} {row['seconds']:.3f} s")
        print(f"round {r}: " + "  ".join(line), file=sys.stderr)

    ratios = [a / b for a, b in zip(seconds["r"], seconds["python"])]
    session = trainers["r"].info["r"]
    result = {
        "benchmark": "r_binding_cost", "model": args.model, "backend": args.backend, "samples": n,
        "batch_size": bs, "rounds": args.rounds, "python_s": seconds["python"], "r_s": seconds["r"],
        "median_python_s": statistics.median(seconds["python"]), "median_r_s": statistics.median(seconds["r"]),
        "ratio_of_medians": statistics.median(seconds["r"]) / statistics.median(seconds["python"]),
        "median_paired_ratio": statistics.median(ratios),
        "one_off": {
            "python_keras_import_s": python_import_s,
            "r_start_s": session["r_start_s"],  # rpy2 loads libR and R starts, inside this process
            "reticulate_attach_s": session["reticulate_s"],  # library(reticulate), py_config on this Python
            "r_import_framework_s": r_import_s,
            # fit_data inside R (storing the numpy objects); the R side's wrapper adds two gc() probes
            "handoff_r_s": session["handoff"]["seconds"], "handoff_r_with_probes_s": handoff["r"],
            "handoff_python_s": handoff["python"],
            "handoff_same_object": session["handoff"]["same_object"],
            "handoff_r_heap_growth_bytes": session["handoff"]["r_heap_growth_bytes"],
            "as_r_doubles_s": as_r_doubles_s, "array_bytes": session["handoff"]["array_bytes"],
        },
        "loops": {lang: t.info.get("fast_path", {}).get("loop") for lang, t in trainers.items()},
        "versions": versions, "environment": environment.collect(), "command": "python " + " ".join(sys.argv),
    }
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    out = Path(args.out) / f"r_binding_cost-{args.model}-{args.backend}-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str))
    o = result["one_off"]
    print(f"{args.model} on keras[{args.backend}], {n} samples: Python {result['median_python_s']:.3f} s/epoch, "
          f"R {result['median_r_s']:.3f} s/epoch, ratio R/Python {result['ratio_of_medians']:.3f} "
          f"(paired median {result['median_paired_ratio']:.3f})\n"
          f"one-off: R start {o['r_start_s']:.2f} s, reticulate attach {o['reticulate_attach_s']:.2f} s, "
          f"hand-off {o['handoff_r_s'] * 1e3:.1f} ms (as R doubles it would take {o['as_r_doubles_s']:.2f} s) -> {out}")
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # as the worker does: skip interpreter teardown (TensorFlow's threads)
