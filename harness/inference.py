"""The inference task (issue 14): the trained model, exported by its own framework, timed natively
and on the deployment runtimes, with proof that the deployed model computes what the trained one did.

`python -m harness --task infer ...` or `python -m harness infer ...`. Per implementation:

  1. prepare (a worker in the framework's environment, mode "infer-prepare"): the weights, trained
     briefly on the request's data (real BatchNorm statistics) or loaded from --weights; the
     canonical weights file and its digest; the framework's own eval logits of the offline
     examples; one export per format the asked runtimes read (harness.exports: cached per
     implementation and weights digest, verified before use).
  2. the reference: PyTorch's eval logits of the same examples on the same canonical weights
     (a "predict" worker), unless the implementation is PyTorch itself.
  3. one fresh worker per (runtime, repeat), mode "infer": `native` is the framework's own eval
     path (Trainer.infer; --compile gives its compiled form) in its own environment; any other
     runtime (harness.deploy) compiles the export in the main environment. Every worker gets the
     same threads (--threads, default the cores this process may use: OpenMP/MKL/OpenBLAS/TF/XLA
     variables and the CPU affinity). One untimed warm-up pass over the N offline examples at
     batch B (its logits are the ones compared and scored), --passes timed passes (offline
     throughput; each pass is one `epochs` row of the record, so the store, stats and compare read
     them as they read training epochs), then --queries single-example queries one after the
     other (single-stream latency, p50/p90/p99), as MLPerf Inference's Offline and SingleStream
     scenarios do. Compile, export and training times are recorded apart.

Each (implementation, runtime, repeat) is one record (task "infer") in the same store. Its logits
must match the framework's own and PyTorch's within check 5's bound for trained weights (check
2's fp32 bound x 10: trained BatchNorm statistics scale float32 rounding up); a deployed model
that does not is a failed record saying by how much. Reduced precision is judged by accuracy:
int8 by MLPerf's rule (at least 99 % of the fp32 model's test accuracy).
"""
from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

NATIVE = "native"
TASK = "infer"
OFFLINE_BATCH = {"resnet50": 32}  # the 2018 protocol's inference batch; other models: the spec's batch
INFER_SAMPLES = 1024  # training examples of the brief training (default of --samples under --task infer)
INFER_EPOCHS = 1
INFER_EXAMPLES = 1024  # offline examples N by default (at most the test set), in full batches
QUERIES = 300  # single-stream queries (MLPerf SingleStream: latency percentiles over many queries)
PASSES = 3  # timed offline passes after the warm-up pass
LATENCY_WARMUP = 10  # untimed batch-1 queries first (a batch-1 graph may compile on its first call)
CALIBRATION = 256  # int8 calibration examples, drawn from the training set only
LATENCY_PERCENTILES = (50, 90, 99)
EXPORTS_VAR = "DL_ROSETTA_EXPORTS"  # where exports and compiled models are cached (default: the data cache)


def cache_root(data_dir=None) -> Path:
    """The cache of exports (harness.exports) and the runtimes' compiled models: $DL_ROSETTA_EXPORTS,
    else the data cache (--data-dir, $DL_ROSETTA_DATA, ~/.cache/dl-rosetta)."""
    from harness.data import cache

    override = os.environ.get(EXPORTS_VAR)
    return Path(override).expanduser() if override else cache.data_dir(data_dir)


# --------------------------------------------------------------------------- the deployment runtimes
def deploy_api():
    """harness.deploy (the runtimes package), or the ONNX Runtime stand-in until it is merged."""
    try:
        import harness.deploy as deploy
    except ImportError:
        from harness import inference_ort as deploy
    return deploy


def runtime_names() -> tuple[str, ...]:
    return (NATIVE, *deploy_api().RUNTIMES)


def runtime_formats(name: str) -> tuple[str, ...]:
    return () if name == NATIVE else tuple(deploy_api().RUNTIMES[name].formats)


def runtime_display(name: str) -> str:
    return "native" if name == NATIVE else deploy_api().RUNTIMES[name].display


def runtime_precisions(name: str, device: str) -> tuple[str, ...]:
    if name == NATIVE:
        return ("fp32", "bf16", "fp16") if device == "cuda" else ("fp32", "bf16")
    rt = deploy_api().RUNTIMES[name]
    return tuple(getattr(rt, "cuda_precisions", ()) if device == "cuda" else rt.precisions)


def export_for(impl, runtime: str):
    """The implementation's export a runtime reads (registry Export), or None."""
    formats = runtime_formats(runtime)
    return next((e for e in impl.exports if e.format in formats), None)


def export_problem(impl, export) -> str | None:
    """Why the exporter cannot run here (a module missing in the framework's environment), or None."""
    from harness.interpreters import missing_modules

    missing = missing_modules(impl.framework.env, export.needs) if export.needs else []
    if missing is None:
        return f"the {impl.framework.env} environment is missing: {impl.framework.install}"
    if missing:
        return f"{export.exporter} needs {', '.join(missing)} in the {impl.framework.env} environment: {impl.framework.install}"
    return None


def thread_env(threads: int) -> dict:
    """The variables every framework and runtime reads for its compute threads."""
    n = str(threads)
    return {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n, "TF_NUM_INTRAOP_THREADS": n,
            "TF_NUM_INTEROP_THREADS": "1", "MXNET_CPU_WORKER_NTHREADS": n,
            "XLA_FLAGS": f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} "
                         f"intra_op_parallelism_threads={n}"}


def available_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


@contextlib.contextmanager
def pinned(threads: int):
    """Start workers on the first `threads` CPUs this process may use (children inherit the
    affinity): XLA and oneDNN size their pools from it, whatever the variables say."""
    cpus = available_cpus()
    if not hasattr(os, "sched_setaffinity") or threads >= len(cpus):
        yield cpus
        return
    os.sched_setaffinity(0, cpus[:threads])
    try:
        yield cpus[:threads]
    finally:
        os.sched_setaffinity(0, cpus)


# --------------------------------------------------------------------------- worker side
def _offline_inputs(job: dict, layout: str, dtype: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(x, y): the N offline examples in the layout (and dtype) the model takes, and their labels."""
    from harness.data.cache import open_prepared
    from harness.model_input import model_input
    from harness.protocol import RunOptions

    data = open_prepared(job["data"]["folder"], job["data"].get("samples"))
    n = job["examples"]
    options = RunOptions(image_size=job["image_size"])
    x = model_input(job["model"], options, np.asarray(data["x_test"][:n]), layout)
    if dtype is not None and x.dtype != np.dtype(dtype):
        x = x.astype(dtype)
    return np.ascontiguousarray(x), np.asarray(data["y_test"][:n])


def _batched(run, x: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([np.asarray(run(x[i:i + batch]), np.float32) for i in range(0, len(x), batch)])


def run_prepare(job: dict, opened, events) -> dict:
    """Weights (trained briefly or loaded), their digest, the framework's own eval logits of the
    offline examples, and the exports the runtimes need."""
    from harness import exports
    from harness.benchmark import timed_epochs
    from harness.canonical import load_weights, save_logits, save_weights
    from harness.data.cache import open_prepared
    from harness.model_input import model_input

    impl, spec, options, trainer = opened.impl, opened.spec, opened.options, opened.trainer
    work = Path(job["work"])
    layout = trainer.info.get("layout", "NCHW")
    timing = dict(opened.timing)
    trained = None
    if job.get("weights"):
        trainer.set_weights(load_weights(job["weights"]))
    else:
        if opened.param_count != spec.param_count:
            raise ValueError(f"{impl.label} builds {opened.param_count:,} trainable parameters; "
                             f"the {spec.name} spec has {spec.param_count:,}")
        data = open_prepared(job["data"]["folder"], job["data"].get("samples"))
        events.send("phase", name="train")
        x_train = model_input(impl.model, options, data["x_train"], layout)
        trainer.fit_data(x_train, data["y_train"])
        t = time.monotonic()
        epochs = timed_epochs(trainer, len(x_train), spec.batch_size, options.seed, job["epochs"])
        timing["train_s"] = time.monotonic() - t
        trained = {"epochs": len(epochs), "examples": int(len(x_train)), "final_loss": epochs[-1]["loss"]}
    weights = trainer.get_weights()
    digest = exports.weights_digest(weights)
    save_weights(work / "weights.npz", weights)

    events.send("phase", name="eval")
    x, y = _offline_inputs(job, layout)
    t = time.monotonic()
    logits = np.asarray(trainer.predict(x), np.float32)
    timing["eval_s"] = time.monotonic() - t
    save_logits(work / "own_logits.npy", logits)
    made, failed = [], {}
    for fmt in job["formats"]:
        events.send("phase", name=f"export {fmt}")
        batches = [job["batch"]] + ([1] if job.get("latency") else [])
        try:
            first = exports.exported(trainer, impl, fmt, x[:job["batch"]], digest, Path(job["cache"]),
                                     opened.versions, options.image_size)
            made.append(first)
            if not first["dynamic_batch"]:  # a static-shape file per batch size
                for b in batches[1:]:
                    made.append(exports.exported(trainer, impl, fmt, x[:b], digest, Path(job["cache"]),
                                                 opened.versions, options.image_size))
        except Exception as e:  # noqa: BLE001 - the exporter's own message becomes the failed rows' reason
            failed[fmt] = f"{type(e).__name__}: {e}".strip()
            print(f"export {fmt} failed: {failed[fmt]}", file=sys.stderr)
    return {"timing": timing, "versions": opened.versions, "info": trainer.info, "layout": layout,
            "param_count": opened.param_count, "weights_sha256": digest, "trained": trained,
            "accuracy": float((logits.argmax(-1) == y).mean()), "exports": made, "export_errors": failed}


class _Native:
    """The framework's own eval path (Trainer.infer) on the canonical weights."""

    def __init__(self, opened, job):
        from harness.canonical import load_weights

        self.trainer = opened.trainer
        self.trainer.set_weights(load_weights(job["weights"]))
        self.layout = self.trainer.info.get("layout", "NCHW")
        self.dtype = None
        self.info = {"runtime": NATIVE, "framework": opened.versions, "compile": opened.options.compile,
                     "precision": opened.options.precision, "fast_path": self.trainer.info.get("fast_path")}
        self.compile_s = 0.0

    def runner(self, batch: int):
        return self.trainer.infer


class _Deployed:
    """A deployment runtime compiling the export (one compiled model per static batch size)."""

    def __init__(self, job):
        from harness import exports

        deploy = deploy_api()
        self.name, self.module = job["runtime"], deploy.load(job["runtime"])
        self.files = {m["batch"] if not m["dynamic_batch"] else None: m for m in job["exports"]}
        for meta in job["exports"]:
            exports.verify(meta)
        first = job["exports"][0]
        self.layout, self.dtype = first["layout"], (first.get("input") or {}).get("dtype")
        self.job, self.deploy, self.compiled, self.compile_s, self.info = job, deploy, {}, 0.0, {}
        self.calibration = None
        if job["precision"] == "int8":
            self.calibration = self._calibration()

    def _calibration(self):
        from harness.data.cache import open_prepared
        from harness.model_input import model_input
        from harness.protocol import RunOptions

        data = open_prepared(self.job["data"]["folder"], self.job["data"].get("samples"))
        x_train = data["x_train"]
        pick = getattr(self.deploy, "calibration_examples", None)
        n = min(CALIBRATION, len(x_train))
        x = pick(np.asarray(x_train), n, self.job["seed"]) if pick else np.asarray(x_train[:n])
        x = model_input(self.job["model"], RunOptions(image_size=self.job["image_size"]), x, self.layout)
        return x.astype(self.dtype) if self.dtype else x

    def options(self, held_out):
        fields = getattr(self.deploy.DeployOptions, "__dataclass_fields__", {})
        wanted = {"threads": self.job["threads"], "precision": self.job["precision"], "device": self.job["device"],
                  "calibration": self.calibration, "cache_dir": Path(self.job["cache"]) / "deploy",
                  "held_out": held_out}
        return self.deploy.DeployOptions(**{k: v for k, v in wanted.items() if k in fields})

    def runner(self, batch: int, held_out=None, example=None):
        meta = self.files.get(None) or self.files.get(batch)
        if meta is None:
            raise ValueError(f"no export for batch {batch}: the exporter writes static shapes "
                             f"({sorted(b for b in self.files if b)})")
        key = None if meta["dynamic_batch"] else batch  # a dynamic-batch file is compiled once
        if key not in self.compiled:
            t = time.monotonic()
            compiled = self.module.compile(meta["file"], meta["format"], example, self.options(held_out))
            self.compile_s += time.monotonic() - t
            self.compiled[key] = compiled
            if not self.info:  # the offline batch's compile describes the run
                self.info = dict(getattr(compiled, "info", {}) or {})
        return self.compiled[key].run


def _percentiles(ms: list[float]) -> dict:
    a = np.asarray(ms)
    out = {f"p{p}_ms": float(np.percentile(a, p)) for p in LATENCY_PERCENTILES}
    return {**out, "mean_ms": float(a.mean()), "min_ms": float(a.min()), "max_ms": float(a.max()), "queries": len(ms)}


def run_infer(job: dict, opened, events) -> dict:
    """One runtime's timing of one implementation: warm-up pass (logits kept), timed passes,
    single-stream queries."""
    from harness.benchmark import peak_rss_bytes
    from harness.canonical import save_logits

    timing = dict(opened.timing) if opened is not None else {}
    t = time.monotonic()
    model = _Native(opened, job) if job["runtime"] == NATIVE else _Deployed(job)
    timing["load_s"] = time.monotonic() - t
    x, y = _offline_inputs(job, model.layout, model.dtype)
    batch = job["batch"]
    held_out = x  # the test examples int8 calibration must not contain
    events.send("phase", name="compile")
    run = model.runner(batch, held_out, x[:batch]) if isinstance(model, _Deployed) else model.runner(batch)

    events.send("phase", name="warm-up")
    t = time.monotonic()
    logits = _batched(run, x, batch)  # the untimed warm-up pass: its logits are compared and scored
    warmup_s = time.monotonic() - t
    save_logits(Path(job["work"]) / "logits.npy", logits)

    passes = []
    for p in range(job["passes"]):
        events.send("phase", name="epoch", epoch=p + 1, batches=len(x) // batch)
        t = time.monotonic()
        for i in range(0, len(x), batch):
            np.asarray(run(x[i:i + batch]))  # a host array: the device work is done, copies included
        seconds = time.monotonic() - t
        passes.append({"epoch": p + 1, "seconds": seconds, "steps": len(x) // batch, "examples": len(x),
                       "examples_per_s": len(x) / seconds})
        events.send("epoch", **passes[-1])

    latency = None
    if job["queries"]:
        events.send("phase", name="latency")
        one = model.runner(1, held_out, x[:1]) if isinstance(model, _Deployed) else model.runner(1)
        for q in range(LATENCY_WARMUP):
            np.asarray(one(x[q % len(x):q % len(x) + 1]))
        ms = []
        for q in range(job["queries"]):
            xq = x[q % len(x):q % len(x) + 1]
            t = time.perf_counter()
            np.asarray(one(xq))
            ms.append((time.perf_counter() - t) * 1e3)
        latency = _percentiles(ms)
    timing.update(compile_s=model.compile_s, warmup_s=warmup_s)
    return {"timing": timing, "epochs": [{"epoch": 0, "seconds": warmup_s, "steps": len(x) // batch,
                                          "examples": len(x), "examples_per_s": len(x) / warmup_s}] + passes,
            "latency": latency, "accuracy": float((logits.argmax(-1) == y).mean()),
            "runtime_info": model.info, "layout": model.layout,
            "versions": opened.versions if opened is not None else _runtime_versions(job["runtime"]),
            "memory": {"peak_rss_bytes": peak_rss_bytes()}}


def _runtime_versions(name: str) -> dict:
    from importlib import metadata

    import numpy

    out = {"numpy": numpy.__version__}
    rt = deploy_api().RUNTIMES[name]
    for module in getattr(rt, "needs", ()):
        top = module.split(".")[0]
        for dist in (top, top.replace("_", "-"), {"tvm": "apache-tvm", "ai_edge_litert": "ai-edge-litert",
                                                   "iree": "iree-base-runtime"}.get(top, top)):
            try:
                out[top] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return out


def run_deploy_logits(job: dict, opened, events) -> dict:
    """check --checks deploy: each listed runtime compiles each of its listed exports and writes its
    logits of the listed input; a model a runtime cannot compile or run is that item's error, not the
    worker's. job["runs"]: [{"runtime", "items": [{"id", "export", "input", "out"}]}]."""
    from harness import exports
    from harness.canonical import save_logits

    deploy = deploy_api()
    fields = getattr(deploy.DeployOptions, "__dataclass_fields__", {})
    results, versions = {}, {}
    for run in job["runs"]:
        name = run["runtime"]
        out = results.setdefault(name, {})
        try:
            module = deploy.load(name)
            versions.update(_runtime_versions(name))
        except Exception as e:  # noqa: BLE001
            for item in run["items"]:
                out[item["id"]] = {"ok": False, "error": f"{name} did not load: {type(e).__name__}: {e}"}
            continue
        for item in run["items"]:
            meta = item["export"]
            events.send("phase", name=f"{name} {item['id']}")
            try:
                exports.verify(meta)
                x = np.load(item["input"])
                wanted = {"threads": job["threads"], "precision": "fp32", "device": job["device"],
                          "cache_dir": Path(job["cache"]) / "deploy"}
                t = time.monotonic()
                compiled = module.compile(meta["file"], meta["format"], x,
                                          deploy.DeployOptions(**{k: v for k, v in wanted.items() if k in fields}))
                compile_s = time.monotonic() - t
                save_logits(item["out"], _batched(compiled.run, x, len(x)))
                out[item["id"]] = {"ok": True, "compile_s": compile_s, "info": dict(getattr(compiled, "info", {}) or {})}
            except Exception as e:  # noqa: BLE001 - the runtime's own message, recorded for this pair
                out[item["id"]] = {"ok": False, "error": f"{type(e).__name__}: {e}".strip()[:2000]}
                print(f"{name} {item['id']}: {out[item['id']]['error']}", file=sys.stderr)
    return {"results": results, "versions": versions}


# --------------------------------------------------------------------------- parent side: the request
@dataclass(frozen=True)
class InferRequest:
    """What `--task infer` asks: a RunRequest (selection, setup, data, samples, seed, repeats,
    timeout, out; epochs = the brief training's; batch_size = the offline batch B) and the rest."""

    run: object  # harness.requests.RunRequest
    runtimes: tuple[str, ...] | None = None  # None: native and every runtime that reads the export
    weights: str | None = None
    precision: str = "fp32"  # the runtime's precision (int8 only on a runtime that quantizes)
    threads: int | None = None  # None: the cores this process may use
    queries: int = QUERIES
    passes: int = PASSES
    examples: int | None = None  # offline examples N (default: INFER_EXAMPLES or the test set, in full batches)

    @property
    def thread_count(self) -> int:
        return self.threads or len(available_cpus())

    def batch(self, model: str) -> int:
        from harness.specs import get_spec

        return self.run.batch_size or OFFLINE_BATCH.get(model, get_spec(model).batch_size)

    def epochs(self) -> int:
        return self.run.epochs or INFER_EPOCHS

    def samples(self) -> int:
        """Training examples: the brief training's (and, for synthetic data, what sizes the test set)."""
        return self.run.samples or INFER_SAMPLES


@dataclass
class Pair:
    impl: object
    runtime: str
    export: object = None  # registry Export (None for native)
    skip: str = ""  # why this pair does not run


def parse_runtimes(text: str | None) -> tuple[str, ...] | None:
    if not text:
        return None
    return tuple(dict.fromkeys(r.strip() for r in text.split(",") if r.strip()))


def plan(request: InferRequest, impls) -> list[Pair]:
    """Every (implementation, runtime) pair, each refused (UsageError, before any worker) or
    skipped with its reason where it cannot run."""
    from harness.errors import UsageError, choices_error

    deploy = deploy_api()
    names = runtime_names()
    asked = request.runtimes
    for name in asked or ():
        if name not in names:
            raise choices_error("runtime", name, names)
    for name in asked or ():
        if name != NATIVE:
            reason = deploy.availability(name)
            if reason:
                raise UsageError(f"--runtime {name}: {reason}")
    device = request.run.setup.device
    for name in asked or ():
        offered = runtime_precisions(name, device)
        if request.precision not in offered:
            raise UsageError(f"--precision {request.precision} is not offered by {runtime_display(name)} on {device}; "
                             f"choices for {name}: {', '.join(offered) or 'none'}")
    named = bool(request.run.selection.framework)
    pairs = []
    for impl in impls:
        runtimes = asked or tuple(n for n in names if n == NATIVE or (deploy.availability(n) is None and
                                                                    request.precision in runtime_precisions(n, device)))
        if not asked and request.precision not in runtime_precisions(NATIVE, device):
            runtimes = tuple(n for n in runtimes if n != NATIVE)
        for name in runtimes:
            if name == NATIVE:
                pairs.append(Pair(impl, name))
                continue
            export = export_for(impl, name)
            if export is None:
                why = impl.no_export() or (f"{impl.framework.display} exports {', '.join(e.format for e in impl.exports)}; "
                                           f"{runtime_display(name)} reads {', '.join(runtime_formats(name))}")
                if asked and named and len(asked) == 1:
                    raise UsageError(f"--runtime {name} cannot take {impl.label}: {why}; choices: "
                                     + ", ".join(n for n in names if n == NATIVE or export_for(impl, n)))
                if asked:
                    pairs.append(Pair(impl, name, skip=why))
                continue
            problem = export_problem(impl, export)
            if problem and named and asked:
                raise UsageError(f"{impl.label}: {problem}")
            pairs.append(Pair(impl, name, export, skip=problem or ""))
    return pairs


def check_request(request: InferRequest, impls) -> None:
    """Refusals before any worker: setup, batch, weights file, threads."""
    from harness.errors import UsageError

    setup = request.run.setup
    if setup.gpus != 1 or setup.nodes != 1:
        raise UsageError("--task infer runs on one device: --gpus 1 --nodes 1")
    if request.threads is not None and request.threads > len(available_cpus()):
        raise UsageError(f"--threads {request.threads}: this process may use {len(available_cpus())} cores")
    if request.weights:
        from harness.canonical import load_weights, shapes_of, weight_problems
        from harness.specs import get_spec

        try:
            weights = load_weights(Path(request.weights).expanduser())
        except (OSError, ValueError) as e:
            raise UsageError(f"--weights {request.weights}: not a readable .npz file ({e})") from None
        models = {i.model for i in impls}
        if len(models) != 1:
            raise UsageError(f"--weights holds one model's weights; select one model (--model), not {sorted(models)}")
        spec = get_spec(models.pop())
        problems = weight_problems(spec, shapes_of(weights))
        if problems:
            raise UsageError(f"--weights {request.weights} is not a canonical {spec.name} file: {'; '.join(problems[:5])}")


# --------------------------------------------------------------------------- parent side: running it
def _new_run_id(impl, runtime: str, repeat: int) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    label = "".join(c if c.isalnum() else "-" for c in f"{impl.label}-infer-{runtime}").strip("-")
    return f"{stamp}-{label}-r{repeat}-{uuid.uuid4().hex[:6]}"


def _compare(logits: np.ndarray, ref: np.ndarray | None, model: str, options, trained: bool) -> dict | None:
    """max |logit - reference| and whether it is within the bound (check 2's; x10 for trained weights)."""
    from harness import equivalence

    if ref is None:
        return None
    tol = equivalence.tolerance(model, options)
    f = equivalence.TRANSFER_LOGITS_FACTOR if trained else 1
    if ref.shape != logits.shape:
        return {"max_abs": None, "ok": False, "detail": f"shape {logits.shape}, reference {ref.shape}"}
    dev, score = equivalence._allclose_score(logits, ref, tol.logits_rtol * f, tol.logits_atol * f)
    return {"max_abs": dev, "score": score, "ok": bool(score <= 1), "rtol": tol.logits_rtol * f,
            "atol": tol.logits_atol * f, "argmax_agree": float((logits.argmax(-1) == ref.argmax(-1)).mean())}


def execute(request: InferRequest, pairs: list[Pair], command: str, say=print) -> list[dict]:
    """Run every pair (prepare, reference, the runtimes' repeats); save and return the records."""
    from harness import benchmark, launch

    out = Path(request.run.out)
    cache_dir = cache_root(request.run.data_dir)
    threads = request.thread_count
    env = thread_env(threads)
    records = []
    by_impl: dict = {}
    for p in pairs:
        by_impl.setdefault(p.impl, []).append(p)
    data_request = replace(request.run, samples=request.samples())
    for impl, impl_pairs in by_impl.items():
        runnable = [p for p in impl_pairs if not p.skip]
        for p in impl_pairs:
            if p.skip:
                say(f"skipped {impl.label} on {p.runtime}: {p.skip}")
        if not runnable:
            continue
        prepared = benchmark.prepare(data_request, impl.model)
        n_test = prepared.manifest["arrays"]["x_test"]["shape"][0]
        batch = request.batch(impl.model)
        examples = min(request.examples or INFER_EXAMPLES, n_test) // batch * batch
        if examples == 0:
            raise_usage(f"{impl.label}: {n_test} test examples, fewer than one batch of {batch}; "
                        f"lower --batch-size or raise --samples")
        work = out / "infer" / f"{slug_time()}-{_slug(impl.label)}"
        work.mkdir(parents=True, exist_ok=True)
        base_job = {"model": impl.model, "examples": examples, "batch": batch, "image_size": request.run.setup.image_size,
                    "cache": str(cache_dir), "seed": request.run.seed}
        options = replace(request.run.options(impl), precision="fp32", compile=False)
        formats = sorted({p.export.format for p in runnable if p.export is not None})
        say(f"[infer] {impl.label}: {'weights ' + request.weights if request.weights else f'training {request.epochs()} epoch(s) on {prepared.n_train} examples'}"
            + (f", exporting {', '.join(formats)}" if formats else ""))
        t = time.monotonic()
        with pinned(threads):
            prep = launch.run_worker(impl, options, "infer-prepare", prepared, request.epochs(),
                                     get_batch(impl), request.run.timeout,
                                     extra={**base_job, "work": str(work), "formats": formats,
                                            "weights": str(Path(request.weights).expanduser().resolve())
                                            if request.weights else None,
                                            "epochs": request.epochs(), "latency": request.queries > 0},
                                     log_path=work / "prepare.log", env=env)
        prep_s = time.monotonic() - t
        if prep.status != "ok":
            for p in runnable:
                records.append(_failed_record(request, p, prepared, command, f"prepare: {prep.error}", prep.log,
                                              out, threads, batch, examples))
            continue
        pre = prep.result
        own = np.load(work / "own_logits.npy")
        weights_file = work / "weights.npz"
        ref_logits, ref_note = _reference_logits(impl, weights_file, prepared, base_job, work, request, env, threads)
        trained = pre["trained"] is not None
        for repeat in range(request.run.repeats):
            for p in runnable:
                metas = [m for m in pre["exports"] if p.export is not None and m["format"] == p.export.format]
                if p.export is not None and not metas:
                    why = pre["export_errors"].get(p.export.format, "no export written")
                    records.append(_failed_record(request, p, prepared, command, f"export {p.export.format}: {why}",
                                                  "", out, threads, batch, examples, repeat, pre=pre))
                    continue
                records.append(_run_pair(request, p, prepared, command, out, work, base_job, metas, weights_file,
                                         own, ref_logits, ref_note, pre, threads, env, batch, examples, repeat,
                                         trained, prep_s, say))
    return records


def raise_usage(message: str):
    from harness.errors import UsageError

    raise UsageError(message)


def get_batch(impl) -> int:
    from harness.specs import get_spec

    return get_spec(impl.model).batch_size


def slug_time() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-")


def _reference_logits(impl, weights_file: Path, prepared, base_job: dict, work: Path, request, env, threads):
    """PyTorch's eval logits of the offline examples on these canonical weights (None, reason if it cannot run)."""
    from harness import equivalence, launch, runtimes
    from harness.model_input import upsample
    from harness.data.cache import open_prepared
    from harness.protocol import RunOptions

    ref = equivalence.reference_impl(impl.model)
    if ref == impl:
        return np.load(work / "own_logits.npy"), "this is the reference"
    reason = runtimes.availability(ref)
    if reason:
        return None, f"the reference {ref.label} cannot run here: {reason}"
    data = open_prepared(prepared.folder, prepared.samples)
    x = np.asarray(data["x_test"][:base_job["examples"]])
    if impl.model == "resnet50":  # predict feeds the 32 px input as is: upsample here, as the runtimes saw it
        x = upsample(x, request.run.setup.image_size)
    np.save(work / "reference_input.npy", x)
    with pinned(threads):
        outcome = launch.run_worker(ref, RunOptions(seed=request.run.seed, image_size=request.run.setup.image_size),
                                    "predict", timeout=request.run.timeout, env=env,
                                    extra={"input": str(work / "reference_input.npy"),
                                           "pairs": [{"weights": str(weights_file), "out": str(work / "reference_logits.npy")}]},
                                    log_path=work / "reference.log")
    if outcome.status != "ok":
        return None, f"the reference {ref.label} failed: {outcome.error}"
    return np.load(work / "reference_logits.npy"), f"{ref.label} on the same canonical weights"


def _base_record(request, p: Pair, prepared, command, threads, batch, examples, repeat, runtime_info=None) -> dict:
    from harness import environment

    impl = p.impl
    options = request.run.options(impl)
    return {
        "run_id": _new_run_id(impl, p.runtime, repeat),
        "task": TASK,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "status": "failed", "error": None,
        "impl": {"lang": impl.lang, "framework": impl.name, "backend": impl.backend, "model": impl.model,
                 "label": impl.label, "version": None},
        "runtime": {"name": p.runtime, "display": runtime_display(p.runtime), "precision": request.precision,
                    "threads": threads, **(runtime_info or {})},
        "config": {"data": prepared.name, "n_train": prepared.n_train,
                   "n_test": prepared.manifest["arrays"]["x_test"]["shape"][0], "epochs": request.epochs(),
                   "batch_size": batch, "examples": examples, "queries": request.queries, "passes": request.passes,
                   "threads": threads, "runtime": p.runtime, "repeat": repeat, "timeout_s": request.run.timeout,
                   "weights": request.weights, **replace(options, precision=request.precision).to_dict()},
        "environment": environment.collect(),
        "command": command,
        "plan": None,
    }


def _failed_record(request, p, prepared, command, error, log, out, threads, batch, examples, repeat=0, pre=None):
    from harness import results

    record = _base_record(request, p, prepared, command, threads, batch, examples, repeat)
    record.update(error=error, log_tail=log, epochs=[], timing=(pre or {}).get("timing", {}),
                  versions=(pre or {}).get("versions", {}))
    results.save(record, out)
    return record


def _run_pair(request, p, prepared, command, out, work, base_job, metas, weights_file, own, ref_logits, ref_note,
              pre, threads, env, batch, examples, repeat, trained, prep_s, say) -> dict:
    from harness import launch, results
    from harness.benchmark import timing_summary

    impl = p.impl
    native = p.runtime == NATIVE
    run_dir = work / f"{p.runtime}-r{repeat}"
    run_dir.mkdir(parents=True, exist_ok=True)
    options = replace(request.run.options(impl), precision=request.precision if native else "fp32")
    record = _base_record(request, p, prepared, command, threads, batch, examples, repeat)
    job = {**base_job, "runtime": p.runtime, "weights": str(weights_file), "exports": metas,
           "precision": request.precision, "threads": threads, "device": request.run.setup.device,
           "queries": request.queries, "passes": request.passes, "work": str(run_dir), "bare": not native}
    started = time.monotonic()
    load_before = os.getloadavg()
    with pinned(threads) as cpus:
        outcome = launch.run_worker(impl, options, "infer", prepared, 0, batch, request.run.timeout, extra=job,
                                    log_path=run_dir / "worker.log", env=env,
                                    python_env=None if native else "main")
    wall = time.monotonic() - started
    res = outcome.result or {}
    versions = {**pre.get("versions", {}), **res.get("versions", {})} if native else res.get("versions", {})
    record["impl"]["version"] = (pre.get("versions") or {}).get(impl.name) or \
        (pre.get("versions") or {}).get(impl.framework.modules[0])
    record["runtime"].update(res.get("runtime_info") or {})
    record["runtime"]["cpus"] = cpus
    epochs = res.get("epochs", outcome.epochs)
    record.update({
        "status": outcome.status, "error": outcome.error,
        "timing": {**res.get("timing", {}), **timing_summary(epochs), "wall_s": wall,
                   "train_s": pre["timing"].get("train_s"), "prepare_s": prep_s,
                   "export_s": sum(m["export_s"] for m in metas if m.get("cache") != "hit") if metas else None},
        "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
        "epochs": epochs,
        "inference": {"offline": _offline_summary(epochs, batch), "latency": res.get("latency")},
        "export": _export_record(metas),
        "weights": {"sha256": pre["weights_sha256"], "source": request.weights or "trained", "trained": pre["trained"]},
        "layout": res.get("layout"), "info": pre.get("info", {}), "versions": versions,
        "memory": res.get("memory", {}),
        "data_manifest": prepared.manifest,
    })
    if outcome.status == "ok":
        logits = np.load(run_dir / "logits.npy")
        compare_options = replace(request.run.options(impl), precision=request.precision if request.precision != "int8" else "fp32")
        vs_own = _compare(logits, own, impl.model, compare_options, trained)
        vs_ref = _compare(logits, ref_logits, impl.model, compare_options, trained)
        accuracy = res["accuracy"]
        metrics = {"test_accuracy": accuracy, "fp32_accuracy": pre["accuracy"], "test_examples": examples,
                   "logits": {"framework": vs_own, "reference": vs_ref, "reference_is": ref_note}}
        if request.precision != "fp32":
            ratio = accuracy / pre["accuracy"] if pre["accuracy"] > 0 else float("nan")
            metrics["mlperf_99"] = {"ratio": ratio, "kept": bool(accuracy >= 0.99 * pre["accuracy"]),
                                    "rule": "a quantized model keeps >= 99 % of the fp32 model's accuracy (MLPerf)"}
        record["metrics"] = metrics
        if request.precision in ("fp32", "bf16", "fp16"):
            bad = [(who, c) for who, c in (("the framework's own", vs_own), ("PyTorch's", vs_ref)) if c and not c["ok"]]
            if request.precision == "fp32" and bad:
                record["status"] = "failed"
                record["error"] = "; ".join(f"logits differ from {who} eval logits by up to {c['max_abs']:.3g} "
                                            f"({c.get('score', float('inf')):.3g} x the bound rtol {c.get('rtol')}, atol {c.get('atol')})"
                                            for who, c in bad)
    else:
        record["log_tail"] = outcome.log
    say(f"  {impl.label} {p.runtime} r{repeat}: {record['status']}"
        + (f" ({record['error'].splitlines()[0][:200]})" if record["error"] else ""))
    results.save(record, out)
    return record


def _offline_summary(epochs: list[dict], batch: int) -> dict | None:
    timed = [e for e in epochs if e["epoch"] > 0]
    if not timed:
        return None
    eps = [e["examples_per_s"] for e in timed]
    return {"batch": batch, "examples": timed[0]["examples"], "passes": len(timed),
            "median_examples_per_s": statistics.median(eps), "min_examples_per_s": min(eps),
            "max_examples_per_s": max(eps)}


def _export_record(metas: list[dict]) -> dict | None:
    if not metas:
        return None
    first = metas[0]
    keep = ("format", "file", "sha256", "bytes", "opset", "input", "layout", "dynamic_batch", "exporter", "export_s",
            "cache", "batch")
    out = {k: first.get(k) for k in keep}
    if len(metas) > 1:
        out["static_files"] = [{k: m.get(k) for k in ("batch", "file", "sha256", "cache")} for m in metas]
    return out


# --------------------------------------------------------------------------- the table
def table(records: list[dict]) -> str:
    """One line per record: throughput, latency, compile time, logits against the framework and PyTorch."""
    head = ["implementation", "runtime", "precision", "batch", "examples/s", "p50 ms", "p90 ms", "p99 ms",
            "compile s", "vs own", "vs PyTorch", "accuracy", "status"]
    rows = []

    def num(v, fmt="{:.3g}"):
        return "–" if v is None else fmt.format(v)

    for r in records:
        inf = r.get("inference") or {}
        off, lat = inf.get("offline") or {}, inf.get("latency") or {}
        logits = (r.get("metrics") or {}).get("logits") or {}
        own, ref = logits.get("framework") or {}, logits.get("reference") or {}
        rows.append([r["impl"]["label"], r["runtime"]["name"] + (" (compiled)" if r["config"].get("compile") else ""),
                     r["runtime"]["precision"], str(r["config"]["batch_size"]),
                     num(off.get("median_examples_per_s"), "{:,.1f}"), num(lat.get("p50_ms")), num(lat.get("p90_ms")),
                     num(lat.get("p99_ms")), num((r.get("timing") or {}).get("compile_s")),
                     num(own.get("max_abs"), "{:.2g}"), num(ref.get("max_abs"), "{:.2g}"),
                     num((r.get("metrics") or {}).get("test_accuracy"), "{:.4f}"),
                     r["status"] + (f": {r['error'].splitlines()[0][:120]}" if r.get("error") else "")])
    widths = [max(len(str(x[i])) for x in [head] + rows) for i in range(len(head) - 1)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + "  " + str(cells[-1])  # noqa: E731
    return "\n".join([line(head)] + [line(r) for r in rows])


def markdown_section(records: list[dict]) -> str:
    """The report's Inference section: throughput and latency by framework x runtime, with the
    spread over repeats (median, and min-max of the runs' medians)."""
    ok = [r for r in records if r.get("task") == TASK and r["status"] == "ok"]
    if not ok:
        return ""
    groups: dict = {}
    for r in ok:
        key = (r["impl"]["label"], r["runtime"]["name"], r["runtime"]["precision"], r["config"]["batch_size"],
               r["config"].get("image_size"), bool(r["config"].get("compile")))
        groups.setdefault(key, []).append(r)
    lines = ["## Inference", "",
             "Offline: examples/s at batch B (median of each run's timed passes; min-max over runs). "
             "Single-stream: batch 1, p50/p90/p99 ms (median over runs).", "",
             "| implementation | runtime | precision | B | px | runs | examples/s | range | p50 ms | p90 ms | p99 ms | accuracy |",
             "| :-- | :-- | :-- | --: | --: | --: | --: | :-- | --: | --: | --: | --: |"]
    for (label, runtime, precision, batch, px, compiled), rs in sorted(groups.items()):
        eps = [r["inference"]["offline"]["median_examples_per_s"] for r in rs if (r.get("inference") or {}).get("offline")]
        lat = [r["inference"]["latency"] for r in rs if (r.get("inference") or {}).get("latency")]
        med = lambda k: statistics.median(x[k] for x in lat) if lat else None  # noqa: E731
        fmt = lambda v: "–" if v is None else f"{v:.3g}"  # noqa: E731
        lines.append(f"| {label} | {runtime}{' (compiled)' if compiled else ''} | {precision} | {batch} | {px or ''} | {len(rs)} | "
                     f"{statistics.median(eps):,.1f} | {min(eps):,.1f}–{max(eps):,.1f} | {fmt(med('p50_ms'))} | "
                     f"{fmt(med('p90_ms'))} | {fmt(med('p99_ms'))} | "
                     f"{statistics.median(r['metrics']['test_accuracy'] for r in rs):.4f} |" if eps else
                     f"| {label} | {runtime} | {precision} | {batch} | {px or ''} | {len(rs)} | – | – | – | – | – | – |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the command
def command_main(request: InferRequest, output_format: str = "table", quiet: bool = False, command: str = "") -> int:
    """What `run --task infer` and `infer` do: refuse bad input, run, print the table, exit 1 on a failure."""
    from harness.requests import check_setup, implementations

    impls, skipped = implementations(request.run.selection)
    check_request(request, impls)
    check_setup(replace(request.run.setup, precision="fp32"), impls)
    pairs = plan(request, impls)
    if not any(not p.skip for p in pairs):
        reasons = "; ".join(f"{p.impl.label} on {p.runtime}: {p.skip}" for p in pairs) or "no runtime selected"
        raise_usage(f"nothing to run: {reasons}")
    for impl, reason in skipped:
        print(f"skipped {impl.label}: {reason}", file=sys.stderr)
    say = (lambda *a: None) if quiet else (lambda text: print(text, file=sys.stderr, flush=True))
    records = execute(request, pairs, command, say)
    if output_format == "json":
        print(json.dumps(records[0] if len(records) == 1 else records, indent=1, default=str))
    else:
        print(table(records))
        print(f"\nrecords: {request.run.out}/", file=sys.stderr)
    return 0 if records and all(r["status"] == "ok" for r in records) else 1
