"""Results are data: one JSON record per run (environment beside every number), tidy tables from them.

A record holds the run's configuration, timing, per-epoch rows, metrics, versions and the
environment. `epoch_rows` flattens records to one row per epoch per run; `load` reads a results
folder (or files) back as that DataFrame.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

RECORD_SUFFIX = ".json"


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def save(record: dict, out_dir: Path) -> Path:
    """Write the run's epoch table (CSV) and then its record (JSON), each atomically."""
    out_dir = Path(out_dir)
    rows = epoch_rows([record])
    if rows:
        import pandas as pd

        write_atomic(out_dir / f"{record['run_id']}.epochs.csv", pd.DataFrame(rows).to_csv(index=False))
    path = out_dir / f"{record['run_id']}{RECORD_SUFFIX}"
    write_atomic(path, json.dumps(record, indent=1, default=str))
    return path


def _flat(record: dict) -> dict:
    impl, cfg, timing = record["impl"], record["config"], record.get("timing") or {}
    env = record.get("environment") or {}
    metrics = record.get("metrics") or {}
    return {
        "run_id": record["run_id"], "status": record["status"], "lang": impl["lang"],
        "framework": impl["framework"], "backend": impl.get("backend"), "model": impl["model"],
        "data": cfg["data"], "samples": cfg.get("n_train"), "batch_size": cfg["batch_size"],
        "device": cfg["device"], "gpus": cfg["gpus"], "precision": cfg["precision"], "repeat": cfg.get("repeat"),
        "startup_s": timing.get("startup_s"), "import_s": timing.get("import_s"), "build_s": timing.get("build_s"),
        "test_accuracy": metrics.get("test_accuracy"),
        "framework_version": impl.get("version"),
        "cpu": env.get("cpu"), "gpu": ", ".join(g["name"] for g in env.get("gpus") or []) or None,
        "commit": (env.get("git") or {}).get("commit"), "started": record.get("started"),
    }


def epoch_rows(records) -> list[dict]:
    rows = []
    for r in records:
        base = _flat(r)
        for e in r.get("epochs") or []:
            rows.append({**base, **e, "warmup": e["epoch"] == 0})
    return rows


def read_records(paths) -> list[dict]:
    files = []
    for p in map(Path, paths):
        files += sorted(p.rglob(f"*{RECORD_SUFFIX}")) if p.is_dir() else [p]
    return [json.loads(f.read_text()) for f in files]


def load(*paths):
    """All epoch rows of the records under the given folders/files, as one pandas DataFrame."""
    import pandas as pd

    return pd.DataFrame(epoch_rows(read_records(paths or ["results"])))
