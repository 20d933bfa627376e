"""What the R binding costs, taken apart in one process: the same Keras model, backend and data,
trained from Python and from R, each the ways a user of that language trains.

    .venv/bin/python bench/r_binding_cost.py [--model cnn] [--backend tensorflow] [--samples 2048] [--rounds 10]
        [--paths python:fit,python:train_on_batch,r:fit,r:train_on_batch,r:fit:r-arrays]

Paths (every one trains one epoch per round under the harness's own clock, harness.benchmark.
timed_epochs; the paths interleaved, so machine drift hits them alike; round 0 warms each up):
  python:fit             the harness's Python Keras trainer (python_models/keras): model.fit per epoch
  python:train_on_batch  a Python loop calling model.train_on_batch once per step: the control for
                         R's loop (what train_on_batch costs without R)
  r:fit                  the R model (r_models/keras) as the harness runs it: model$fit per epoch
  r:train_on_batch       --variant loop=train_on_batch: an R loop, one train_on_batch call per step
  r:fit:r-arrays         --variant data=r-arrays: plain R arrays (as after readRDS) that reticulate
                         converts at every fit
Both Python paths and all R paths start from the same initial weights (the Python model's,
loaded into every other), so every path trains the same model on the same batches.

Derived, per round, then over rounds (mean with its 95 % t interval; ratios on the log scale):
  R / Python (fit)                r:fit over python:fit
  R's crossing, µs per step       (r:train_on_batch - python:train_on_batch) / steps
  train_on_batch's own cost       (python:train_on_batch - python:fit) / steps
  R arrays, inside the clock      r:fit:r-arrays - r:fit, s per epoch
One-off: R's start and reticulate's attach inside this process, and the hand-off of the training
arrays to R: the numpy objects as they are (fit_data) vs converted into R arrays (outside the clock).

Writes bench/results/r_binding_cost-<model>-<backend>-<UTC time>.json and prints the table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness import data, environment  # noqa: E402
from harness.benchmark import timed_epochs  # noqa: E402
from harness.data.cache import open_prepared  # noqa: E402
from harness.model_input import to_layout  # noqa: E402
from harness.protocol import RunOptions  # noqa: E402
from harness.registry import select  # noqa: E402
from harness.specs import get_spec  # noqa: E402

PATHS = ("python:fit", "python:train_on_batch", "r:fit", "r:train_on_batch", "r:fit:r-arrays")
VARIANTS = {"r:fit": {}, "r:train_on_batch": {"loop": "train_on_batch"}, "r:fit:r-arrays": {"data": "r-arrays"}}


class PythonStepLoop:
    """What a Python user writes instead of fit: one model.train_on_batch call per step, the loss
    taken back as a float. Compiled like the R loop's model: the spec's optimiser and loss, no metric."""

    def __init__(self, trainer, spec):
        import keras

        from python_models.keras.optimizers import make_optimizer

        self.trainer, self.model = trainer, trainer.model
        self.model.compile(optimizer=make_optimizer(spec.optimizer, 1),
                           loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile="auto")
        self.info = {"fast_path": {"loop": "a Python loop calling model.train_on_batch once per step"}}

    def set_weights(self, weights):
        self.trainer.set_weights(weights)

    def fit_data(self, x, y):
        self.x, self.y = np.asarray(x), np.asarray(y)

    def barrier(self):
        pass

    def train_epoch(self, batches):
        losses = []
        for idx in batches.index:
            out = self.model.train_on_batch(self.x[idx], self.y[idx])  # the step's loss (metrics reset per call)
            losses.append(float(out[0] if isinstance(out, list) else out))
        return np.array(losses)


def interval(values, level: float = 0.95) -> dict:
    """Mean of per-round values with its t interval."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    if len(x) < 2 or np.ptp(x) == 0:
        return {"mean": float(x.mean()) if len(x) else None, "low": None, "high": None, "n": len(x)}
    ci = stats.ttest_1samp(x, 0.0).confidence_interval(level)
    return {"mean": float(x.mean()), "low": float(ci.low), "high": float(ci.high), "n": len(x)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="cnn", choices=("cnn", "resnet50", "rnn"))
    p.add_argument("--backend", default="tensorflow", choices=("tensorflow", "jax", "torch"))
    p.add_argument("--samples", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=None, help="default: the spec's (64)")
    p.add_argument("--rounds", type=int, default=10, help="timed epochs per path, after one warm-up each")
    p.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated, from {', '.join(PATHS)}")
    p.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = p.parse_args()
    paths = [s.strip() for s in args.paths.split(",") if s.strip()]
    bad = set(paths) - set(PATHS)
    if bad:
        p.error(f"--paths {', '.join(sorted(bad))}: choices are {', '.join(PATHS)}")
    os.environ["KERAS_BACKEND"] = args.backend  # before Keras is imported, by either language

    from harness.bindings import geometric_interval, ratio_interval
    from harness.runtimes import python as py_runtime
    from harness.runtimes import r as r_runtime

    spec = get_spec(args.model)
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
    versions = py_runtime.import_framework(py_impl, RunOptions(seed=0, backend=args.backend))
    python_import_s = time.monotonic() - t
    t = time.monotonic()
    versions |= r_runtime.import_framework(r_impl, RunOptions(seed=0, backend=args.backend))  # Keras already imported
    r_import_s = time.monotonic() - t

    trainers = {}
    reference = py_runtime.build(py_impl, spec, RunOptions(seed=0, backend=args.backend))
    weights = reference.get_weights()  # every path starts from these
    for path in paths:
        if path == "python:fit":
            trainers[path] = reference
        elif path == "python:train_on_batch":
            trainers[path] = PythonStepLoop(py_runtime.build(py_impl, spec, RunOptions(seed=0, backend=args.backend)),
                                            spec)
        else:
            trainers[path] = r_runtime.build(r_impl, spec, RunOptions(seed=0, backend=args.backend,
                                                                      extra={"variant": VARIANTS[path]}))
        if path != "python:fit":
            trainers[path].set_weights(weights)

    x = to_layout(arrays["x_train"], reference.info.get("layout", "NCHW"))
    y = arrays["y_train"]
    handoff = {}
    for path, trainer in trainers.items():
        t = time.monotonic()
        trainer.fit_data(x, y)
        handoff[path] = time.monotonic() - t

    n, bs = len(x), args.batch_size or spec.batch_size
    steps = n // bs
    seconds = {path: [] for path in trainers}
    losses = {}
    for r in range(args.rounds + 1):  # round 0 warms every path up (tracing, compilation) and is not counted
        line = []
        for path, trainer in trainers.items():
            row = timed_epochs(trainer, n, bs, seed=r, count=1)[0]  # every path: the same batches this round
            if r:
                seconds[path].append(row["seconds"])
            losses[path] = row["loss"]
            line.append(f"{path} {row['seconds']:.3f}")
        print(f"round {r}: " + "  ".join(line), file=sys.stderr)

    def per_round(a, b, scale=1.0):
        return [(x1 - x2) * scale for x1, x2 in zip(seconds[a], seconds[b])]

    summary = {path: dict(zip(("s_per_epoch", "low", "high"), geometric_interval(seconds[path]))) for path in seconds}
    derived = {}
    if {"r:fit", "python:fit"} <= set(seconds):
        rounds = range(len(seconds["r:fit"]))
        derived["r_over_python_fit"] = dict(zip(("ratio", "low", "high", "method"), ratio_interval(
            dict(zip(rounds, seconds["r:fit"])), dict(zip(rounds, seconds["python:fit"])))))
    if {"r:train_on_batch", "python:train_on_batch"} <= set(seconds):
        derived["r_crossing_us_per_step"] = interval(per_round("r:train_on_batch", "python:train_on_batch", 1e6 / steps))
    if {"python:train_on_batch", "python:fit"} <= set(seconds):
        derived["train_on_batch_us_per_step"] = interval(per_round("python:train_on_batch", "python:fit", 1e6 / steps))
    if {"r:train_on_batch", "r:fit"} <= set(seconds):
        derived["r_loop_over_r_fit_us_per_step"] = interval(per_round("r:train_on_batch", "r:fit", 1e6 / steps))
    if {"r:fit:r-arrays", "r:fit"} <= set(seconds):
        derived["r_arrays_s_per_epoch"] = interval(per_round("r:fit:r-arrays", "r:fit"))

    session = next((t.info["r"] for p_, t in trainers.items() if p_.startswith("r:")), {})
    one_off = {"python_keras_import_s": python_import_s, "r_import_framework_s": r_import_s,
               "r_start_s": session.get("r_start_s"), "reticulate_attach_s": session.get("reticulate_s"),
               "handoff_s": handoff,  # fit_data as called here (R's includes the runtime's two heap probes)
               "r_handoff": {path: t.info["r"].get("handoff") for path, t in trainers.items() if path.startswith("r:")}}
    result = {
        "benchmark": "r_binding_cost", "model": args.model, "backend": args.backend, "samples": n, "batch_size": bs,
        "steps_per_epoch": steps, "rounds": args.rounds, "paths": list(trainers), "seconds": seconds,
        "summary": summary, "derived": derived, "one_off": one_off, "final_losses": losses,
        "loops": {path: t.info.get("fast_path", {}).get("loop") for path, t in trainers.items()},
        "versions": versions, "environment": environment.collect(), "command": "python " + " ".join(sys.argv),
    }
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    out = Path(args.out) / f"r_binding_cost-{args.model}-{args.backend}-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str))

    def fmt(d, unit=""):
        if d.get("low") is None:
            return f"{d.get('mean', d.get('ratio'))}{unit}"
        centre = d.get("mean", d.get("ratio"))
        return f"{centre:.4g}{unit} ({d['low']:.4g}-{d['high']:.4g})"

    print(f"{args.model} on keras[{args.backend}], {n} examples, batch {bs} ({steps} steps), {args.rounds} rounds:")
    for path, s in summary.items():
        print(f"  {path:<24} {s['s_per_epoch']:.3f} s/epoch ({s['low']:.3f}-{s['high']:.3f}), "
              f"final loss {losses[path]:.4f}")
    for name, d in derived.items():
        print(f"  {name:<34} {fmt(d)}")
    inside = {path: (h or {}).get("seconds") for path, h in one_off["r_handoff"].items()}  # R's fit_data alone
    shown = {path: inside.get(path, seconds) for path, seconds in handoff.items()}
    print(f"  one-off: R start {one_off['r_start_s']:.2f} s, reticulate attach {one_off['reticulate_attach_s']:.2f} s, "
          f"hand-off (fit_data) {', '.join(f'{k} {v * 1e3:.1f} ms' for k, v in shown.items())}")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # as the worker does: skip interpreter teardown (TensorFlow's threads)
