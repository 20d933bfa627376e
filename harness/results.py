"""The results store: append-only, one JSON record per run, read back as one tidy pandas DataFrame.

Layout. A store is any folder (`--out`, default `results/`); published results live in
`bench/results/<machine>/`. Each finished run adds exactly two files, never rewritten:

    <run_id>.epochs.csv   the run's epoch rows (derived, written first, for spreadsheets)
    <run_id>.json         the record: configuration, timing, per-epoch rows, metrics, versions,
                          environment, command; its presence is what makes the run exist

Both are written to a temporary name in the same folder, flushed to disk and then linked into
place, so a reader (or a run killed midway) sees a whole file or none; linking refuses to replace
an existing file, which keeps the store append-only. Sub-folders are read recursively; JSON files
that are not run records (reports, bench scripts' own outputs: JSON objects without any of a
record's keys) are ignored. A file that is not JSON (truncated, garbage), or a record whose
fields have the wrong types (`record_problem`), is skipped with one warning line on stderr
naming the file and why, and reading goes on: a reader never crashes on a bad file and never
drops one silently.

Keys. Records are self-describing rather than filed by folder: `save` adds `record["key"]`

    machine  /etc/machine-id (12 hex; hostname where absent)
    env      SHA-256[:12] of what the run's software and hardware were: CPU, cores, memory,
             GPUs and driver, OS, Python, BLAS variables, and the worker's package versions
    commit   the project's git commit [:12], "+dirty" when tracked files had changes
    config   SHA-256[:12] of what was measured: implementation, data, sizes, epochs, options

and `record["plan"]` (written by harness.benchmark) says which request the run answered: suite name
(None for `run`), the digest of its resolved options, and the repeat index. `--resume` skips a
planned run when an "ok" record with the same plan exists for this machine and commit.

Reading. `load(*paths, **keys)` gives one row per epoch per run (`warmup` marks epoch 0) with the
key columns; `index(*paths, **keys)` gives one row per run (status included, failed runs too);
`read_records` gives the records themselves. The index is derived from the files on every read,
so it can never disagree with them.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

RECORD_SUFFIX = ".json"
SCHEMA = "dl-rosetta/run/1"
KEY_FIELDS = ("machine", "env", "commit", "config")
STATUSES = ("ok", "failed", "interrupted")  # what a saved record's status can be
RECORD_MARKERS = ("run_id", "impl", "config", "status", "schema")  # a JSON object with any of these is meant as a record


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_temp(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide published results from others
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` in one step (readers see the old or the new file, never half)."""
    tmp = _write_temp(Path(path), text)
    os.replace(tmp, path)


def write_new(path: Path, text: str) -> None:
    """Create `path` with `text` in one step; FileExistsError if it exists (append-only)."""
    tmp = _write_temp(Path(path), text)
    try:
        os.link(tmp, path)
    finally:
        os.unlink(tmp)


# ---- keys -----------------------------------------------------------------------------------

def machine_key(env: dict) -> str:
    return str(env.get("machine_id") or env.get("hostname") or "unknown")


def commit_key(env: dict) -> str:
    git = env.get("git") or {}
    commit = (git.get("commit") or "unknown")[:12]
    return commit + ("+dirty" if git.get("dirty") else "")


def env_digest(record: dict) -> str:
    env = record.get("environment") or {}
    facts = {k: env.get(k) for k in ("platform", "cpu", "cores", "memory_bytes", "python", "blas_env")}
    facts["gpus"] = [(g.get("name"), g.get("driver"), g.get("memory_mib")) for g in env.get("gpus") or []]
    facts["versions"] = record.get("versions") or {}
    return _digest(facts)


def config_digest(record: dict) -> str:
    impl, cfg = record["impl"], dict(record["config"])
    for volatile in ("repeat", "timeout_s"):
        cfg.pop(volatile, None)
    return _digest({"impl": [impl["lang"], impl["framework"], impl.get("backend"), impl["model"]], "config": cfg})


def record_key(record: dict) -> dict:
    """The record's store keys (computed for records written before keys existed)."""
    if record.get("key"):
        return record["key"]
    env = record.get("environment") or {}
    return {"machine": machine_key(env), "env": env_digest(record), "commit": commit_key(env),
            "config": config_digest(record)}


def save(record: dict, out_dir: Path) -> Path:
    """Add the record to the store under `out_dir`: epoch table (CSV) first, then the record (JSON)."""
    out_dir = Path(out_dir)
    record.setdefault("schema", SCHEMA)
    record["key"] = record_key(record)
    rows = epoch_rows([record])
    if rows:
        import pandas as pd

        write_new(out_dir / f"{record['run_id']}.epochs.csv", pd.DataFrame(rows).to_csv(index=False))
    path = out_dir / f"{record['run_id']}{RECORD_SUFFIX}"
    try:
        write_new(path, json.dumps(record, indent=1, default=str))
    except BaseException:  # no epoch table without its record
        if rows:
            (out_dir / f"{record['run_id']}.epochs.csv").unlink(missing_ok=True)
        raise
    return path


# ---- validation -----------------------------------------------------------------------------

_NUMBER = (int, float)


def _type_name(value) -> str:
    return "null" if value is None else type(value).__name__


def _want(value, types, where: str, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        return f"{where} is {value!r}, not a {'number' if types == _NUMBER else getattr(types, '__name__', types)}"
    if not isinstance(value, types):
        name = "number" if types == _NUMBER else getattr(types, "__name__", str(types))
        return f"{where} is {_type_name(value)} {json.dumps(value, default=str)[:40]}, not a {name}"
    return None


def record_problem(record) -> str | None:
    """Why `record` cannot be read as a run record (a wrong or missing field, named), or None.

    Checks what every reader (load, index, report, compare, stats) relies on, so none of them
    meets a wrong type later."""
    if not isinstance(record, dict):
        return f"a record is a JSON object, not {_type_name(record)}"
    for name, types, optional in (("run_id", str, False), ("status", str, False), ("impl", dict, False),
                                  ("config", dict, False), ("timing", dict, True), ("epochs", list, True),
                                  ("metrics", dict, True), ("environment", dict, True), ("plan", dict, True),
                                  ("key", dict, True), ("load_average", dict, True), ("started", str, True)):
        problem = _want(record.get(name), types, name, optional)
        if problem:
            return problem
    if record["status"] not in STATUSES:
        return f"status is {record['status']!r}; choices: {', '.join(STATUSES)}"
    impl, cfg = record["impl"], record["config"]
    for name in ("lang", "framework", "model"):
        problem = _want(impl.get(name), str, f"impl.{name}")
        if problem:
            return problem
    for name in ("backend", "label", "version"):
        problem = _want(impl.get(name), str, f"impl.{name}", optional=True)
        if problem:
            return problem
    for name, types, optional in (("data", str, False), ("batch_size", int, False), ("device", str, False),
                                  ("gpus", int, False), ("precision", str, False), ("n_train", int, True),
                                  ("epochs", int, True), ("seed", int, True), ("nodes", int, True),
                                  ("image_size", int, True), ("repeat", int, True)):
        problem = _want(cfg.get(name), types, f"config.{name}", optional)
        if problem:
            return problem
    for i, e in enumerate(record.get("epochs") or []):
        if not isinstance(e, dict):
            return f"epochs[{i}] is {_type_name(e)}, not an object"
        for name, types, optional in (("epoch", int, False), ("seconds", _NUMBER, False), ("steps", int, True),
                                      ("examples", int, True), ("examples_per_s", _NUMBER, True),
                                      ("loss", _NUMBER, True)):
            problem = _want(e.get(name), types, f"epochs[{i}].{name}", optional)
            if problem:
                return problem
    for table, fields in (("timing", ("startup_s", "import_s", "build_s", "first_epoch_s", "steady_s_per_epoch")),
                          ("metrics", ("test_accuracy", "final_loss"))):
        for name in fields:
            problem = _want((record.get(table) or {}).get(name), _NUMBER, f"{table}.{name}", optional=True)
            if problem:
                return problem
    env = record.get("environment") or {}
    for name in ("hostname", "machine_id", "cpu", "python", "platform"):
        problem = _want(env.get(name), str, f"environment.{name}", optional=True)
        if problem:
            return problem
    for name, types in (("gpus", list), ("git", dict)):
        problem = _want(env.get(name), types, f"environment.{name}", optional=True)
        if problem:
            return problem
    for i, g in enumerate(env.get("gpus") or []):
        if not isinstance(g, dict) or not isinstance(g.get("name"), str):
            return f"environment.gpus[{i}] has no name"
    git = env.get("git") or {}
    problem = _want(git.get("commit"), str, "environment.git.commit", optional=True)
    if problem:
        return problem
    before = (record.get("load_average") or {}).get("before")
    if before is not None and not (isinstance(before, list) and before and isinstance(before[0], _NUMBER)):
        return "load_average.before is not a list of numbers"
    if record.get("key") is not None:
        for name in KEY_FIELDS:
            problem = _want(record["key"].get(name), str, f"key.{name}")
            if problem:
                return problem
    plan = record.get("plan") or {}
    for name in ("suite", "config"):
        problem = _want(plan.get(name), str, f"plan.{name}", optional=True)
        if problem:
            return problem
    return None


# ---- reading --------------------------------------------------------------------------------

def _flat(record: dict) -> dict:
    impl, cfg, timing = record["impl"], record["config"], record.get("timing") or {}
    env = record.get("environment") or {}
    metrics = record.get("metrics") or {}
    plan = record.get("plan") or {}
    key = record_key(record)
    return {
        "run_id": record["run_id"], "status": record["status"], "label": impl.get("label"), "lang": impl["lang"],
        "framework": impl["framework"], "backend": impl.get("backend"), "model": impl["model"],
        "data": cfg["data"], "samples": cfg.get("n_train"), "batch_size": cfg["batch_size"],
        "epochs": cfg.get("epochs"), "seed": cfg.get("seed"),
        "device": cfg["device"], "gpus": cfg["gpus"], "nodes": cfg.get("nodes", 1), "precision": cfg["precision"],
        "compile": bool(cfg.get("compile")), "image_size": cfg.get("image_size"), "repeat": cfg.get("repeat"),
        "variant": variant_label(cfg.get("extra")),
        "startup_s": timing.get("startup_s"), "import_s": timing.get("import_s"), "build_s": timing.get("build_s"),
        "first_epoch_s": timing.get("first_epoch_s"), "steady_s_per_epoch": timing.get("steady_s_per_epoch"),
        "test_accuracy": metrics.get("test_accuracy"), "final_loss": metrics.get("final_loss"),
        "test_loss": metrics.get("test_loss"), "test_bits_per_byte": metrics.get("test_bits_per_byte"),
        "flops_per_example": record.get("flops_per_example"),
        "tokens_per_example": (record.get("flops") or {}).get("tokens_per_example"),
        "peak_flops_per_s": (record.get("flops") or {}).get("peak_per_s"),  # every replica's together
        "framework_version": impl.get("version"),
        "cpu": env.get("cpu"), "cores": env.get("cores"), "memory_bytes": env.get("memory_bytes"),
        "python": env.get("python"), "platform": env.get("platform"),
        "gpu": ", ".join(g["name"] for g in env.get("gpus") or []) or None, "hostname": env.get("hostname"),
        "commit": (env.get("git") or {}).get("commit"), "dirty": (env.get("git") or {}).get("dirty"),
        "started": record.get("started"),
        "load_1m": ((record.get("load_average") or {}).get("before") or [None])[0],
        **key, "commit_key": key["commit"],
        "suite": plan.get("suite"), "plan": plan.get("config"),
        # --task infer (harness.inference): its epochs are the warm-up and timed offline passes
        "task": record.get("task", "train"), "runtime": (record.get("runtime") or {}).get("name"),
    }


def variant_label(extra) -> str | None:
    """'data=r-arrays,loop=train_on_batch' for a run's --variant (RunOptions.extra["variant"]), None without."""
    variant = (extra or {}).get("variant") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(variant.items())) or None


def epoch_rows(records) -> list[dict]:
    rows = []
    for r in records:
        base = _flat(r)
        for e in r.get("epochs") or []:
            rows.append({**base, **e, "warmup": e["epoch"] == 0})
    return rows


def is_record(obj) -> bool:
    return record_problem(obj) is None


def record_files(paths) -> list[Path]:
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob(f"*{RECORD_SUFFIX}") if not f.name.startswith("."))
        elif p.exists():
            files.append(p)
        else:
            raise FileNotFoundError(f"no results at {p}")
    return files


def scan(paths, **keys) -> tuple[list[dict], list[tuple[str, str]]]:
    """(records, skipped): the run records under the given folders/files (recursively), optionally
    filtered by key, and (path, why) of every file that was meant as a record but cannot be read.

    keys: machine=, env=, commit= (a prefix of the commit key), config=, suite=. JSON objects with
    none of a record's keys are other tools' files and are neither records nor skipped."""
    out, skipped = [], []
    for f in record_files(paths):
        try:
            record = json.loads(f.read_text())
        except json.JSONDecodeError as e:  # records are written whole: this is damage
            skipped.append((str(f), f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})"))
            continue
        except UnicodeDecodeError as e:
            skipped.append((str(f), f"not valid JSON (not UTF-8 text: byte {e.start})"))
            continue
        except OSError as e:
            skipped.append((str(f), f"cannot be read ({e.strerror or e})"))
            continue
        if not isinstance(record, dict) or not any(k in record for k in RECORD_MARKERS):
            continue  # not ours: a report's or a bench script's JSON
        problem = record_problem(record)
        if problem:
            skipped.append((str(f), problem))
            continue
        record["_path"] = str(f)
        if _matches(record, keys):
            out.append(record)
    return out, skipped


def warn_skipped(skipped, stream=None) -> None:
    """One line per file a reader skipped, naming it and why."""
    for path, why in skipped:
        print(f"warning: skipped {path}: {why}", file=stream or sys.stderr)


def read_records(paths, **keys) -> list[dict]:
    """The run records under the given folders/files (recursively), optionally filtered by key;
    every file that cannot be read as one is skipped with a warning line on stderr (see `scan`)."""
    records, skipped = scan(paths, **keys)
    warn_skipped(skipped)
    return records


def _matches(record: dict, keys: dict) -> bool:
    key = record_key(record)
    for name, want in keys.items():
        if want is None:
            continue
        if name == "suite":
            have = (record.get("plan") or {}).get("suite")
            if have != want:
                return False
        elif name == "commit":
            if not key["commit"].startswith(want):
                return False
        elif name in KEY_FIELDS:
            if key[name] != want:
                return False
        else:
            raise TypeError(f"unknown key {name!r}; choices: {', '.join(KEY_FIELDS + ('suite',))}")
    return True


def load(*paths, **keys):
    """All epoch rows of the records under the given folders/files, as one pandas DataFrame."""
    import pandas as pd

    return pd.DataFrame(epoch_rows(read_records(paths or ["results"], **keys)))


def to_frame(records):
    """Records already in memory as the same DataFrame `load` gives."""
    import pandas as pd

    return pd.DataFrame(epoch_rows(records))


def index(*paths, **keys):
    """One row per run (failed runs included), with the record's path: the store's index."""
    import pandas as pd

    records = read_records(paths or ["results"], **keys)
    return pd.DataFrame([{**_flat(r), "path": r["_path"], "plan_repeat": (r.get("plan") or {}).get("repeat")}
                         for r in records])
