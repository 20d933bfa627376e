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

Each row warns when its two sides differ in what should be equal for a fair comparison: the
machine, the environment digest (hardware, OS, Python and package versions; a framework upgrade
is named), or the epochs per run; and when either side was measured on a loaded machine (the
1-minute load average before a run above the core count). `--only-changed` hides the rows that
are the same and the rows present on one side only.
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
    p.add_argument("--alpha", type=probability, default=0.05, help="significance level of the test, between 0 and 1 "
                   "(default: 0.05)")
    p.add_argument("--base-commit", help="only BASE runs of this commit (prefix)")
    p.add_argument("--new-commit", help="only NEW runs of this commit (prefix)")
    p.add_argument("--only-changed", action="store_true", help="hide rows that are the same and rows present on "
                   "one side only")
    p.add_argument("--format", default="table", choices=("table", "json"),
                   help="table: one line per row with its verdict and warnings; json: every row with ratio, p, "
                        "samples and warnings, and the regression count (default: %(default)s)")


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
    sides = {name: _sides(index) for name, index in (("base", base_index), ("new", new_index))}
    label = {}
    for frame in (base_index, new_index):
        if not frame.empty:
            for k, g in stats.groups(frame, stats.ROW_KEYS):
                label.setdefault(k, g["label"].iloc[0])
    rows = []
    for key in list(dict.fromkeys(list(base) + list(new) + list(new_status))):
        row = dict(zip(stats.ROW_KEYS, key))
        row["label"] = label.get(key, "?") + (" compiled" if row["compile"] else "") + \
            (f" infer:{row['runtime']}" if row.get("task") == "infer" else "")
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
        row["warnings"] = warnings(sides["base"].get(key), sides["new"].get(key))
        rows.append(row)
    return rows


def _sides(index) -> dict:
    """{row key: the facts of that side's runs} for the warnings."""
    if index.empty:
        return {}
    from harness import stats

    out = {}
    for k, g in stats.groups(index, stats.ROW_KEYS):
        load = g["load_1m"].dropna() if "load_1m" in g else ()
        cores = g["cores"].dropna() if "cores" in g else ()
        out[k] = {"machine": set(g["machine"].dropna()), "env": set(g["env"].dropna()),
                  "epochs": set(g["epochs"].dropna().astype(int)),
                  "version": set(g["framework_version"].dropna()),
                  "hardware": set((g["cpu"].fillna("?") + " x" + g["cores"].astype(str)).dropna()),
                  "loaded": bool(len(load) and len(cores) and load.max() > cores.iloc[0]),
                  "load": float(load.max()) if len(load) else None, "cores": int(cores.iloc[0]) if len(cores) else None}
    return out


def warnings(base: dict | None, new: dict | None) -> list[str]:
    """Why this row's two sides may not be comparable (empty when they are, or one side is absent)."""
    out = []
    if base and new:
        if base["machine"] != new["machine"]:
            out.append(f"machine differs: BASE {', '.join(sorted(base['hardware']))} "
                       f"({', '.join(sorted(base['machine']))}), NEW {', '.join(sorted(new['hardware']))} "
                       f"({', '.join(sorted(new['machine']))})")
        if base["version"] != new["version"]:
            out.append(f"framework version differs: {', '.join(sorted(base['version']))} -> "
                       f"{', '.join(sorted(new['version']))}")
        elif base["env"] != new["env"] and base["machine"] == new["machine"]:  # another machine has its own
            out.append(f"environment differs (digest {', '.join(sorted(base['env']))} -> "
                       f"{', '.join(sorted(new['env']))}: hardware, OS, Python or package versions)")
        if base["epochs"] != new["epochs"]:
            out.append(f"epochs per run differ: {'/'.join(map(str, sorted(base['epochs'])))} -> "
                       f"{'/'.join(map(str, sorted(new['epochs'])))}")
    for name, side in (("BASE", base), ("NEW", new)):
        if side and side["loaded"]:
            out.append(f"{name} measured on a loaded machine (load {side['load']:.1f} on {side['cores']} cores)")
    return out


def changed(row: dict) -> bool:
    """A row --only-changed keeps: a verdict other than 'same', on both sides (or failed in NEW)."""
    return row["verdict"] not in ("same", "missing in NEW", "new row (not in BASE)")


def regressions(rows) -> list[dict]:
    return [r for r in rows if r["verdict"] in ("slower", "failed in NEW")]


def main(args) -> int:
    from harness import results
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
    shown = [r for r in rows if changed(r)] if args.only_changed else rows
    if args.format == "json":
        print(json.dumps({"threshold": args.threshold, "alpha": args.alpha, "rows": shown,
                          "hidden": len(rows) - len(shown), "regressions": len(bad)}, indent=1, default=str))
    else:
        print(table(shown))
        limit = f"{args.threshold:.0%}"
        if args.only_changed:
            print(f"\n{len(rows) - len(shown)} of {len(rows)} rows hidden (same, or on one side only)", file=sys.stderr)
        warned = sum(bool(r["warnings"]) for r in shown)
        if warned:
            print(f"{warned} row(s) with warnings (!): their sides may not be comparable", file=sys.stderr)
        if bad:
            print(f"\n{len(bad)} row(s) regressed beyond {limit}: " + ", ".join(r["label"] for r in bad),
                  file=sys.stderr)
        else:
            print(f"\nno row slower beyond {limit} (alpha {args.alpha})", file=sys.stderr)
    return 1 if bad else 0


def table(rows) -> str:
    """The rows as a terminal table; each row's warnings are listed under it, by implementation."""
    from rich import box
    from rich.table import Table

    from harness.summary import num, render, row

    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in ("implementation", "setup", "samples", "BASE s/epoch", "NEW s/epoch", "NEW/BASE", "change",
                   "p (Mann-Whitney)", "n BASE/NEW", "verdict"):
        t.add_column(column, justify="left" if column in ("implementation", "setup", "verdict") else "right",
                     no_wrap=column == "implementation")
    for r in rows:
        t.add_row(*row(r["label"], r["setup"], r["samples"], num(r.get("base_s")), num(r.get("new_s")),
                       f"{r['ratio']:.3f}" if "ratio" in r else "–", f"{r['change']:+.1%}" if "change" in r else "–",
                       (f"{r['p']:.3g}" + ("" if r["decidable"] else " (n too small)")) if "p" in r else "–",
                       f"{r['n_base']}/{r['n_new']}", r["verdict"] + (" !" if r["warnings"] else "")))
    notes = [f"! {r['label']} ({r['setup']}): {w}" for r in rows for w in r["warnings"]]
    return render(t) + ("\n\n" + "\n".join(notes) if notes else "")
