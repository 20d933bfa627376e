"""`python -m harness suite bench/suites/NAME.toml`: run a whole suite, interleaved, resumable.

Every implementation x model x setup of the suite runs once per repeat, round-robin over the
whole suite (repeat 0 of everything, then repeat 1, ...), each in a fresh worker, each record
saved the moment it finishes. `--resume` skips the runs whose records are already in `--out`
(same suite, options and repeat, this machine and commit): a suite killed midway ends, once
resumed, with every sample exactly once.
"""
from __future__ import annotations

import json
import shlex
import sys
from dataclasses import replace

from harness.cli_options import positive_int


def add_arguments(p) -> None:
    p.add_argument("suite", help="a suite file (bench/suites/NAME.toml) or the name of one")
    p.add_argument("--model", help="run the suite for this model instead of its own models (comma-separated list)")
    p.add_argument("--data", help="override the suite's data set")
    p.add_argument("--samples", type=positive_int, help="override the suite's number of training examples")
    p.add_argument("--epochs", type=positive_int, help="override the suite's epochs")
    p.add_argument("--repeats", type=positive_int, help="fresh runs per entry (default: the suite's)")
    p.add_argument("--resume", action="store_true", help="skip runs already recorded in --out (same suite, "
                   "options and repeat, this machine and commit)")
    p.add_argument("--out", default="results", help="results store (default: results/)")
    p.add_argument("--data-dir", help="data cache (default: $DL_ROSETTA_DATA or ~/.cache/dl-rosetta)")
    p.add_argument("--dry-run", action="store_true", help="print the schedule and run nothing")
    p.add_argument("--format", default="table", choices=("table", "json"))
    p.add_argument("--quiet", action="store_true", help="no progress display")


def main(args) -> int:
    from harness import benchmark, results, schedule, stats
    from harness.errors import UsageError
    from harness.progress import RunProgress
    from harness.summary import text

    overrides = {k: getattr(args, k) for k in ("data", "samples", "epochs", "data_dir") if getattr(args, k)}
    models = args.model.split(",") if args.model else None
    suite = schedule.load(args.suite, models=models, overrides=overrides)
    by_reason = {}
    for label, reason in suite.skipped:
        by_reason.setdefault(reason, []).append(label)
    for reason, labels in by_reason.items():
        print(f"skipped {', '.join(labels)}: {reason}", file=sys.stderr)
    if not suite.entries:
        raise UsageError(f"{suite.path}: nothing in this suite can run here")
    order = suite.schedule(args.repeats)  # not `schedule`: that is the module
    done = schedule.completed(args.out) if args.resume else {}
    plans = [(entry, repeat, entry.plan(suite.name, repeat)) for entry, repeat in order]
    todo = [p for p in plans if schedule.plan_id(p[2]) not in done]
    print(f"suite {suite.name}: {len(suite.entries)} entries x {args.repeats or suite.repeats} repeats = "
          f"{len(plans)} runs; {len(plans) - len(todo)} already in {args.out}/, {len(todo)} to run", file=sys.stderr)
    if args.dry_run:
        for entry, repeat, plan in plans:
            state = "done" if schedule.plan_id(plan) in done else "todo"
            print(f"{state}  r{repeat}  {entry.impl.label:32s} {entry.setup:10s} run {shlex.join(entry.run_args)}")
        return 0

    def data_key(entry):
        r = entry.request
        return entry.impl.model, r.resolved(entry.impl.model)[2], r.samples, r.data_dir

    prepared = {}
    for entry, _, _ in todo:
        if data_key(entry) not in prepared:
            prepared[data_key(entry)] = benchmark.prepare(entry.request, entry.impl.model)
    command = "python -m harness " + shlex.join(sys.argv[1:])
    new = {}
    with RunProgress(enabled=not args.quiet and sys.stderr.isatty()) as progress:
        for entry, repeat, plan in todo:
            request = replace(entry.request, out=args.out)
            record = benchmark.execute(entry.impl, request, prepared[data_key(entry)], repeat, command, progress,
                                       plan=plan)
            new[schedule.plan_id(plan)] = record
            if record["status"] != "ok":
                print(f"failed {entry.impl.label} r{repeat}: {record['error']}", file=sys.stderr)
    records = [new.get(schedule.plan_id(p)) or done.get(schedule.plan_id(p)) for _, _, p in plans]
    failed = [r for r in new.values() if r["status"] != "ok"]
    if args.format == "json":
        summary = stats.summarize(results.to_frame(records))
        print(json.dumps({"suite": suite.name, "runs": len(plans), "resumed": len(plans) - len(todo),
                          "failed": [{"run_id": r["run_id"], "label": r["impl"]["label"], "error": r["error"]}
                                     for r in failed],
                          "skipped": [{"label": lbl, "reason": why} for lbl, why in suite.skipped],
                          "summary": json.loads(summary.to_json(orient="records"))}, indent=1))
    else:
        print(text(records))
        print(f"\nrecords: {args.out}/  (python -m harness report {args.out})", file=sys.stderr)
    return 0 if not failed else 1
