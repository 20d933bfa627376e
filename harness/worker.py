"""The worker process: one run of one implementation, under the harness's clock.

Started by harness.runner as `<env python> -m harness.worker JOB.json --events-fd N`. It speaks
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

from harness import runtimes  # noqa: E402
from harness.data.cache import open_prepared  # noqa: E402
from harness.protocol import Batches, RunOptions, epoch_batches  # noqa: E402
from harness.registry import select  # noqa: E402
from harness.specs import get_spec  # noqa: E402

SPAWN_VAR = "DL_ROSETTA_T_SPAWN"  # the parent's monotonic clock when it launched this process


class Events:
    def __init__(self, fd: int):
        self._f = os.fdopen(fd, "w", buffering=1)

    def send(self, event: str, **data):
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

    n, bs = len(x_train), job["batch_size"]
    epochs = []
    for epoch in range(job["epochs"]):
        batches = Batches(epoch_batches(n, bs, options.seed, epoch),
                          report=lambda b, of, e=epoch: events.send("progress", epoch=e, batch=b, of=of))
        events.send("phase", name="epoch", epoch=epoch, batches=len(batches))
        t = time.monotonic()
        losses = trainer.train_epoch(batches)
        seconds = time.monotonic() - t
        losses = np.asarray(losses, dtype=np.float64)
        examples = len(batches) * bs
        row = {"epoch": epoch, "seconds": seconds, "steps": len(batches), "examples": examples,
               "examples_per_s": examples / seconds, "loss": float(losses.mean())}
        epochs.append(row)
        events.send("epoch", **row)
        if not np.isfinite(losses).all():
            raise FloatingPointError(f"loss became {losses[~np.isfinite(losses)][0]} in epoch {epoch}")

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


MODES = {"train": run_train}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="harness.worker")
    parser.add_argument("job")
    parser.add_argument("--events-fd", type=int, required=True)
    args = parser.parse_args(argv)
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
        return 0
    except BaseException as e:  # noqa: BLE001 - everything is reported, then the process ends
        events.send("error", type=type(e).__name__, message=str(e) or type(e).__name__,
                    traceback=traceback.format_exc())
        return 1


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # skip interpreter teardown: some runtimes (R, TF threads) can hang in it
