"""The worker process: one run of one implementation, under the harness's clock.

Started by harness.launch as `<env python> -m harness.worker JOB.json --events-fd N`. It speaks
only through JSON lines on fd N (events: phase, progress, epoch, result, error); whatever the
frameworks print goes to stderr, which the parent keeps as the run's log.
"""
from __future__ import annotations

import time

T_MAIN = time.monotonic()  # before anything heavy is imported: the end of interpreter start-up

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

import numpy as np  # noqa: E402

from harness import parallel, runtimes# noqa: E402
from harness.data.cache import array_digest, open_prepared  # noqa: E402
from harness.protocol import Batches, RunOptions, epoch_batches  # noqa: E402
from harness.registry import select  # noqa: E402
from harness.specs import get_spec  # noqa: E402

SPAWN_VAR = "DL_ROSETTA_T_SPAWN"  # the parent's monotonic clock when it launched this process


class Events:
    def __init__(self, fd: int | None):
        self._f = None if fd is None else os.fdopen(fd, "w", buffering=1)  # None: a replica other than rank 0

    def send(self, event: str, **data):
        if self._f is None:
            return
        self._f.write(json.dumps({"event": event, **data}, default=_jsonable) + "\n")
        self._f.flush()


def _jsonable(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def to_layout(x: np.ndarray, layout: str) -> np.ndarray:
    """Images arrive NCHW; an implementation that declares NHWC gets them converted here, untimed."""
    if x.ndim == 4 and layout == "NHWC":
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    return x


def upsample(x: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of (N,C,H,W) images to size x size (ResNet-50's --image-size)."""
    if x.ndim != 4 or x.shape[-1] == size:
        return x
    rows = (np.arange(size) * x.shape[-2]) // size
    cols = (np.arange(size) * x.shape[-1]) // size
    return np.ascontiguousarray(x[:, :, rows][:, :, :, cols])


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


@dataclass
class Opened:
    impl: object
    spec: object
    options: RunOptions
    trainer: object
    versions: dict
    param_count: int
    timing: dict = field(default_factory=dict)


def open_implementation(job: dict, events: Events) -> Opened:
    """Import the framework and build the model, timing both; check the parameter count."""
    i = job["impl"]
    (impl,) = select(i["lang"], i["framework"], i["backend"], i["model"])
    spec = get_spec(impl.model)
    options = RunOptions(**job["options"])
    runtime = runtimes.get(impl.lang)
    events.send("phase", name="import")
    t = time.monotonic()
    versions = runtime.import_framework(impl, options)
    import_s = time.monotonic() - t
    events.send("phase", name="build")
    t = time.monotonic()
    trainer = runtime.build(impl, spec, options)
    build_s = time.monotonic() - t
    count = int(trainer.param_count())
    if count != spec.param_count:
        raise ValueError(f"{impl.label} builds {count:,} trainable parameters; the {spec.name} spec has {spec.param_count:,}")
    return Opened(impl, spec, options, trainer, versions, count, {"import_s": import_s, "build_s": build_s})


def timed_epochs(trainer, n: int, batch_size: int, seed: int, count: int, events: Events | None = None) -> list[dict]:
    """The harness's clock: one monotonic reading either side of each train_epoch call."""
    rows = []
    for epoch in range(count):
        report = None if events is None else (lambda b, of, e=epoch: events.send("progress", epoch=e, batch=b, of=of))
        batches = Batches(epoch_batches(n, batch_size, seed, epoch), report=report)
        if events is not None:
            events.send("phase", name="epoch", epoch=epoch, batches=len(batches))
        getattr(trainer, "barrier", lambda: None)()  # data-parallel replicas start the clock together
        t = time.monotonic()
        losses = trainer.train_epoch(batches)
        seconds = time.monotonic() - t
        losses = np.asarray(losses, dtype=np.float64)
        examples = len(batches) * batch_size
        row = {"epoch": epoch, "seconds": seconds, "steps": len(batches), "examples": examples,
               "examples_per_s": examples / seconds, "loss": float(losses.mean())}
        rows.append(row)
        if events is not None:
            events.send("epoch", **row)
        if not np.isfinite(losses).all():
            raise FloatingPointError(f"loss became {losses[~np.isfinite(losses)][0]} in epoch {epoch}")
    return rows


def run_train(job: dict, events: Events) -> dict:
    opened = open_implementation(job, events)
    impl, options, trainer, timing = opened.impl, opened.options, opened.trainer, opened.timing
    data = open_prepared(job["data"]["folder"], job["data"].get("samples"))
    layout = trainer.info.get("layout", "NCHW")

    events.send("phase", name="data")
    t = time.monotonic()
    x_train, x_test = data["x_train"], data["x_test"]
    if impl.model == "resnet50":
        x_train, x_test = upsample(x_train, options.image_size), upsample(x_test, options.image_size)
    x_train, x_test = to_layout(x_train, layout), to_layout(x_test, layout)
    trainer.fit_data(x_train, data["y_train"])
    timing["data_s"] = time.monotonic() - t

    epochs = timed_epochs(trainer, len(x_train), job["batch_size"], options.seed, job["epochs"], events)

    events.send("phase", name="eval")
    t = time.monotonic()
    logits = np.asarray(trainer.predict(x_test))
    timing["eval_s"] = time.monotonic() - t
    accuracy = float((logits.argmax(axis=1) == np.asarray(data["y_test"])).mean())

    peak_device = getattr(trainer, "peak_device_memory", lambda: None)()
    return {
        "timing": timing,
        "epochs": epochs,
        "metrics": {"final_loss": epochs[-1]["loss"] if epochs else None, "test_accuracy": accuracy,
                    "test_examples": int(len(logits))},
        "memory": {"peak_rss_bytes": peak_rss_bytes(), "peak_device_bytes": peak_device},
        "versions": opened.versions,
        "info": trainer.info,
        "param_count": opened.param_count,
        "layout": layout,
    }


# --------------------------------------------------------------------------- equivalence modes
# Used by `python -m harness weights|predict|check` (harness.equivalence): each builds the model
# through the same runtime as a run, so every language is reached the same way.
def _open_framework(job: dict, events: Events):
    i = job["impl"]
    (impl,) = select(i["lang"], i["framework"], i["backend"], i["model"])
    options = RunOptions(**job["options"])
    runtime = runtimes.get(impl.lang)
    events.send("phase", name="import")
    versions = runtime.import_framework(impl, options)
    events.send("phase", name="build")
    return impl, get_spec(impl.model), options, runtime, versions


def _model_input(impl, options: RunOptions, x: np.ndarray, layout: str) -> np.ndarray:
    if impl.model == "resnet50":
        x = upsample(x, options.image_size)
    return to_layout(x, layout)


def _load_npz(path) -> dict:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _save_npz(path, weights: dict) -> None:
    with open(path, "wb") as f:  # a file object: numpy would append .npz to a bare name
        np.savez(f, **{k: np.asarray(v) for k, v in weights.items()})


def _save_npy(path, array) -> None:
    with open(path, "wb") as f:
        np.save(f, np.asarray(array, dtype=np.float32), allow_pickle=False)


def _not_identical(a: dict, b: dict) -> list:
    """Keys whose arrays differ in presence, shape, dtype or any bit."""
    def differs(k):
        if k not in a or k not in b:
            return True
        x, y = np.asarray(a[k]), np.asarray(b[k])
        return x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes()
    return [k for k in sorted(set(a) | set(b)) if differs(k)]


def _unchanged_shares(before: dict, after: dict) -> dict:
    """Per tensor (and per axis of a matrix or kernel): the share of slices a step left exactly
    unchanged, and the number of slices. A dropped unit passes no gradient, so its slices stay put."""
    out = {}
    for k, w0 in before.items():
        same = np.asarray(after[k]) == w0
        if same.ndim == 1:
            out[k] = (float(same.mean()), int(same.size))
            continue
        for axis in (0, 1):
            others = tuple(a for a in range(same.ndim) if a != axis)
            out[f"{k}[axis {axis}]"] = (float(same.all(axis=others).mean()), int(same.shape[axis]))
    return out


def _seen_digest(trainer, name: str, array: np.ndarray) -> dict:
    if hasattr(trainer, "data_digest"):  # computed in the implementation's own runtime (R, Julia)
        return {"sha256": trainer.data_digest(name), "by": "trainer.data_digest"}
    return {"sha256": array_digest(array), "by": "the worker on the array given to fit_data"}


def run_weights(job: dict, events: Events) -> dict:
    impl, spec, options, runtime, versions = _open_framework(job, events)
    trainer = runtime.build(impl, spec, options)
    _save_npz(job["out"], trainer.get_weights())
    return {"versions": versions, "info": trainer.info, "param_count": int(trainer.param_count())}


def run_predict(job: dict, events: Events) -> dict:
    """Eval-mode logits of job["input"] for each {weights, out} pair in job["pairs"]."""
    impl, spec, options, runtime, versions = _open_framework(job, events)
    trainer = runtime.build(impl, spec, options)
    x = _model_input(impl, options, np.load(job["input"], mmap_mode="r"), trainer.info.get("layout", "NCHW"))
    events.send("phase", name="eval")
    for pair in job["pairs"]:
        trainer.set_weights(_load_npz(pair["weights"]))
        _save_npy(pair["out"], trainer.predict(x))
    return {"versions": versions, "info": trainer.info}


def _steps(trainer, probe: dict, rows: list, teacher: list | None, work: str):
    """Check 3: one train_epoch call per row. The reference (teacher None) writes its weights after
    each step to WORK/stepK.npz; any other implementation starts each step K > 1 from the
    reference's weights after step K-1 (its own optimiser state goes on) and reports, per step
    and tensor, ||its weights - the reference's|| and ||the reference's step||."""
    losses, steps, before = [], [], probe
    for k, row in enumerate(rows, start=1):
        if teacher and k > 1:
            before = _load_npz(teacher[k - 2])
            trainer.set_weights(before)
        losses += [float(v) for v in np.asarray(trainer.train_epoch(Batches(np.asarray([row], dtype=np.int64))),
                                                dtype=np.float64)]
        after = trainer.get_weights()
        if teacher is None:
            _save_npz(os.path.join(work, f"step{k}.npz"), after)
            continue
        ref, norms = _load_npz(teacher[k - 1]), {}
        for key, r in ref.items():
            r = r.astype(np.float64)
            mine = np.asarray(after.get(key, np.full(r.shape, np.nan)), dtype=np.float64)
            diff = float(np.linalg.norm(mine - r)) if mine.shape == r.shape else float("inf")
            norms[key] = (diff if np.isfinite(diff) else float("inf"), float(np.linalg.norm(r - before[key])))
        steps.append(norms)
    return losses, (None if teacher is None else steps)


def run_equivalence(job: dict, events: Events) -> dict:
    """Checks 1-4 of harness.equivalence in one process: shapes and round trips, eval logits on
    the probe weights, (for models with dropout) one step with dropout on, then the check-3 steps
    with dropout off, and the digests of the training data as the implementation saw it."""
    from dataclasses import replace

    impl, spec, options, runtime, versions = _open_framework(job, events)
    work = job["work"]
    files = {"init": os.path.join(work, "init.npz"), "logits": os.path.join(work, "logits.npy")}
    data = open_prepared(job["data"]["folder"])
    probe = _load_npz(job["probe"])
    trainer = runtime.build(impl, spec, options)
    layout = trainer.info.get("layout", "NCHW")
    init = {k: np.array(v) for k, v in trainer.get_weights().items()}
    _save_npz(files["init"], init)
    trainer.set_weights(init)
    roundtrip_init = _not_identical(init, trainer.get_weights())
    trainer.set_weights(probe)
    roundtrip_probe = _not_identical(probe, trainer.get_weights())

    events.send("phase", name="eval")
    _save_npy(files["logits"], trainer.predict(_model_input(impl, options, data["x_test"][: job["eval_examples"]], layout)))
    x_train, y_train = _model_input(impl, options, data["x_train"], layout), data["y_train"]
    dropout = None
    if job.get("dropout_rows"):  # one first step per fresh trainer (no optimiser state), new masks each
        events.send("phase", name="dropout")
        draws = []
        for d, row in enumerate(job["dropout_rows"]):
            if d:
                trainer = runtime.build(impl, spec, replace(options, seed=options.seed + d))
                trainer.set_weights(probe)
            trainer.fit_data(x_train, y_train)
            trainer.train_epoch(Batches(np.asarray([row], dtype=np.int64)))
            draws.append(_unchanged_shares(probe, trainer.get_weights()))
            del trainer
        dropout = {k: (float(np.mean([d[k][0] for d in draws])), m * len(draws)) for k, (_, m) in draws[0].items()}
        trainer = runtime.build(impl, spec, replace(options, dropout=False))
        trainer.set_weights(probe)
    events.send("phase", name="steps")
    trainer.fit_data(x_train, y_train)
    losses, steps = _steps(trainer, probe, job["rows"], job.get("teacher"), work)
    if job.get("teacher") is None:
        files["steps"] = [os.path.join(work, f"step{k}.npz") for k in range(1, len(job["rows"]) + 1)]
    return {
        "versions": versions, "info": trainer.info, "layout": layout, "param_count": int(trainer.param_count()),
        "shapes": {k: [list(v.shape), str(v.dtype)] for k, v in init.items()},
        "roundtrip_init": roundtrip_init, "roundtrip_probe": roundtrip_probe,
        "losses": losses, "steps": steps, "dropout": dropout,
        "digest": {"x": _seen_digest(trainer, "x", x_train), "y": _seen_digest(trainer, "y", y_train)},
        "disk": {"x_train": array_digest(data["x_train"]), "y_train": array_digest(data["y_train"])},
        "files": files,
    }


def run_train_export(job: dict, events: Events) -> dict:
    """Check 5: train job["epochs"] epochs (dropout on), export the weights to job["out"], write the
    eval logits of job["input"] next to it, and those of each {weights, out} pair in job["cross"]."""
    impl, spec, options, runtime, versions = _open_framework(job, events)
    data = open_prepared(job["data"]["folder"], job["data"].get("samples"))
    trainer = runtime.build(impl, spec, options)
    layout = trainer.info.get("layout", "NCHW")
    x_train = _model_input(impl, options, data["x_train"], layout)
    trainer.fit_data(x_train, data["y_train"])
    losses = []
    for epoch in range(job["epochs"]):
        events.send("phase", name="epoch", epoch=epoch)
        losses += [float(v) for v in np.asarray(trainer.train_epoch(
            Batches(epoch_batches(len(x_train), job["batch_size"], options.seed, epoch))), dtype=np.float64)]
    _save_npz(job["out"], trainer.get_weights())
    events.send("phase", name="eval")
    x = _model_input(impl, options, np.load(job["input"], mmap_mode="r"), layout)
    _save_npy(os.path.join(os.path.dirname(job["out"]), "logits.npy"), trainer.predict(x))
    for pair in job["cross"]:
        trainer.set_weights(_load_npz(pair["weights"]))
        _save_npy(pair["out"], trainer.predict(x))
    return {"versions": versions, "info": trainer.info, "losses": losses}


MODES = {"train": run_train, "weights": run_weights, "predict": run_predict, "equivalence": run_equivalence,
         "train-export": run_train_export}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="harness.worker")
    parser.add_argument("job")
    parser.add_argument("--events-fd", type=int)
    parser.add_argument("--events-path", help="a FIFO (workers started by torchrun inherit no descriptors)")
    args = parser.parse_args(argv)
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun replica: only rank 0 speaks to the harness
        events = Events(None)
    elif args.events_path:
        events = Events(os.open(args.events_path, os.O_WRONLY))
    else:
        events = Events(args.events_fd)
    os.dup2(2, 1)  # framework chatter on stdout joins stderr, the run's log
    sys.stdout = sys.stderr
    spawn = float(os.environ.get(SPAWN_VAR, T_MAIN))
    try:
        job = json.loads(open(args.job).read())
        events.send("phase", name="start", startup_s=T_MAIN - spawn, pid=os.getpid())
        result = MODES[job.get("mode", "train")](job, events)
        result.setdefault("timing", {})["startup_s"] = T_MAIN - spawn
        events.send("result", **result)
        parallel.leave_nodes()  # --nodes K: every node has sent its result before any exits
        return 0
    except BaseException as e:  # noqa: BLE001 - everything is reported, then the process ends
        trace = traceback.format_exc()
        print(trace, file=sys.stderr, flush=True)  # the run's log keeps the whole traceback
        events.send("error", type=type(e).__name__, message=str(e) or type(e).__name__, traceback=trace)
        return 1


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # skip interpreter teardown: some runtimes (R, TF threads) can hang in it
