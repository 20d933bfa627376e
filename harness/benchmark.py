"""One benchmark run: launch the worker, assemble the record, save it."""
from __future__ import annotations

import os
import re
import statistics
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from harness import environment, results
from harness.protocol import RunOptions
from harness.launch import Job, run_job
from harness.specs import get_spec


def options_from_args(impl, args) -> RunOptions:
    # the multi-node launch (harness.parallel): only what was given, recorded verbatim
    extra = {k: getattr(args, k, None) for k in ("rdzv_endpoint", "node_rank", "workers")}
    return RunOptions(seed=args.seed, device=args.device, gpus=args.gpus, precision=args.precision,
                      scaling=getattr(args, "scaling", "weak"), nodes=getattr(args, "nodes", 1),
                      compile=args.compile, backend=impl.backend, image_size=args.image_size,
                      extra={k: v for k, v in extra.items() if v is not None})


def new_run_id(impl, repeat: int) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    label = re.sub(r"[^A-Za-z0-9]+", "-", impl.label).strip("-")
    return f"{stamp}-{label}-r{repeat}-{uuid.uuid4().hex[:6]}"


def timing_summary(epochs: list[dict]) -> dict:
    """First epoch (warm-up, compilation) apart; steady state = median of the later epochs."""
    out = {"first_epoch_s": epochs[0]["seconds"] if epochs else None,
           "steady_s_per_epoch": None, "steady_examples_per_s": None, "steady_epochs": max(0, len(epochs) - 1)}
    steady = epochs[1:]
    if steady:
        seconds = statistics.median(e["seconds"] for e in steady)
        out["steady_s_per_epoch"] = seconds
        out["steady_examples_per_s"] = steady[0]["examples"] / seconds
    return out


def execute(impl, args, prepared, repeat: int, command: str, progress, plan: dict | None = None) -> dict:
    """Run once, save the record; `plan` (harness.schedule.run_plan) says which request it answers."""
    spec = get_spec(impl.model)
    options = options_from_args(impl, args)
    epochs = args.epochs or spec.epochs
    batch_size = args.batch_size or spec.batch_size
    if options.scaling == "weak":  # the harness's rows are global batches: one spec batch per replica
        batch_size *= options.gpus * options.nodes
    run_id = new_run_id(impl, repeat)
    out = Path(args.out)
    job = Job(impl, options.to_dict(), {"folder": str(prepared.folder), "samples": prepared.samples,
                                        "name": prepared.name}, epochs, batch_size, timeout=args.timeout)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    load_before = os.getloadavg()  # 1, 5, 15 min: how busy the machine was, for whoever reads the number
    t = time.monotonic()
    with progress.run(impl.label, repeat, epochs) as on_event:
        outcome = run_job(job, on_event=on_event, log_path=out / "logs" / f"{run_id}.log")
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
                   "batch_size": batch_size, "repeat": repeat, "timeout_s": args.timeout, **options.to_dict()},
        "timing": {**res.get("timing", {}), **timing_summary(epoch_rows), "wall_s": wall},
        "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
        "epochs": epoch_rows,
        "metrics": res.get("metrics", {}),
        "memory": res.get("memory", {}),
        "param_count": res.get("param_count"),
        "spec_param_count": spec.param_count,
        "layout": res.get("layout"),
        "info": res.get("info", {}),
        "versions": versions,
        "data_manifest": prepared.manifest,
        "environment": environment.collect(),
        "command": command,
        "plan": plan,
    }
    if outcome.status == "replica":  # node R > 0 of a multi-node run: node 0 writes the record
        return record
    if outcome.status != "ok":
        record["log_tail"] = outcome.log
    results.save(record, out)
    return record


def summary_table(records):
    import pandas as pd

    rows = []
    for r in records:
        t, m = r["timing"], r["metrics"]
        rows.append({
            "implementation": r["impl"]["label"], "repeat": r["config"]["repeat"], "status": r["status"],
            "first_epoch_s": t.get("first_epoch_s"), "steady_s_per_epoch": t.get("steady_s_per_epoch"),
            "examples_per_s": t.get("steady_examples_per_s"), "startup_s": t.get("startup_s"),
            "import_s": t.get("import_s"), "build_s": t.get("build_s"),
            "loss": m.get("final_loss"), "test_acc": m.get("test_accuracy"),
            "peak_rss_mb": (r["memory"].get("peak_rss_bytes") or 0) / 2**20 or None,
            "error": r["error"] or "",
        })
    return pd.DataFrame(rows).round(4)
