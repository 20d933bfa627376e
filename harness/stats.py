"""Statistics per (implementation, model, setup) from the tidy epoch rows of `harness.results.load`.

Samples. Every steady epoch (all but epoch 0) of every successful run is one sample of seconds per
epoch, pooled over runs (as asv pools its samples over processes); `n` counts them and `runs`
counts the runs. Epoch 0 (warm-up, compilation) and start-up are reported apart, one value per run.

Spread. Median, quartiles and IQR by linear interpolation (numpy's default). The 95 % interval for
the median is distribution-free: the order statistics (x_(j), x_(n+1-j)) with the largest j whose
binomial(n, 1/2) coverage 1 - 2 P(B <= j-1) is still >= 95 %; its exact coverage is given. It
needs n >= 6 samples; below that it is left empty (NaN) rather than made up. Pooled epochs of one
process are not fully independent, so read it as the spread of this machine's samples, with the
run-to-run part visible in the IQR.

Accuracy is a parity check, not a ranking: every row of one model and data set is compared with
the median accuracy of all rows; a row further away than `ACCURACY_TOLERANCE` is flagged.
"""
from __future__ import annotations

import math

import numpy as np

# one row of a table: what was run, on which setup, with which amount of work per epoch
ROW_KEYS = ("lang", "framework", "backend", "model", "device", "gpus", "nodes", "precision", "compile", "image_size",
            "data", "samples", "batch_size", "task", "runtime")  # task/runtime: inference rows stay apart
ACCURACY_TOLERANCE = 0.05  # absolute, i.e. 5 points of test accuracy
LEVEL = 0.95


def median_ci(values, level: float = LEVEL) -> tuple[float, float, float]:
    """Distribution-free interval for the median: (low, high, exact coverage); NaNs when n is too small."""
    x = np.sort(np.asarray(values, dtype=float))
    n = len(x)
    best = None
    for j in range(1, n // 2 + 1):  # interval (x_(j), x_(n+1-j)), 1-based
        coverage = 1.0 - 2.0 * sum(math.comb(n, i) for i in range(j)) / 2.0 ** n
        if coverage >= level:
            best = (j, coverage)
        else:
            break
    if best is None:
        return math.nan, math.nan, math.nan
    j, coverage = best
    return float(x[j - 1]), float(x[n - j]), coverage


def describe(values) -> dict:
    """median, q1, q3, iqr, ci_low, ci_high, ci_level, n of one set of samples."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if len(x) == 0:
        return {"median": math.nan, "q1": math.nan, "q3": math.nan, "iqr": math.nan,
                "ci_low": math.nan, "ci_high": math.nan, "ci_level": math.nan, "n": 0}
    q1, med, q3 = np.percentile(x, [25, 50, 75])
    low, high, coverage = median_ci(x)
    return {"median": float(med), "q1": float(q1), "q3": float(q3), "iqr": float(q3 - q1),
            "ci_low": low, "ci_high": high, "ci_level": coverage, "n": int(len(x))}


def _clean(key) -> tuple:
    """A group key with pandas' missing values (NaN for a None backend) as None, so keys compare equal."""
    key = key if isinstance(key, tuple) else (key,)
    return tuple(None if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in key)


def groups(frame, keys=ROW_KEYS):
    """(clean key tuple, sub-frame) per group, missing values kept as their own group."""
    for key, g in frame.groupby(list(keys), dropna=False, sort=False):
        yield _clean(key), g


def steady_samples(frame, keys=ROW_KEYS) -> dict:
    """{row key tuple: array of steady seconds/epoch samples} from successful runs."""
    if frame.empty:
        return {}
    ok = frame[(frame["status"] == "ok") & (~frame["warmup"].astype(bool))]
    return {k: g["seconds"].to_numpy(float) for k, g in groups(ok, keys)}


def _median(series) -> float:
    values = series.dropna()
    return float(values.median()) if len(values) else math.nan


def summarize(frame, keys=ROW_KEYS):
    """One row per `keys` group: steady s/epoch and examples/s with spread, first epoch, start-up,
    accuracy and its parity flag. `frame` is `harness.results.load(...)`; failed runs are left out."""
    import pandas as pd

    if frame.empty:
        return pd.DataFrame()
    ok = frame[frame["status"] == "ok"]
    rows = []
    for key, g in groups(ok, keys):
        steady = g[~g["warmup"].astype(bool)]
        runs = g.drop_duplicates("run_id")
        s = describe(steady["seconds"])
        eps = describe(steady["examples_per_s"])
        start = runs[["startup_s", "import_s", "build_s"]].sum(axis=1, min_count=1)
        rows.append({
            **dict(zip(keys, key)),
            "label": runs["label"].iloc[0], "version": runs["framework_version"].dropna().iloc[0]
            if runs["framework_version"].notna().any() else None,
            "runs": len(runs), "n": s["n"],
            "median_s": s["median"], "q1_s": s["q1"], "q3_s": s["q3"], "iqr_s": s["iqr"],
            "ci_low_s": s["ci_low"], "ci_high_s": s["ci_high"], "ci_level": s["ci_level"],
            "median_eps": eps["median"], "q1_eps": eps["q1"], "q3_eps": eps["q3"],
            "first_epoch_s": _median(g[g["warmup"].astype(bool)]["seconds"]),
            "startup_s": _median(start), "build_s": _median(runs["build_s"]),
            "test_accuracy": _median(runs["test_accuracy"]),
            "accuracy_min": float(runs["test_accuracy"].min()), "accuracy_max": float(runs["test_accuracy"].max()),
        })
    out = pd.DataFrame(rows)
    parity_keys = ["model", "data", "samples"]
    reference = out.groupby(parity_keys, dropna=False)["test_accuracy"].transform("median")
    out["accuracy_reference"] = reference
    out["accuracy_parity"] = (out["test_accuracy"] - reference).abs() <= ACCURACY_TOLERANCE
    out["scaling_efficiency"] = scaling_efficiency(out, [k for k in keys if k not in ("gpus", "nodes", "batch_size")])
    return out


def replicas(rows):
    """Data-parallel replicas of each row: GPUs per node x nodes."""
    return rows["gpus"] * rows["nodes"]


def scaling_efficiency(summary, same: list[str]):
    """examples/s on N replicas (GPUs x nodes) / (N x examples/s of the same row on one device);
    NaN without one.

    `same` names what must match (machine, implementation, model, precision, data, samples...);
    the batch is left out, since weak scaling multiplies the global batch by N."""
    ident = summary[same].apply(lambda r: repr(tuple(r)), axis=1)
    n = replicas(summary)
    single = n == 1
    base = ident.map(dict(zip(ident[single], summary.loc[single, "median_eps"])))
    return summary["median_eps"] / (n * base)
