"""Statistics per (implementation, model, setup) from the tidy epoch rows of `harness.results.load`.

Samples. Every steady epoch (all but epoch 0) of every successful run is one sample of seconds per
epoch, pooled over runs (as asv pools its samples over processes); `n` counts them and `runs`
counts the runs. Epoch 0 (warm-up, compilation) and start-up are reported apart, one value per run.

Spread. Median, quartiles and IQR by linear interpolation (numpy's default). The 95 % interval for
the median is distribution-free, scipy.stats.quantile_test's: the order statistics
(x_(j), x_(n+1-j)) with the largest j whose binomial(n, 1/2) coverage 1 - 2 P(B <= j-1) is still
>= 95 %; its exact coverage is given. It needs n >= 6 samples; below that it is left empty (NaN)
rather than made up. A ratio of two rows' medians (x PyTorch) gets a bootstrap interval
(scipy.stats.bootstrap, percentile method), also only from 6 samples a side. Pooled epochs of one
process are not fully independent, so read it as the spread of this machine's samples, with the
run-to-run part visible in the IQR.

Accuracy is a parity check, not a ranking: every row of one model and data set is compared with
the median accuracy of all rows; a row further away than `ACCURACY_TOLERANCE` is flagged.
"""
from __future__ import annotations

import functools
import math

import numpy as np

# one row of a table: what was run, on which setup, with which amount of work per epoch
ROW_KEYS = ("lang", "framework", "backend", "model", "device", "gpus", "nodes", "precision", "compile", "image_size",
            "data", "samples", "batch_size", "variant", "task", "runtime")  # task/runtime: inference rows stay apart
ACCURACY_TOLERANCE = 0.05  # absolute, i.e. 5 points of test accuracy
LEVEL = 0.95
MIN_CI = 6  # fewer samples than this give no 95 % interval for a median (the smallest with one: n = 6)


def median_ci(values, level: float = LEVEL) -> tuple[float, float, float]:
    """Distribution-free interval for the median: (low, high, exact coverage); NaNs when n is too small.

    The interval is scipy.stats.quantile_test(...).confidence_interval(): the order statistics
    (x_(j), x_(n+1-j)) with j = binom(n, 1/2).ppf((1 - level) / 2), the largest j whose coverage
    P(j <= B <= n - j), B ~ binomial(n, 1/2), is still >= level. That coverage is returned as well."""
    from scipy.stats import quantile_test

    x = np.asarray(values, dtype=float)
    n = len(x)
    if n == 0:
        return math.nan, math.nan, math.nan
    ci = quantile_test(x, q=float(np.median(x)), p=0.5).confidence_interval(level)
    if math.isnan(ci.low) or math.isnan(ci.high):
        return math.nan, math.nan, math.nan
    return float(ci.low), float(ci.high), _coverage(n, level)


@functools.lru_cache(maxsize=None)
def _coverage(n: int, level: float) -> float:
    """The exact coverage of scipy's pair (x_(j), x_(n+1-j)): P(j <= B <= n - j), B ~ binomial(n, 1/2)."""
    from scipy.stats import binom

    j = int(binom(n, 0.5).ppf((1 - level) / 2))  # the rank scipy takes for the lower end (1-based)
    return float(binom.cdf(n - j, n, 0.5) - binom.cdf(j - 1, n, 0.5))


def ratio_ci(new, base, level: float = LEVEL, seed: int = 0) -> tuple[float, float]:
    """Interval for median(new) / median(base) (e.g. a row's seconds per epoch over PyTorch's):
    scipy.stats.bootstrap over the two independent samples (percentile method, 2,000 resamples,
    seeded so a report is reproducible). NaNs when either side has fewer than MIN_CI samples."""
    from scipy.stats import bootstrap

    a, b = np.asarray(new, dtype=float), np.asarray(base, dtype=float)
    if min(len(a), len(b)) < MIN_CI:
        return math.nan, math.nan
    if np.ptp(a) == 0 and np.ptp(b) == 0:  # no spread at all: the ratio is what it is
        r = float(np.median(a) / np.median(b))
        return r, r

    def ratio(x, y, axis=-1):
        return np.median(x, axis=axis) / np.median(y, axis=axis)

    res = bootstrap((a, b), ratio, n_resamples=2000, confidence_level=level, method="percentile",
                    rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


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


clean_key = _clean


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
            "ci_low_eps": eps["ci_low"], "ci_high_eps": eps["ci_high"],
            "first_epoch_s": _median(g[g["warmup"].astype(bool)]["seconds"]),
            "startup_s": _median(start), "build_s": _median(runs["build_s"]),
            "test_accuracy": _median(runs["test_accuracy"]),
            **throughput(eps["median"], runs),
            "accuracy_min": float(runs["test_accuracy"].min()), "accuracy_max": float(runs["test_accuracy"].max()),
            **load(runs),
        })
    out = pd.DataFrame(rows)
    parity_keys = ["model", "data", "samples"]
    reference = out.groupby(parity_keys, dropna=False)["test_accuracy"].transform("median")
    out["accuracy_reference"] = reference
    out["accuracy_parity"] = (out["test_accuracy"] - reference).abs() <= ACCURACY_TOLERANCE
    out["scaling_efficiency"] = scaling_efficiency(out, [k for k in keys if k not in ("gpus", "nodes", "batch_size")])
    same = [k for k in keys if k not in IMPLEMENTATION_KEYS]
    out = out.join(against_reference(out, steady_samples(ok, keys), keys, same))
    return out


def load(runs) -> dict:
    """The machine's load around a row's runs: the highest 1-minute load average seen before a run,
    the core count, and `loaded` when that load exceeded the cores (other work competed for them)."""
    before = runs["load_1m"].dropna() if "load_1m" in runs else ()
    cores = runs["cores"].dropna() if "cores" in runs else ()
    load_max = float(before.max()) if len(before) else math.nan
    n_cores = int(cores.iloc[0]) if len(cores) else None
    return {"load_max": load_max, "load_median": float(before.median()) if len(before) else math.nan,
            "cores": n_cores, "loaded": bool(n_cores and load_max > n_cores)}


# what makes two rows different implementations of the same measurement
IMPLEMENTATION_KEYS = ("lang", "framework", "backend", "compile", "framework_version", "variant")
REFERENCE = {"lang": "python", "framework": "pytorch", "compile": False}  # the "x PyTorch" column's row


def against_reference(summary, samples: dict, keys, same: list[str]):
    """x_pytorch: PyTorch's median seconds per epoch over this row's (above 1: faster than PyTorch),
    with its 95 % bootstrap interval (ratio_ci), against the PyTorch row with the same `same` values
    (machine, setup, model, data, batch...). NaN where there is no such row."""
    import pandas as pd

    def ident(r):
        return tuple(None if isinstance(r[k], float) and math.isnan(r[k]) else r[k] for k in same)

    refs = {}
    for _, r in summary.iterrows():
        if (all(r[k] == v for k, v in REFERENCE.items()) and not isinstance(r.get("backend"), str)
                and not isinstance(r.get("variant"), str)):
            refs.setdefault(ident(r), tuple(r[k] for k in keys))
    out = []
    for _, r in summary.iterrows():
        ref = refs.get(ident(r))
        mine = tuple(r[k] for k in keys)
        if ref is None:
            out.append((math.nan, math.nan, math.nan))
            continue
        row_s, ref_s = samples.get(_clean(mine)), samples.get(_clean(ref))
        if row_s is None or ref_s is None or not len(row_s) or not len(ref_s):
            out.append((math.nan, math.nan, math.nan))
            continue
        if mine == ref:  # the reference itself: 1 by definition, no interval
            out.append((1.0, math.nan, math.nan))
            continue
        # speed ratio = median(ref s/epoch) / median(row s/epoch): ratio_ci of (ref, row)
        low, high = ratio_ci(ref_s, row_s)
        out.append((float(np.median(ref_s) / np.median(row_s)), low, high))
    return pd.DataFrame(out, index=summary.index, columns=["x_pytorch", "x_pytorch_low", "x_pytorch_high"])


def throughput(median_eps: float, runs) -> dict:
    """Tokens/s (models with tokens per example: the transformer) and MFU (achieved FLOP/s over the
    measured matmul peak of every replica, harness.peak) at the median steady examples/s."""
    def first(col):
        values = runs[col].dropna() if col in runs else []
        return float(values.iloc[0]) if len(values) else math.nan

    tokens, flops, peak = first("tokens_per_example"), first("flops_per_example"), first("peak_flops_per_s")
    return {"median_tokens_per_s": median_eps * tokens, "flops_per_example": flops,
            "achieved_flops_per_s": median_eps * flops, "mfu": median_eps * flops / peak,
            "test_bits_per_byte": _median(runs["test_bits_per_byte"]) if "test_bits_per_byte" in runs else math.nan}


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
