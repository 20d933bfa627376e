"""`python -m harness run`: train the selected implementations, one fresh worker per run.

Under `srun` (one task per node), `--nodes K` needs no --node-rank, --rdzv-endpoint or --workers:
what the selected engine's launch needs and was not given comes from Slurm's environment
(harness.slurm.fill_from_slurm). Started by a suite's Slurm batch job, the run answers the one
planned run DL_ROSETTA_PLAN names (harness.schedule.runs)."""
from __future__ import annotations

import shlex
import sys
from dataclasses import replace

from harness.cli_options import add_run_arguments as add_arguments  # noqa: F401 - the verb's options


def main(args) -> int:
    import json

    from harness import benchmark, schedule, slurm, summary
    from harness.cli_options import run_request
    from harness.progress import RunProgress
    from harness.requests import check_setup, implementations

    if getattr(args, "task", "train") == "infer":  # the inference task (issue 14)
        from harness import inference
        from harness.cli_options import infer_request

        return inference.command_main(infer_request(args), args.format, args.quiet,
                                      "python -m harness " + shlex.join(sys.argv[1:]))
    if getattr(args, "runtime", None) or getattr(args, "weights", None):
        from harness.errors import UsageError

        raise UsageError("--runtime and --weights belong to --task infer (or the infer verb)")
    request = run_request(args)
    impls, skipped = implementations(request.selection)
    filled = slurm.fill_from_slurm(request.setup, impls)  # srun: this node's rank and node 0's address
    if filled != request.setup:  # said even with --quiet: a job's log shows where its nodes met
        print(f"[slurm] {slurm.describe_filled(request.setup, filled)}", file=sys.stderr)
        request = replace(request, setup=filled)
    check_setup(request.setup, impls)
    runs = schedule.runs(impls, request)  # round-robin, or the one planned run of a Slurm job
    for impl, reason in skipped:
        print(f"skipped {impl.label}: {reason}", file=sys.stderr)
    prepared = {impl.model: benchmark.prepare(request, impl.model) for impl, _, _ in runs}
    command = "python -m harness " + shlex.join(sys.argv[1:])
    records = []
    done = schedule.completed(request.out) if request.resume else {}
    with RunProgress(enabled=not args.quiet and sys.stderr.isatty()) as progress:
        for impl, repeat, plan in runs:
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
