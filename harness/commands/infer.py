"""`python -m harness infer`: `run --task infer` under its own verb (the same selection and setup flags).

Trains each selected implementation briefly (or loads --weights), exports it with its framework's
own exporter and times inference natively and on the deployment runtimes (harness.inference)."""
from __future__ import annotations

import shlex
import sys


def add_arguments(p) -> None:
    from harness.cli_options import add_run_arguments

    add_run_arguments(p)
    p.set_defaults(task="infer")


def main(args) -> int:
    from harness import inference
    from harness.cli_options import infer_request

    return inference.command_main(infer_request(args), args.format, args.quiet,
                                  "python -m harness " + shlex.join(sys.argv[1:]))
