"""`python -m harness compare BASE NEW`: is NEW slower than BASE, row by row? (exit 1 if so)

Rows are (implementation, model, setup, data size, batch): `harness.stats.ROW_KEYS`; the machine
is not part of a row, so two machines or two library versions compare directly. Per row: the
ratio of the median steady seconds per epoch (NEW / BASE; above 1 = slower) and a two-sided
Mann-Whitney U test on the raw samples (every steady epoch of every run). A row regresses when
the ratio exceeds 1 + threshold and the test is significant at --alpha. When the samples are too
few for the test ever to reach --alpha (e.g. 3 against 3: smallest p = 0.1), the ratio alone
decides, and the row says so. A row whose every NEW run failed regresses too.
BASE and NEW are results folders or record files; --base-commit/--new-commit pick two commits
out of one store.
"""
from __future__ import annotations

import argparse
import json
import math
import sys

from harness.cli_options import probability


def fraction(text: str) -> float:
    try:
        value = float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction (0.1) or a percentage (10%)") from None
    if not 0 < value < 10:
        raise argparse.ArgumentTypeError(f"{text} is out of range: give e.g. 0.1 or 10%")
    return value


def add_arguments(p) -> None:
    p.add_argument("base", help="results folder or record file of the baseline")
    p.add_argument("new", help="results folder or record file to check against it")
    p.add_argument("--threshold", type=fraction, default=0.10,
                   help="slower by more than this is a regression: 0.1 or 10%% (default: 10%%)")
    p.add_argument("--alpha", type=probability, default=0.05, help="significance level of the test (default: 0.05)")
    p.add_argument("--base-commit", help="only BASE runs of this commit (prefix)")
    p.add_argument("--new-commit", help="only NEW runs of this commit (prefix)")
    p.add_argument("--format", default="table", choices=("table", "json"))


def min_p_value(n1: int, n2: int) -> float:
    """The smallest two-sided p an exact Mann-Whitney test can give for these sample sizes."""
    return min(1.0, 2.0 / math.comb(n1 + n2, n1))


def verdict(ratio: float, p: float, decidable: bool, threshold: float, alpha: float) -> str:
    sure = (p < alpha) if decidable else True
    if ratio > 1 + threshold:
        return "slower" if sure else "slower? (not significant)"
    if ratio < 1 / (1 + threshold):
        return "faster" if sure else "faster? (not significant)"
    return "same"


def compare(base_frame, new_frame, base_index, new_index, threshold: float = 0.10, alpha: float = 0.05) -> list[dict]:
    import numpy as np
    from scipy.stats import mannwhitneyu

    from harness import stats

    base, new = stats.steady_samples(base_frame), stats.steady_samples(new_frame)

    def statuses(index):
        if index.empty:
            return {}
        return {k: set(g["status"]) for k, g in stats.groups(index, stats.ROW_KEYS)}

    new_status = statuses(new_index)
    label = {}
    for frame in (base_index, new_index):
        if not frame.empty:
            for k, g in stats.groups(frame, stats.ROW_KEYS):
                label.setdefault(k, g["label"].iloc[0])
    rows = []
    for key in list(dict.fromkeys(list(base) + list(new) + list(new_status))):
        row = dict(zip(stats.ROW_KEYS, key))
        row["label"] = label.get(key, "?") + (" compiled" if row["compile"] else "")
        row["setup"] = f"{row['device']} x{row['gpus']} {row['precision']}"
        b, n = base.get(key), new.get(key)
        row.update(n_base=0 if b is None else len(b), n_new=0 if n is None else len(n))
        if b is None or len(b) == 0:
            row.update(verdict="new row (not in BASE)")
        elif n is None or len(n) == 0:
            failed = new_status.get(key) == {"failed"}
            row.update(base_s=float(np.median(b)), verdict="failed in NEW" if failed else "missing in NEW")
        else:
            mb, mn = float(np.median(b)), float(np.median(n))
            p = float(mannwhitneyu(n, b, alternative="two-sided").pvalue)
            decidable = min_p_value(len(b), len(n)) < alpha
            ratio = mn / mb
            row.update(base_s=mb, new_s=mn, ratio=ratio, change=ratio - 1, p=p, decidable=decidable,
                       verdict=verdict(ratio, p, decidable, threshold, alpha))
        rows.append(row)
    return rows


def regressions(rows) -> list[dict]:
    return [r for r in rows if r["verdict"] in ("slower", "failed in NEW")]


def main(args) -> int:
    from harness import results
    from harness.summary import num
    from harness.errors import UsageError

    try:
        import scipy  # noqa: F401
    except ImportError:
        raise UsageError("compare needs scipy: pip install -e '.[report]'") from None
    frames = {}
    for name, path, commit in (("BASE", args.base, args.base_commit), ("NEW", args.new, args.new_commit)):
        try:
            frames[name] = (results.load(path, commit=commit), results.index(path, commit=commit))
        except FileNotFoundError:
            raise UsageError(f"{name}: no results at {path}") from None
        if frames[name][1].empty:
            raise UsageError(f"{name}: no run records at {path}" + (f" for commit {commit}" if commit else ""))
    (base_frame, base_index), (new_frame, new_index) = frames["BASE"], frames["NEW"]
    rows = compare(base_frame, new_frame, base_index, new_index, args.threshold, args.alpha)
    if not any("ratio" in r for r in rows):
        raise UsageError(f"BASE and NEW have no row in common (rows: implementation, model, setup, samples, batch); "
                         f"BASE: {args.base}, NEW: {args.new}")
    bad = regressions(rows)
    if args.format == "json":
        print(json.dumps({"threshold": args.threshold, "alpha": args.alpha, "rows": rows,
                          "regressions": len(bad)}, indent=1, default=str))
    else:
        import pandas as pd

        table = pd.DataFrame([{
            "implementation": r["label"], "setup": r["setup"], "samples": r["samples"],
            "BASE s/epoch": num(r.get("base_s")), "NEW s/epoch": num(r.get("new_s")),
            "ratio": f"{r['ratio']:.3f}" if "ratio" in r else "–",
            "change": f"{r['change']:+.1%}" if "change" in r else "–",
            "p (Mann-Whitney)": (f"{r['p']:.3g}" + ("" if r["decidable"] else " (n too small)")) if "p" in r else "–",
            "n BASE/NEW": f"{r['n_base']}/{r['n_new']}", "verdict": r["verdict"]} for r in rows])
        print(table.to_string(index=False))
        limit = f"{args.threshold:.0%}"
        if bad:
            print(f"\n{len(bad)} row(s) regressed beyond {limit}: " + ", ".join(r["label"] for r in bad),
                  file=sys.stderr)
        else:
            print(f"\nno row slower beyond {limit} (alpha {args.alpha})", file=sys.stderr)
    return 1 if bad else 0
