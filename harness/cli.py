"""`python -m harness [VERB] ...`: run (the default), list, setup, and the verbs in harness.commands."""
from __future__ import annotations

import argparse
import importlib
import sys

from harness.errors import UsageError

# verb -> module in harness.commands; each module has add_arguments(parser) and main(args) -> int
VERBS = {
    "run": "Train implementations on prepared data and time them (the default verb).",
    "infer": "Export the trained model and time inference natively and on the deployment runtimes (run --task infer).",
    "list": "Show every registered implementation and whether it can run here.",
    "setup": "Create the environments the suite needs (stdlib only: works before anything is installed).",
    "weights": "Write the initial canonical weights (.npz) an implementation creates.",
    "predict": "Load canonical weights into an implementation and write eval-mode logits for an input array.",
    "check": "Prove the implementations are the same model: checks 1-5 against the reference (PyTorch).",
    "suite": "Run a suite (bench/suites/NAME.toml): implementations x models x setups, interleaved, resumable.",
    "report": "Markdown table and HTML page with charts from results folders.",
    "compare": "Compare two sets of results row by row; exit 1 when NEW is slower beyond --threshold.",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m harness", description=__doc__)
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, help_text in VERBS.items():
        p = sub.add_parser(verb, help=help_text, description=help_text)
        importlib.import_module(f"harness.commands.{verb}").add_arguments(p)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in VERBS and argv[0] not in ("-h", "--help")):
        argv.insert(0, "run")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return importlib.import_module(f"harness.commands.{args.verb}").main(args) or 0
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
