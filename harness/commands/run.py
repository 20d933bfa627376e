"""`python -m harness run`: train the selected implementations, one fresh worker per run."""
from __future__ import annotations

import shlex
import sys

from harness.cli_options import add_run_arguments as add_arguments  # noqa: F401 - the verb's options


def main(args) -> int:
    import json

    from harness import benchmark, schedule, summary
    from harness.cli_options import run_request
    from harness.progress import RunProgress
    from harness.requests import check_setup, implementations

    request = run_request(args)
    impls, skipped = implementations(request.selection)
    check_setup(request.setup, impls)
    for impl, reason in skipped:
        print(f"skipped {impl.label}: {reason}", file=sys.stderr)
    prepared = {impl.model: benchmark.prepare(request, impl.model) for impl in impls}
    command = "python -m harness " + shlex.join(sys.argv[1:])
    records = []
    done = schedule.completed(request.out) if request.resume else {}
    with RunProgress(enabled=not args.quiet and sys.stderr.isatty()) as progress:
        for repeat in range(request.repeats):  # round-robin: machine drift spreads over every row
            for impl in impls:
                plan = schedule.run_plan(impl, request, repeat)
                if schedule.plan_id(plan) in done:
                    records.append(done[schedule.plan_id(plan)])
                    continue
                records.append(benchmark.execute(impl, request, prepared[impl.model], repeat, command, progress,
                                                 plan=plan))
    if args.format == "json":
        print(json.dumps(records[0] if len(records) == 1 else records, indent=1, default=str))
    else:
        print(summary.text(records))
        print(f"\nrecords: {request.out}/", file=sys.stderr)
    for r in records:
        if r["status"] == "replica":
            print(f"{r['impl']['label']}: this node trained as a replica of a {r['config']['nodes']}-node run; "
                  "its record is written on node 0", file=sys.stderr)
    return 0 if all(r["status"] in ("ok", "replica") for r in records) else 1
