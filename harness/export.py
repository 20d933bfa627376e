"""The results for other tools: the summary as CSV, JSON or Parquet, and every run in MLflow.

`summary_table` is one row per implementation x workload x report section (machine, machine
environment, commit, device setup) with the median steady seconds per epoch, its 95 % interval and
n, the throughput in the model's unit with its interval, the ratio to PyTorch with its interval,
warm-up, start-up, accuracy and the load flag: the numbers of the report, for spreadsheets and
dashboards. `log_to_mlflow` writes one MLflow run per run record (parameters, per-epoch and summary
metrics, tags with the store keys, the environment and the command as artifacts); a run already
logged (tag dl_rosetta.run_id) is skipped, so logging a growing store again adds only the new runs.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from harness.summary import row_name, throughput

SUMMARY_COLUMNS = {  # summary column -> exported name
    "machine": "machine", "hardware": "hardware", "sysenv": "environment", "commit_key": "commit",
    "device": "device", "gpus": "gpus", "nodes": "nodes", "precision": "precision",
    "lang": "lang", "framework": "framework", "backend": "backend", "compile": "compile",
    "framework_version": "framework_version", "label": "label",
    "model": "model", "data": "data", "samples": "samples", "batch_size": "batch_size", "image_size": "image_size",
    "runs": "runs", "n": "n",
    "median_s": "median_s_per_epoch", "ci_low_s": "ci_low_s_per_epoch", "ci_high_s": "ci_high_s_per_epoch",
    "ci_level": "ci_coverage", "q1_s": "q1_s_per_epoch", "q3_s": "q3_s_per_epoch",
    "x_pytorch": "x_pytorch", "x_pytorch_low": "x_pytorch_ci_low", "x_pytorch_high": "x_pytorch_ci_high",
    "first_epoch_s": "first_epoch_s", "startup_s": "startup_s", "test_accuracy": "test_accuracy",
    "accuracy_parity": "accuracy_parity", "scaling_efficiency": "scaling_efficiency",
    "load_max": "load_max", "cores": "cores", "loaded": "loaded",
}


def summary_table(sections):
    """The report's sections as one tidy DataFrame (see the module's docstring)."""
    import pandas as pd

    rows = []
    for s in sections:
        for _, r in s.summary.iterrows():
            unit, factor = throughput(r["model"])
            row = {new: r.get(old) for old, new in SUMMARY_COLUMNS.items()}
            row.update(implementation=row_name(r), section=s.title, throughput_unit=unit,
                       throughput=r["median_eps"] * factor, throughput_ci_low=r["ci_low_eps"] * factor,
                       throughput_ci_high=r["ci_high_eps"] * factor)
            rows.append(row)
    frame = pd.DataFrame(rows)
    first = ["section", "implementation", "model", "throughput_unit", "throughput", "throughput_ci_low",
             "throughput_ci_high"]
    return frame[[c for c in first if c in frame] + [c for c in frame if c not in first]]


def write_summary(frame, path: Path, fmt: str) -> None:
    from harness.results import write_atomic

    if fmt == "csv":
        write_atomic(path, frame.to_csv(index=False))
    elif fmt == "json":
        write_atomic(path, frame.to_json(orient="records", indent=1) + "\n")
    elif fmt == "parquet":
        tmp = path.with_name(f".{path.name}.tmp")
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    else:
        raise ValueError(f"unknown format {fmt!r}")


# ---- MLflow ---------------------------------------------------------------------------------

def _is_folder(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file:")


def tracking_uri(uri: str) -> str:
    """A folder becomes a file: URI (MLflow's file store, which MLflow >= 3.13 only opens with
    MLFLOW_ALLOW_FILE_STORE=true: asked for by name here, so it is set); anything else is used as it is."""
    if not _is_folder(uri):
        return uri
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return uri if uri.startswith("file:") else Path(uri).expanduser().resolve().as_uri()


def _params(record: dict) -> dict:
    impl, cfg = record["impl"], record["config"]
    out = {"lang": impl["lang"], "framework": impl["framework"], "backend": impl.get("backend"), "model": impl["model"],
           "framework_version": impl.get("version")}
    out.update({k: cfg.get(k) for k in ("data", "n_train", "n_test", "epochs", "batch_size", "seed", "device", "gpus",
                                         "nodes", "precision", "compile", "image_size", "repeat")})
    for package, version in sorted((record.get("versions") or {}).items()):
        out[f"version.{package}"] = version
    return {k: str(v) for k, v in out.items() if v is not None}


def _metrics(record: dict) -> list[tuple[str, float, int]]:
    """(name, value, step): per-epoch seconds, throughput and loss (step = epoch), and one value each
    of the run's summary numbers (step 0)."""
    out = []
    for e in record.get("epochs") or []:
        for name in ("seconds", "examples_per_s", "loss"):
            if isinstance(e.get(name), (int, float)) and math.isfinite(e[name]):
                out.append((f"epoch_{name}", float(e[name]), int(e["epoch"])))
    timing, metrics = record.get("timing") or {}, record.get("metrics") or {}
    for name, value in {**timing, **metrics}.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out.append((name, float(value), 0))
    return out


def log_to_mlflow(paths, uri: str, experiment: str = "dl-rosetta", **keys) -> tuple[int, int]:
    """Log every run record under `paths` to the MLflow tracking store `uri`; returns (logged, skipped)."""
    from harness import results
    from harness.errors import UsageError

    try:
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise UsageError("--mlflow needs MLflow: pip install 'dl-rosetta[mlflow]'") from None
    client = MlflowClient(tracking_uri=tracking_uri(uri))
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    have = set()
    token = None
    while True:  # every run already logged, by the harness's run id
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        have |= {r.data.tags.get("dl_rosetta.run_id") for r in page}
        token = page.token
        if not token:
            break
    logged = skipped = 0
    for record in results.read_records(paths, **keys):
        if record["run_id"] in have:
            skipped += 1
            continue
        key = results.record_key(record)
        start = _millis(record.get("started"))
        tags = {"dl_rosetta.run_id": record["run_id"], "dl_rosetta.label": record["impl"].get("label", ""),
                "dl_rosetta.status": record["status"], "machine": key["machine"], "environment": key["env"],
                "commit": key["commit"], "config": key["config"], "implementation": row_name(
                    {**record["impl"], "compile": record["config"].get("compile")}),
                "suite": str((record.get("plan") or {}).get("suite")), "mlflow.source.name": "dl-rosetta"}
        if record.get("error"):
            tags["error"] = str(record["error"])[:5000]
        run = client.create_run(experiment_id, start_time=start, run_name=record["run_id"],
                                tags={k: str(v) for k, v in tags.items()})
        run_id = run.info.run_id
        client.log_batch(run_id, params=[Param(k, v[:6000]) for k, v in _params(record).items()],
                         metrics=[Metric(n, v, start or 0, step) for n, v, step in _metrics(record)])
        client.log_dict(run_id, record.get("environment") or {}, "environment.json")
        client.log_dict(run_id, {"versions": record.get("versions"), "info": record.get("info"),
                                 "data_manifest": record.get("data_manifest")}, "record_extra.json")
        client.log_text(run_id, (record.get("command") or "") + "\n", "command.txt")
        end = start + int(1000 * sum(e.get("seconds", 0) for e in record.get("epochs") or [])) if start else None
        client.set_terminated(run_id, status="FINISHED" if record["status"] == "ok" else "FAILED", end_time=end)
        logged += 1
    return logged, skipped


def _millis(started) -> int | None:
    from datetime import datetime

    try:
        return int(datetime.fromisoformat(str(started)).timestamp() * 1000)
    except ValueError:
        return None
