"""One benchmarked training run, both sides of it.

Worker side: the `train` mode, the harness's clock around each `train_epoch` call. Parent side:
launch the worker, assemble the record from its events, save it to the store.
"""
from __future__ import annotations

import math
import os
import re
import resource
import statistics
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from harness import environment, launch, results
from harness.errors import interruption
from harness.data.cache import ARRAY_NAMES, open_checked, open_prepared
from harness.model_input import model_input
from harness.protocol import Batches, epoch_batches
from harness.specs import EVAL_BATCH, get_spec


# --------------------------------------------------------------------------- worker side
def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def timed_epochs(trainer, n: int, batch_size: int, seed: int, count: int, events=None) -> list[dict]:
    """The harness's clock: one monotonic reading either side of each train_epoch call."""
    rows = []
    for epoch in range(count):
        report = None if events is None else (lambda b, of, e=epoch: events.send("progress", epoch=e, batch=b, of=of))
        batches = Batches(epoch_batches(n, batch_size, seed, epoch), report=report)
        if events is not None:
            events.send("phase", name="epoch", epoch=epoch, batches=len(batches))
        trainer.barrier()  # data-parallel replicas start the clock together
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


EVAL_FLOATS = 1 << 24  # logits held at once while the test set is scored (64 MiB of float32)


def test_metrics(trainer, spec, x_test, y_test) -> dict:
    """Eval-mode logits of the test set, scored in chunks (the transformer's (N, T, 256) logits of a
    large text would not fit at once): accuracy and mean cross-entropy over every prediction (every
    example of a classifier, every position of a next-byte model), and bits per byte for the latter."""
    per_example = math.prod(spec.target_shape) * spec.num_classes
    chunk = EVAL_BATCH * max(1, EVAL_FLOATS // (EVAL_BATCH * per_example))
    y_test = np.asarray(y_test)
    correct = nll = 0.0
    for i in range(0, len(x_test), chunk):
        logits = np.asarray(trainer.predict(x_test[i:i + chunk]))
        want = spec.logits_shape(len(x_test[i:i + chunk]))
        if logits.shape != want:
            raise ValueError(f"predict returned logits of shape {logits.shape}; the {spec.name} spec's are {want}")
        y = y_test[i:i + chunk]
        correct += float((logits.argmax(axis=-1) == y).sum())
        z = logits.astype(np.float64)
        top = z.max(axis=-1, keepdims=True)
        log_norm = np.log(np.exp(z - top).sum(axis=-1)) + top[..., 0]
        nll += float((log_norm - np.take_along_axis(z, y[..., None], axis=-1)[..., 0]).sum())
    predictions = max(1, y_test.size)
    out = {"test_accuracy": correct / predictions, "test_loss": nll / predictions, "test_examples": len(x_test)}
    if spec.sequence:  # byte tokens: a nat per byte is 1/ln 2 bits per byte
        out.update(test_bits_per_byte=out["test_loss"] / math.log(2), test_predictions=int(y_test.size))
    return out


def run_train(job: dict, opened, events) -> dict:
    """The `train` worker mode: hand over the data, time the epochs, evaluate on the test set."""
    impl, spec, options, trainer, timing = opened.impl, opened.spec, opened.options, opened.trainer, opened.timing
    if opened.param_count != spec.param_count:
        raise ValueError(f"{impl.label} builds {opened.param_count:,} trainable parameters; "
                         f"the {spec.name} spec has {spec.param_count:,}")
    events.send("phase", name="verify")
    t = time.monotonic()
    expected = job["data"].get("arrays")  # the manifest the parent verified
    if expected is None:  # a job written by hand: nothing to compare with, the record says so
        data, seen = open_prepared(job["data"]["folder"], job["data"].get("samples")), None
    else:  # the bytes this run trains on, hashed where they are mapped, before the clock starts
        data, seen = open_checked(job["data"]["folder"], expected, job["data"].get("samples"))
    timing["verify_s"] = time.monotonic() - t
    layout = trainer.info.get("layout", "NCHW")

    events.send("phase", name="data")
    t = time.monotonic()
    x_train = model_input(impl.model, options, data["x_train"], layout)
    x_test = model_input(impl.model, options, data["x_test"], layout)
    trainer.fit_data(x_train, data["y_train"])
    timing["data_s"] = time.monotonic() - t

    epochs = timed_epochs(trainer, len(x_train), job["batch_size"], options.seed, job["epochs"], events)

    events.send("phase", name="eval")
    t = time.monotonic()
    metrics = test_metrics(trainer, spec, x_test, data["y_test"])
    timing["eval_s"] = time.monotonic() - t

    peak_device = trainer.peak_device_memory()
    events.send("phase", name="peak")
    matmul_peak = measure_peak(trainer, impl, options, opened.versions, job["data"]["folder"])
    return {
        "timing": timing,
        "epochs": epochs,
        "metrics": {"final_loss": epochs[-1]["loss"] if epochs else None, **metrics},
        "memory": {"peak_rss_bytes": peak_rss_bytes(), "peak_device_bytes": peak_device},
        "versions": opened.versions,
        "info": trainer.info,
        "param_count": opened.param_count,
        "layout": layout,
        "peak": matmul_peak,
        "data_seen": seen,
    }


def measure_peak(trainer, impl, options, versions: dict, data_folder: str) -> dict:
    """The device's measured matmul peak for this run (harness.peak), cached beside the data
    (<cache>/peaks); on a GPU with the vendor's datasheet peak. Never fails the run: a broken
    measurement is recorded as such and leaves MFU empty."""
    from harness import environment, peak
    from harness.protocol import Trainer

    own = type(trainer).matmul_peak is not Trainer.matmul_peak  # else numpy's BLAS, the protocol's default
    device = (trainer.info.get("setup") or {}).get("devices", [options.device])[0]
    if options.device == "cpu":
        device = f"cpu: {environment.cpu_model()}"
    try:
        out = peak.measured(trainer, options.precision, device, impl.name, versions, Path(data_folder).parents[1], own)
    except Exception as e:  # noqa: BLE001 - MFU is extra; the benchmark stands without it
        out = {"flops_per_s": None, "error": f"{type(e).__name__}: {e}", "device": device}
    if options.device != "cpu":
        out["datasheet"] = peak.datasheet(device, options.precision)
    return out


# --------------------------------------------------------------------------- parent side


def prepare(request, model: str):
    """The prepared, verified data set a request trains `model` on (harness.data.Prepared); a
    request the data cannot feed is a UsageError here, before any worker starts."""
    from harness import data

    prepared = data.prepare(request.resolved(model)[2], get_spec(model), request.samples, request.data_dir,
                            refresh=request.refresh)
    request.check_data(model, prepared)
    return prepared


def new_run_id(impl, repeat: int) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    label = re.sub(r"[^A-Za-z0-9]+", "-", impl.label).strip("-")
    return f"{stamp}-{label}-r{repeat}-{uuid.uuid4().hex[:6]}"


def timing_summary(epochs: list[dict], tokens_per_example: int | None = None) -> dict:
    """First epoch (warm-up, compilation) apart; steady state = median of the later epochs.
    A next-token model also gets tokens/s (examples/s x positions per example)."""
    out = {"first_epoch_s": epochs[0]["seconds"] if epochs else None,
           "steady_s_per_epoch": None, "steady_examples_per_s": None, "steady_epochs": max(0, len(epochs) - 1)}
    if tokens_per_example:
        out["steady_tokens_per_s"] = None
    steady = epochs[1:]
    if steady:
        seconds = statistics.median(e["seconds"] for e in steady)
        out["steady_s_per_epoch"] = seconds
        out["steady_examples_per_s"] = steady[0]["examples"] / seconds
        if tokens_per_example:
            out["steady_tokens_per_s"] = out["steady_examples_per_s"] * tokens_per_example
    return out


def flops_record(spec, options, timing: dict, peak: dict | None) -> dict:
    """FLOPs per example (harness.flops), the steady rate they give, and MFU: achieved FLOP/s over
    the measured peak of every replica together (and over the datasheet's on a GPU)."""
    from harness import flops

    out = flops.describe(spec, options.image_size)
    replicas = options.gpus * options.nodes
    eps = timing.get("steady_examples_per_s")
    achieved = out["per_example"] * eps if eps else None
    per_device = (peak or {}).get("flops_per_s")
    sheet = ((peak or {}).get("datasheet") or {}).get("flops_per_s")
    out.update(achieved_per_s=achieved, replicas=replicas,
               peak_per_s=per_device * replicas if per_device else None,
               mfu=achieved / (per_device * replicas) if achieved and per_device else None,
               datasheet_peak_per_s=sheet * replicas if sheet else None,
               mfu_datasheet=achieved / (sheet * replicas) if achieved and sheet else None,
               peak=peak)
    return out


def _data_seen(seen: dict | None, manifest: dict) -> dict:
    """The worker's own SHA-256 of every array it mapped, against the manifest the record carries."""
    if not seen:
        return {"match": False, "detail": "the worker reported no digest of the data it trained on", "sha256": None}
    differ = [n for n in ARRAY_NAMES if seen.get(n) != manifest["arrays"][n]["sha256"]]
    detail = (f"the worker saw other bytes than the manifest's in {', '.join(differ)}" if differ
              else "the worker's SHA-256 of every array equals the manifest's")
    return {"match": not differ, "detail": detail, "sha256": seen}


def execute(impl, request, prepared, repeat: int, command: str, progress, plan: dict | None = None) -> dict:
    """Run `impl` once as `request` (harness.requests.RunRequest) asks, on `prepared` data; save the
    record. `plan` (harness.schedule.run_plan) says which planned run it answers."""
    spec = get_spec(impl.model)
    options = request.options(impl)
    epochs, batch_size, _ = request.resolved(impl.model)
    if options.scaling == "weak":  # the harness's rows are global batches: one spec batch per replica
        batch_size *= options.gpus * options.nodes
    run_id = new_run_id(impl, repeat)
    out = Path(request.out)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    load_before = os.getloadavg()  # 1, 5, 15 min: how busy the machine was, for whoever reads the number
    t = time.monotonic()
    interrupted = None
    with progress.run(impl.label, repeat, epochs) as on_event:
        try:
            outcome = launch.run_worker(impl, options, "train", prepared, epochs, batch_size, request.timeout,
                                        on_event=on_event, log_path=out / "logs" / f"{run_id}.log")
        except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: the worker is gone; record what finished
            interrupted = e
            outcome = getattr(e, "outcome", None) or launch.Outcome("interrupted", None, None, [], "", None)
            outcome.error = (f"interrupted by {interruption(e)} after {len(outcome.epochs)} of {epochs} epochs; "
                             "--resume runs it again")
    wall = time.monotonic() - t
    res = outcome.result or {}
    epoch_rows = res.get("epochs", outcome.epochs)
    versions = res.get("versions", {})
    record = {
        "run_id": run_id,
        "started": started,
        "status": outcome.status,
        "error": outcome.error,
        "impl": {"lang": impl.lang, "framework": impl.name, "backend": impl.backend, "model": impl.model,
                 "label": impl.label,
                 "version": versions.get(impl.name) or versions.get(impl.framework.modules[0])},
        "config": {"data": prepared.name, "n_train": prepared.n_train,
                   "n_test": prepared.manifest["arrays"]["x_test"]["shape"][0], "epochs": epochs,
                   "batch_size": batch_size, "repeat": repeat, "timeout_s": request.timeout, **options.to_dict()},
        "timing": {**res.get("timing", {}), **timing_summary(epoch_rows, spec.tokens_per_example), "wall_s": wall},
        "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
        "epochs": epoch_rows,
        "metrics": res.get("metrics", {}),
        "memory": res.get("memory", {}),
        "param_count": res.get("param_count"),
        "spec_param_count": spec.param_count,
        "layout": res.get("layout"),
        "flops_per_example": None,  # filled below: harness.flops
        "info": res.get("info", {}),
        "versions": versions,
        "data_manifest": prepared.manifest,
        "data_seen": _data_seen(res.get("data_seen"), prepared.manifest),
        "environment": environment.collect(),
        "command": command,
        "plan": plan,
    }
    record["flops"] = flops_record(spec, options, record["timing"], res.get("peak"))
    record["flops_per_example"] = record["flops"]["per_example"]
    if outcome.status == "ok" and not record["data_seen"]["match"]:  # never claim bytes the run did not see
        record["status"], record["error"] = "failed", f"data: {record['data_seen']['detail']}"
    if outcome.status == "replica":  # node R > 0 of a multi-node run: node 0 writes the record
        return record
    if record["status"] != "ok":
        record["log_tail"] = outcome.log
    path = results.save(record, out)
    if interrupted is not None:
        import sys

        print(f"{impl.label} r{repeat}: {outcome.error}; recorded in {path}", file=sys.stderr)
        raise interrupted
    return record
