"""`python -m harness report [RESULTS...]`: the results as a page, as Markdown tables, or as exports.

What a section, a number and each --format output is: harness/reporting.py's docstring (the
library this command calls); --mlflow URI logs every run (parameters, metrics per epoch,
environment, command) to MLflow."""
from __future__ import annotations

import sys
from pathlib import Path

FORMATS = {"html": "the interactive page (index.html, self-contained), table.md and the PNGs; prints the Markdown",
           "md": "table.md and the PNGs only; prints the Markdown (the README's tables)",
           "csv": "summary.csv, one row per implementation x workload x section; printed too",
           "json": "summary.json, the same rows; printed too",
           "parquet": "summary.parquet, the same rows (needs pyarrow)"}


def add_arguments(p) -> None:
    p.add_argument("results", nargs="*", default=["results"], help="results folders or record files "
                   "(default: results/)")
    p.add_argument("--out", help="where the outputs go (default: FIRST_RESULTS/report)")
    p.add_argument("--format", default="html", choices=tuple(FORMATS),
                   help="; ".join(f"{k}: {v}" for k, v in FORMATS.items()) + " (default: %(default)s)")
    p.add_argument("--machine", help="only this machine key")
    p.add_argument("--commit", help="only this commit (a prefix of the commit key)")
    p.add_argument("--suite", help="only runs of this suite")
    p.add_argument("--view", default="all", choices=("all", "bindings"), help="bindings: only the language bindings "
                   "tables (harness/bindings.py), as Markdown, into OUT/bindings.md and .csv (default: all, which "
                   "adds them beside the page where the results hold a framework in two languages)")
    p.add_argument("--title", default="DL Rosetta: training time", help="the page's title")
    p.add_argument("--mlflow", metavar="URI", help="also log every run to this MLflow tracking store: a folder "
                   "(MLflow's file store) or a tracking server URL (needs the mlflow extra: pip install "
                   "'dl-rosetta[mlflow]')")
    p.add_argument("--mlflow-experiment", default="dl-rosetta", help="the MLflow experiment (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="do not print the Markdown, CSV or JSON")


def main(args) -> int:
    from harness.errors import UsageError

    for p in args.results:
        if not Path(p).exists():
            raise UsageError(f"no results at {p}")
    needs = {"html": ("matplotlib", "plotly"), "md": ("matplotlib",), "parquet": ("pyarrow",)}.get(args.format, ())
    needs = () if args.view == "bindings" else needs
    for module in needs:
        try:
            __import__(module)
        except ImportError:
            raise UsageError(f"report --format {args.format} needs {module}: pip install 'dl-rosetta[report]'") from None
    first = Path(args.results[0])
    out = Path(args.out) if args.out else (first if first.is_dir() else first.parent) / "report"
    if args.mlflow:
        from harness import export

        logged, skipped = export.log_to_mlflow(args.results, args.mlflow, args.mlflow_experiment,
                                               machine=args.machine, commit=args.commit, suite=args.suite)
        print(f"mlflow: {logged} run(s) logged to {args.mlflow} (experiment {args.mlflow_experiment}), "
              f"{skipped} already there", file=sys.stderr)
    from harness import bindings
    from harness.reporting import build

    keys = {"machine": args.machine, "commit": args.commit, "suite": args.suite}
    if args.view == "bindings":
        md = bindings.report(args.results, out, **keys)
        if not md:
            raise UsageError(f"no framework with runs in Python and another language (same machine, commit, setup and "
                             f"workload) under {', '.join(args.results)}: run bench/suites/all-languages.toml")
        if not args.quiet:
            print(md)
        print(f"report: {out / 'bindings.md'}", file=sys.stderr)
        return 0
    md, sections = build(args.results, out, args.title, args.format, machine=args.machine, commit=args.commit,
                         suite=args.suite)
    if args.format in ("csv", "json", "parquet"):
        path = out / f"summary.{args.format}"
        if args.format != "parquet" and not args.quiet:
            print(path.read_text(), end="")
        print(f"report: {path} ({sum(len(s.summary) for s in sections)} rows)", file=sys.stderr)
        return 0
    binding_md = bindings.report(args.results, out, **keys)  # '' where no framework has two languages
    if not args.quiet:
        print(md + (f"\n{binding_md}" if binding_md else ""))
    page = f"{out / 'index.html'}, " if args.format == "html" else ""
    print(f"report: {page}{out / 'table.md'} ({len(sections)} sections, "
          f"{sum(len(s.charts) for s in sections)} PNG charts)", file=sys.stderr)
    return 0
