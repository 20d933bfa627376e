"""The summary table of a set of run records, the same for `run`, `suite` and `report`.

One row per implementation x model x setup (harness.stats.summarize). Its columns carry the same
names and meanings as the report's (COLUMNS below is the one vocabulary for both):

    s/epoch            median steady seconds per epoch (every epoch after the first)
    95 % CI            the distribution-free 95 % interval of that median ("n < 6": too few samples)
    images/s, tokens/s median steady throughput: images for the image models, tokens (examples x
                       sequence length) for the sequence models
    × PyTorch          PyTorch's median s/epoch over this row's, same machine, setup and work
    first epoch s      the first epoch (warm-up, compilation), median over runs
    start-up s         process spawn + framework import + model build, median over runs
    test acc           test accuracy (⚠: more than 5 points from the median of that model's rows)
    n                  steady epochs pooled / runs

Terminal tables are rich tables that fit the terminal; failed runs are listed under the table.
"""
from __future__ import annotations

import math
import re
import shutil

from harness.registry import BACKEND_NAMES, LANGUAGES, display_name

COLUMNS = {
    "median_s": "s/epoch",
    "ci": "95 % CI of s/epoch",
    "x_pytorch": "× PyTorch",
    "mfu": "MFU",
    "first_epoch_s": "first epoch s",
    "startup_s": "start-up s",
    "test_accuracy": "test acc",
    "n": "n epochs/runs",
}
MEANINGS = {
    "median_s": "median steady seconds per epoch (every epoch after the first)",
    "ci": "distribution-free 95 % interval of the median (scipy.stats.quantile_test); needs n ≥ 6 steady epochs",
    "throughput": "median steady throughput: images/s for image models, tokens/s (examples × sequence length) "
                  "for sequence models",
    "x_pytorch": "PyTorch's median s/epoch over this row's, same machine, setup and work (above 1: faster than "
                 "PyTorch), with its 95 % bootstrap interval",
    "mfu": "model FLOPs utilisation: FLOPs per example (forward + backward, from the spec) x examples/s over "
           "the device's measured dense matmul peak in the same framework, precision and threads",
    "first_epoch_s": "the first epoch (warm-up, compilation), median over runs",
    "startup_s": "process spawn + framework import + model build, median over runs",
    "test_accuracy": "test accuracy, a parity check (⚠: more than 5 points from the median of that model's rows)",
    "n": "steady epochs pooled / runs",
    "loaded": "⚑: the 1-minute load average before a run exceeded the machine's cores",
}


COLUMN_KEYS = ("model", "data", "samples", "batch_size", "image_size")  # a workload: a report's column

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


def percent(v) -> str:
    """A share as a percentage for a table (MFU): '12.3 %', '–' for none."""
    v = none_if_missing(v)
    return "–" if v is None else f"{num(100 * v)} %"


def none_if_missing(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def interval(low, high) -> str:
    """'1.02–1.10', or '–' without an interval."""
    if none_if_missing(low) is None or none_if_missing(high) is None:
        return "–"
    return f"{num(low)}–{num(high)}"


def ci_cell(r) -> str:
    return interval(r["ci_low_s"], r["ci_high_s"]) if none_if_missing(r["ci_level"]) else "n < 6"


def ratio_cell(r) -> str:
    """'1.32× (1.20–1.41)', '1.32×' without an interval, '–' without a PyTorch row."""
    x = none_if_missing(r.get("x_pytorch"))
    if x is None:
        return "–"
    text = f"{x:.2f}×"
    if none_if_missing(r.get("x_pytorch_low")) is not None:
        text += f" ({r['x_pytorch_low']:.2f}–{r['x_pytorch_high']:.2f})"
    return text


def throughput(model: str) -> tuple[str, float]:
    """(unit, examples -> unit factor): ('images/s', 1) for image models, ('tokens/s', sequence length)
    for sequence models (their examples are token sequences)."""
    from harness.specs import SPECS

    spec = SPECS.get(model)
    if spec is None:
        return "examples/s", 1.0
    if spec.input_dtype.startswith("int"):
        return "tokens/s", float(math.prod(spec.input_shape))
    return "images/s", 1.0


def row_name(r) -> str:
    """e.g. 'PyTorch 2.13.0', 'Keras 3.15.0 (JAX)', 'R Keras 3.15.0 (TF)'."""
    name = display_name(r["lang"], r["framework"])
    if none_if_missing(r.get("version")):
        name += f" {r['version']}"
    if none_if_missing(r.get("backend")):
        name += f" ({BACKEND_NAMES.get(r['backend'], r['backend'])})"
    if r.get("compile"):
        name += ", compiled"
    if none_if_missing(r.get("variant")):
        name += f", {r['variant']}"
    return name


def accuracy_cell(r) -> str:
    a = none_if_missing(r["test_accuracy"])
    if a is None:
        return "–"
    return f"{a:.3f}" + ("" if r["accuracy_parity"] else " ⚠")


def setup_name(r) -> str:
    """e.g. 'cpu ×1 fp32', 'cuda ×8 bf16 ×2 nodes'."""
    text = f"{r['device']} ×{r['gpus']} {r['precision']}"
    nodes = none_if_missing(r.get("nodes"))
    return text + (f" ×{int(nodes)} nodes" if nodes and nodes > 1 else "")


def render(table, fit: bool = False, out=None) -> str:
    """A rich table as plain text (no colour codes: it may be piped), as wide as the terminal
    ($COLUMNS where set). Without a terminal: `fit` wraps to 120 columns, else the table takes the
    width it needs, so that numbers never wrap in a file."""
    import io
    import os
    import sys

    from rich.console import Console

    out = sys.stdout if out is None else out
    natural = Console(file=io.StringIO(), width=10_000).measure(table).maximum
    if out.isatty() or os.environ.get("COLUMNS"):
        limit = shutil.get_terminal_size((120, 24)).columns
    else:
        limit = 120 if fit else natural
    console = Console(file=io.StringIO(), width=max(40, min(natural, limit)), color_system=None, highlight=False)
    console.print(table)
    return "\n".join(line.rstrip() for line in console.file.getvalue().rstrip("\n").splitlines())


def row(*values):
    """Table cells as plain text: a label such as 'python/keras[jax]/cnn' is not rich markup."""
    from rich.text import Text

    return [Text(str(v)) for v in values]


def table(summary):
    """The summary (harness.stats.summarize) as a rich Table."""
    from rich import box
    from rich.table import Table

    units = list(dict.fromkeys(throughput(m)[0] for m in summary["model"]))
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    t.add_column("implementation", overflow="fold")
    t.add_column("model")
    t.add_column("setup")
    t.add_column(f"{COLUMNS['median_s']} (95 % CI)", justify="right")
    for unit in units:
        t.add_column(unit, justify="right")
    shown = [k for k in ("x_pytorch", "mfu", "first_epoch_s", "startup_s", "test_accuracy", "n")
             if k not in ("x_pytorch", "mfu") or (k in summary and summary[k].notna().any())]
    for key in shown:
        t.add_column(COLUMNS[key] + (" (95 % CI)" if key == "x_pytorch" else ""), justify="right")
    for _, r in summary.iterrows():
        unit, factor = throughput(r["model"])
        ci = ci_cell(r)
        cells = [row_name(r) + (" ⚑" if r.get("loaded") else ""), r["model"], setup_name(r),
                 num(r["median_s"]) + (f" ({ci})" if ci != "n < 6" else " (n < 6)")]
        cells += [num(r["median_eps"] * factor) if u == unit else "" for u in units]
        values = {"x_pytorch": ratio_cell(r), "mfu": percent(r.get("mfu")), "first_epoch_s": num(r["first_epoch_s"]),
                  "startup_s": num(r["startup_s"]), "test_accuracy": accuracy_cell(r), "n": f"{r['n']}/{r['runs']}"}
        t.add_row(*row(*cells, *(values[k] for k in shown)))
    return t


def text(records: list[dict]) -> str:
    """The summary of these records, and one line per failed run, as terminal text."""
    from harness import results, stats

    ok = [r for r in records if r["status"] == "ok"]
    summary = stats.summarize(results.to_frame(ok)) if ok else None
    lines = [render(table(summary)) if summary is not None and not summary.empty else "no successful runs"]
    if summary is not None and not summary.empty:
        notes = [f"start-up = {MEANINGS['startup_s']}; 95 % CI: {MEANINGS['ci']}"]
        if summary["loaded"].any():
            notes.append(MEANINGS["loaded"])
        lines += ["", *notes]
    for r in records:
        if r["status"] not in ("ok", "replica"):
            lines.append(f"failed {r['impl']['label']} r{r['config']['repeat']}: {r['error']}")
    return "\n".join(lines)


# ---- names and order shared by the report and its page --------------------------------------

def colour(lang: str) -> str:
    return LANGUAGES[lang].colour if lang in LANGUAGES else "grey"


def order(r) -> tuple:
    """Rows in registry order: language, framework, backend, compiled last."""
    from harness.registry import FRAMEWORKS, LANGS

    fws = [f.name for f in FRAMEWORKS]
    backends = {f.name: list(f.backends) for f in FRAMEWORKS}.get(r["framework"], [])
    backend = none_if_missing(r.get("backend"))
    return (LANGS.index(r["lang"]) if r["lang"] in LANGS else 9,
            fws.index(r["framework"]) if r["framework"] in fws else 99,
            backends.index(backend) if backend in backends else 99, bool(r.get("compile")), str(r.get("version")))


def framework_name(r) -> str:
    """A row's framework without its version, e.g. 'Keras (JAX)', 'R Keras (TF)': the page's filter."""
    name = display_name(r["lang"], r["framework"])
    if none_if_missing(r.get("backend")):
        name += f" ({BACKEND_NAMES.get(r['backend'], r['backend'])})"
    return name + (", compiled" if r.get("compile") else "")


def column_label(col: tuple, columns: list[tuple]) -> str:
    model, data, samples, batch, image = col
    same_model = [c for c in columns if c[0] == model]
    if len(same_model) == 1:
        return model
    return f"{model} ({data}, {samples:,}" + (f", {image}px" if model == "resnet50" else "") + ")"
