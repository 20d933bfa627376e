"""The summary table of a set of run records, the same for `run`, `suite` and `report`.

One row per implementation x model x setup (harness.stats.summarize): steady seconds per epoch
(median, IQR, 95 % interval of the median), examples/s, first epoch, start-up, test accuracy
with its parity flag. Failed runs are listed under the table with their errors.
"""
from __future__ import annotations

import math
import re

from harness.registry import BACKEND_NAMES, display_name

_MARKDOWN = re.compile(r"([\\`*_\[\]<>#|~])")  # ( ) and ! only matter next to [ ], escaped here


def markdown_text(text) -> str:
    """Text from records, safe inside Markdown (a table cell or a line): every character Markdown
    could read as markup is backslash-escaped, a line break becomes a space."""
    return _MARKDOWN.sub(r"\\\1", " ".join(str(text).split()))


def num(v) -> str:
    """A number for a table: three significant figures at most, '–' for none."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    a = abs(v)
    if a >= 100:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def none_if_missing(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def row_name(r) -> str:
    """e.g. 'PyTorch 2.13.0', 'Keras 3.15.0 (JAX)', 'R Keras 3.15.0 (TF)'."""
    name = display_name(r["lang"], r["framework"])
    if none_if_missing(r.get("version")):
        name += f" {r['version']}"
    if none_if_missing(r.get("backend")):
        name += f" ({BACKEND_NAMES.get(r['backend'], r['backend'])})"
    if r.get("compile"):
        name += ", compiled"
    return name


def accuracy_cell(r) -> str:
    a = none_if_missing(r["test_accuracy"])
    if a is None:
        return "–"
    return f"{a:.3f}" + ("" if r["accuracy_parity"] else " ⚠")


def format_summary(summary):
    """The summary (harness.stats.summarize) as strings, for a terminal."""
    import pandas as pd

    rows = []
    for _, r in summary.iterrows():
        rows.append({"implementation": r["label"] + (" compiled" if r["compile"] else ""),
                     "setup": f"{r['device']} x{r['gpus']} {r['precision']}",
                     "runs": r["runs"], "n": r["n"], "s/epoch": num(r["median_s"]), "IQR": num(r["iqr_s"]),
                     "95% CI": f"{num(r['ci_low_s'])}–{num(r['ci_high_s'])}" if none_if_missing(r["ci_level"])
                     else "n<6",
                     "examples/s": num(r["median_eps"]), "first epoch s": num(r["first_epoch_s"]),
                     "start-up s": num(r["startup_s"]), "test acc": accuracy_cell(r)})
    return pd.DataFrame(rows)


def text(records: list[dict]) -> str:
    """The summary of these records, and one line per failed run, as terminal text."""
    from harness import results, stats

    ok = [r for r in records if r["status"] == "ok"]
    summary = stats.summarize(results.to_frame(ok)) if ok else None
    lines = [format_summary(summary).to_string(index=False) if summary is not None and not summary.empty
             else "no successful runs"]
    for r in records:
        if r["status"] not in ("ok", "replica"):
            lines.append(f"failed {r['impl']['label']} r{r['config']['repeat']}: {r['error']}")
    return "\n".join(lines)
