"""DL Rosetta: the same deep-learning models in many frameworks and languages, timed by one harness.

Options without a verb go to `run` (`dl-rosetta --framework pytorch --model cnn` is
`dl-rosetta run --framework pytorch --model cnn`); a bare `dl-rosetta` prints this help.
"""
from __future__ import annotations

import argparse
import difflib
import importlib
import os
import sys
import textwrap

from harness.errors import UsageError

# verb -> its one-line help; each is a module in harness.commands with add_arguments(parser) and main(args) -> int
VERBS = {
    "run": "Train implementations on prepared data and time them, one fresh worker per run.",
    "infer": "Export the trained model and time inference natively and on the deployment runtimes (run --task infer).",
    "list": "Show every registered implementation, the setups it supports and whether it can run here.",
    "setup": "Create the environments the suite needs (standard library only: works before anything is installed).",
    "weights": "Write the initial canonical weights (.npz) an implementation creates.",
    "predict": "Load canonical weights into an implementation and write its eval-mode logits for an input array.",
    "check": "Prove the implementations are the same model as the reference (PyTorch): shapes, init, logits, "
             "steps, dropout, data, transfer.",
    "suite": "Run a suite file (bench/suites/NAME.toml): implementations x models x setups, interleaved, resumable.",
    "report": "Summarise results folders: an interactive offline HTML page, Markdown tables, or CSV/JSON/Parquet "
              "exports; optionally log every run to MLflow.",
    "compare": "Compare two sets of results row by row; exit 1 when NEW is slower than BASE beyond --threshold.",
}

# two or three examples per verb, shown under its --help ({prog} is the command's name)
EXAMPLES = {
    None: ["{prog} --framework pytorch --model cnn --data synthetic --samples 512 --epochs 3",
           "{prog} list --lang python",
           "{prog} report results/"],
    "run": ["{prog} run --framework pytorch --model cnn --data synthetic --samples 512 --epochs 3",
            "{prog} run --lang python --model rnn --repeats 3            # every Python framework, interleaved",
            "{prog} run --framework keras --backend jax --model resnet50 --device cuda --precision bf16"],
    "infer": ["{prog} infer --framework pytorch --model resnet50 --runtime native,onnxruntime",
              "{prog} infer --lang python --framework keras --backend jax --model cnn --weights w.npz",
              "{prog} list --exports                    # which export paths and runtimes work here"],
    "list": ["{prog} list", "{prog} list --lang r --model cnn", "{prog} list --format json"],
    "setup": ["python3 -m harness setup                 # .venv with the harness and PyTorch",
              "python3 -m harness setup --frameworks    # + every Python framework and the report tools",
              "python3 -m harness setup --all           # everything: legacy, R, Julia, Chromium"],
    "weights": ["{prog} weights --framework pytorch --model cnn --out torch-cnn.npz",
                "{prog} weights --lang r --framework keras --backend tensorflow --model rnn --seed 1 --out r-rnn.npz"],
    "predict": ["{prog} predict --framework jax --model cnn --weights torch-cnn.npz --input x.npy --out logits.npy",
                "{prog} predict --framework tensorflow --model rnn --weights w.npz --input tokens.npy --out l.npy"],
    "check": ["{prog} check --model cnn", "{prog} check --model rnn --framework jax --checks logits,steps",
              "{prog} check --model cnn --format json --keep check-cnn/"],
    "suite": ["{prog} suite python-cnn --dry-run",
              "{prog} suite bench/suites/python-matrix.toml --out bench/results/mybox --resume",
              "{prog} suite readme-cpu --repeats 5 --out bench/results/quiet"],
    "report": ["{prog} report results/", "{prog} report bench/results --format csv > summary.csv",
               "{prog} report results/ --mlflow ./mlruns"],
    "compare": ["{prog} compare bench/results/mybox results/",
                "{prog} compare results/ results/ --base-commit 1a2b3c --new-commit 4d5e6f --only-changed",
                "{prog} compare old/ new/ --threshold 5% --format json"],
}

# what each --format gives, per verb (the commands that are not this module's own declare the choices)
FORMATS = {
    "run": {"table": "the summary table on stdout", "json": "the run's JSON record on stdout (a list for several)"},
    "infer": {"table": "the inference table on stdout", "json": "the runs' JSON records on stdout"},
    "list": {"table": "a table that fits the terminal", "json": "one JSON object per implementation"},
    "check": {"table": "the implementation x check matrix", "json": "the full report with every deviation"},
    "suite": {"table": "the summary table", "json": "runs, failures, skipped rows and the summary as JSON"},
}

EXIT_CODES = ("exit codes: 0 success; 1 a run failed, a check failed or compare found a regression; "
              "2 bad input (one line naming the value and the choices); 130 interrupted (Ctrl-C), 143 (SIGTERM)")


def version() -> str:
    """The harness's version, and the checkout's commit where there is one."""
    from harness import __version__

    text = __version__
    try:
        from harness import environment

        git = environment.git_commit()
    except Exception:  # a version string must never fail
        git = {}
    if git.get("commit"):
        text += f" (commit {git['commit'][:12]}{'+dirty' if git.get('dirty') else ''})"
    return text


class Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line (the message, the choices, where the help is),
    exit code 2; no abbreviated options."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        if "invalid choice" in message and "argument VERB" in message:
            word = message.split("invalid choice: ", 1)[1].split(" ", 1)[0].strip("'")
            close = difflib.get_close_matches(word, list(VERBS), n=1)
            message = (f"invalid choice: {word!r} is not a verb; choose from {', '.join(VERBS)}"
                       + (f" (did you mean {close[0]!r}?)" if close else ""))
        self.exit(2, f"error: {message} (help: {self.prog} --help)\n")


class _Version(argparse.Action):
    """--version, worked out only when asked for (it may run git)."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"dl-rosetta {version()}")
        parser.exit(0)


def _wrap(text: str) -> str:
    return "\n\n".join(textwrap.fill(par, 100) for par in text.split("\n\n"))


def _epilog(verb: str | None, prog: str) -> str:
    lines = ["examples:"] + [f"  {e.format(prog=prog)}" for e in EXAMPLES[verb]]
    return "\n".join(lines) + "\n\n" + EXIT_CODES


def _describe_formats(parser: argparse.ArgumentParser, verb: str) -> None:
    """Give `--format` a help that says what each choice gives (where the command has not)."""
    for action in parser._actions:
        if "--format" in action.option_strings and not action.help and verb in FORMATS:
            action.help = "; ".join(f"{k}: {v}" for k, v in FORMATS[verb].items()) + " (default: %(default)s)"


def prog_name() -> str:
    """'dl-rosetta' for the installed command, 'python -m harness' for the module."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "python -m harness" if name in ("__main__.py", "-m", "-c", "") else name


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    prog = prog or prog_name()
    parser = Parser(prog=prog, description=__doc__, epilog=_epilog(None, prog))
    parser.add_argument("--version", action=_Version, nargs=0, help="print the version (and the checkout's commit)")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", title="verbs")
    parser.verbs = {}
    for verb, help_text in VERBS.items():
        p = parser.verbs[verb] = sub.add_parser(verb, help=help_text, description=help_text, epilog=_epilog(verb, prog),
                           allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter)
        importlib.import_module(f"harness.commands.{verb}").add_arguments(p)
        p.description = _wrap(p.description)
        _describe_formats(p, verb)
    return parser


def main(argv=None, prog: str | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(prog)
    if not argv:
        parser.print_help()
        return 0
    if argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
        argv.insert(0, "run")  # options without a verb: the one unambiguous default
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # named by the verb's own parser, with the nearest option it has
        verb = parser.verbs[args.verb]
        options = [o for a in verb._actions for o in a.option_strings]
        close = difflib.get_close_matches(unknown[0], options, n=1)
        verb.error(f"unrecognized arguments: {' '.join(unknown)}" + (f" (did you mean {close[0]}?)" if close else ""))
    try:
        return importlib.import_module(f"harness.commands.{args.verb}").main(args) or 0
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `dl-rosetta list | head`: the reader has gone, say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def entry() -> None:
    """The `dl-rosetta` command and `python -m harness`."""
    import signal

    from harness.errors import Interrupted

    received = []

    def terminate(signum, frame):
        # A SIGTERM (kill, a job scheduler, a CI timeout) unwinds like Ctrl-C: the running worker's
        # process group is killed with us (harness.launch) and the run in progress is recorded as
        # interrupted (harness.benchmark.execute). A second SIGTERM while unwinding is ignored.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        received.append(signum)
        raise Interrupted(signum)

    signal.signal(signal.SIGTERM, terminate)
    try:
        code = main()
    except KeyboardInterrupt:  # before or after main's own handler
        print("interrupted", file=sys.stderr)
        code = 130
    raise SystemExit(128 + received[0] if received else code)
