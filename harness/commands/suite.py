"""`python -m harness suite bench/suites/NAME.toml`: run a whole suite, interleaved, resumable.

Every implementation x model x setup of the suite runs once per repeat, round-robin over the
whole suite (repeat 0 of everything, then repeat 1, ...), each in a fresh worker, each record
saved the moment it finishes. `--resume` skips the runs whose records are already in `--out`
(same suite, options and repeat, this machine and commit): a suite killed midway ends, once
resumed, with every sample exactly once.

`--executor slurm` hands the runs to Slurm instead (harness.slurm): one sbatch job per planned
run, on an exclusive node, each writing its record into `--out` on the shared filesystem. The
command waits for the jobs (or exits at once with `--detach`); `--status` shows each planned run
as queued, running, done, failed (with the scheduler's reason) or todo; `--resume --executor
slurm` submits only what has no record and no job queued or running.
"""
from __future__ import annotations

import json
import shlex
import sys
from dataclasses import replace
from pathlib import Path

from harness.cli_options import positive_float, positive_int

EXECUTORS = ("local", "slurm")
SLURM_ONLY = ("partition", "account", "time", "gres", "sbatch", "detach")


def add_arguments(p) -> None:
    p.add_argument("suite", help="a suite file (bench/suites/NAME.toml) or the name of one")
    p.add_argument("--model", help="run the suite for this model instead of its own models (comma-separated list)")
    p.add_argument("--data", help="override the suite's data set")
    p.add_argument("--samples", type=positive_int, help="override the suite's number of training examples")
    p.add_argument("--epochs", type=positive_int, help="override the suite's epochs")
    p.add_argument("--repeats", type=positive_int, help="fresh runs per entry (default: the suite's)")
    p.add_argument("--resume", action="store_true", help="skip runs already recorded in --out (same suite, "
                   "options and repeat, this machine and commit; with --executor slurm: this cluster, any node, "
                   "and runs whose job is queued or running)")
    p.add_argument("--out", default="results", help="results store (default: results/; with --executor slurm on "
                   "a filesystem every node shares)")
    p.add_argument("--data-dir", help="data cache (default: $DL_ROSETTA_DATA or ~/.cache/dl-rosetta)")
    p.add_argument("--dry-run", action="store_true", help="print the schedule and run nothing")
    p.add_argument("--status", action="store_true", help="show every planned run as queued, running, done, "
                   "failed (with the reason) or todo, from the store and the scheduler; exit 1 if any failed")
    p.add_argument("--format", default="table", choices=("table", "json"))
    p.add_argument("--quiet", action="store_true", help="no progress display")
    g = p.add_argument_group("cluster", "--executor slurm: one sbatch job per planned run, each on an exclusive node")
    g.add_argument("--executor", choices=EXECUTORS, help="local (default): every run on this machine, one after "
                   "another; slurm: submit them to Slurm (checkout, environments, data cache and --out on a shared "
                   "filesystem)")
    g.add_argument("--partition", help="sbatch --partition (default: the cluster's)")
    g.add_argument("--account", help="sbatch --account")
    g.add_argument("--time", help="sbatch --time, per run: MINUTES, HH:MM:SS or D-HH:MM (default: the partition's)")
    g.add_argument("--gres", help="sbatch --gres per node (default: gpu:N for rows with --device cuda --gpus N; "
                   "'none' for no --gres)")
    g.add_argument("--sbatch", action="append", default=[], metavar="OPTION",
                   help="a further sbatch option, verbatim; repeatable, written with '=': --sbatch=--qos=high")
    g.add_argument("--detach", action="store_true", help="exit once the jobs are submitted (see --status)")
    g.add_argument("--poll", type=positive_float, default=30.0, help="seconds between looks at the queue while "
                   "waiting (default: 30)")


def main(args) -> int:
    from harness import schedule, slurm
    from harness.errors import UsageError

    given = [f"--{k}" for k in SLURM_ONLY if getattr(args, k)]
    if given and args.executor != "slurm":
        raise UsageError(f"{' '.join(given)} needs --executor slurm")
    executor = args.executor
    if executor is None and args.status:  # what was submitted to Slurm is asked of Slurm
        executor = "slurm" if slurm.submitted_jobs(args.out, schedule.find(args.suite).stem) else "local"
    executor = executor or "local"

    overrides = {k: getattr(args, k) for k in ("data", "samples", "epochs", "data_dir") if getattr(args, k)}
    if executor == "slurm" and args.data_dir:  # the jobs start in the checkout, maybe not where this one did
        overrides["data_dir"] = str(Path(args.data_dir).resolve())
    models = args.model.split(",") if args.model else None
    suite = schedule.load(args.suite, models=models, overrides=overrides,
                          check_setup=slurm.check_setup if executor == "slurm" else None)
    by_reason = {}
    for label, reason in suite.skipped:
        by_reason.setdefault(reason, []).append(label)
    for reason, labels in by_reason.items():
        print(f"skipped {', '.join(labels)}: {reason}", file=sys.stderr)
    if not suite.entries:
        where = "on this cluster" if executor == "slurm" else "here"
        raise UsageError(f"{suite.path}: nothing in this suite can run {where}")
    order = suite.schedule(args.repeats)
    if args.status or executor == "slurm":
        return _on_slurm(args, suite, order, executor)
    return _here(args, suite, order)


def _here(args, suite, order) -> int:
    """The local executor: every planned run on this machine, one after another."""
    from harness import benchmark, schedule
    from harness.progress import RunProgress

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

    prepared = _prepare(entry for entry, _, _ in todo)
    command = "python -m harness " + shlex.join(sys.argv[1:])
    new = {}
    with RunProgress(enabled=not args.quiet and sys.stderr.isatty()) as progress:
        for entry, repeat, plan in todo:
            request = replace(entry.request, out=args.out)
            record = benchmark.execute(entry.impl, request, prepared[_data_key(entry)], repeat, command, progress,
                                       plan=plan)
            new[schedule.plan_id(plan)] = record
            if record["status"] != "ok":
                print(f"failed {entry.impl.label} r{repeat}: {record['error']}", file=sys.stderr)
    records = [new.get(schedule.plan_id(p)) or done.get(schedule.plan_id(p)) for _, _, p in plans]
    failed = [r for r in new.values() if r["status"] != "ok"]
    return _summary(args, suite, records, failed, runs=len(plans), resumed=len(plans) - len(todo))


def _on_slurm(args, suite, order, executor: str) -> int:
    """--executor slurm (submit, wait or --detach; --resume) and --status (either executor)."""
    from harness import slurm

    runs = [slurm.planned(entry, suite.name, repeat) for entry, repeat in order]
    cluster = slurm.cluster_name() if executor == "slurm" else None
    states = slurm.status(args.out, runs, cluster, write_failed=not args.dry_run)
    if args.status:
        if args.format == "json":
            print(json.dumps({"suite": suite.name, "executor": executor, "runs": slurm.state_rows(states),
                              "counts": slurm.counts(states)}, indent=1))
        else:
            print(slurm.format_status(states))
        return 1 if any(s.state == "failed" for s in states) else 0

    todo = slurm.to_submit(states) if args.resume else runs
    options = slurm.SbatchOptions(args.partition, args.account, args.time, args.gres, tuple(args.sbatch))
    slurm.check_all(todo, options)  # a partition, account, time or gres Slurm refuses: one line, nothing submitted
    counts = slurm.counts(states)
    active = counts.get("queued", 0) + counts.get("running", 0)
    print(f"suite {suite.name}: {len(suite.entries)} entries x {args.repeats or suite.repeats} repeats = "
          f"{len(runs)} runs; {counts.get('done', 0)} done in {args.out}/, {active} queued or running, "
          f"{len(todo)} to submit", file=sys.stderr)
    if args.dry_run:
        for run in runs:
            state = "submit" if run in todo else next(s.state for s in states if s.run is run)
            print(f"{state:8s} r{run.plan['repeat']}  {run.label:32s} sbatch {slurm.job_name(run.plan)} "
                  f"run {shlex.join(run.run_args)}")
        return 0

    _prepare(run for run in todo)  # once, into the shared data cache, before any job wants it
    submitted = slurm.submit_all(todo, args.out, options, checked=True)
    status_command = f"python -m harness suite {shlex.quote(args.suite)} --status --out {shlex.quote(args.out)}"
    if submitted:
        ids = submitted[0].job_id + (f" .. {submitted[-1].job_id}" if len(submitted) > 1 else "")
        print(f"submitted {len(submitted)} job(s) to Slurm ({ids}); logs in {Path(args.out) / 'slurm' / 'logs'}/",
              file=sys.stderr)
    if args.detach:
        print(f"see: {status_command}", file=sys.stderr)
        return 0

    def show(now):
        if not args.quiet:
            print("[slurm] " + ", ".join(f"{n} {state}" for state, n in sorted(slurm.counts(now).items())),
                  file=sys.stderr, flush=True)

    try:
        states = slurm.wait(args.out, runs, cluster, poll=args.poll, on_change=show)
    except KeyboardInterrupt:
        print(f"stopped waiting; the jobs keep running (scancel to stop them): {status_command}", file=sys.stderr)
        return 130
    failed = [s.record for s in states if s.state == "failed" and s.record]
    for s in states:
        if s.state == "failed":
            print(f"failed {s.run.label} r{s.run.plan['repeat']}: {s.reason}", file=sys.stderr)
    records = [s.record for s in states if s.record]
    return _summary(args, suite, records, failed, runs=len(runs), resumed=len(runs) - len(todo),
                    submitted=[s.job_id for s in submitted])


def _data_key(entry):
    r = entry.request
    return entry.impl.model, r.resolved(entry.impl.model)[2], r.samples, r.data_dir


def _prepare(entries) -> dict:
    """Each data set the entries (schedule.Entry or slurm.PlannedRun) train on, prepared once."""
    from harness import benchmark

    prepared = {}
    for entry in entries:
        if _data_key(entry) not in prepared:
            prepared[_data_key(entry)] = benchmark.prepare(entry.request, entry.impl.model)
    return prepared


def _summary(args, suite, records, failed, runs: int, resumed: int, **extra) -> int:
    from harness import results, stats
    from harness.summary import text

    if args.format == "json":
        summary = stats.summarize(results.to_frame([r for r in records if r]))
        print(json.dumps({"suite": suite.name, "runs": runs, "resumed": resumed, **extra,
                          "failed": [{"run_id": r["run_id"], "label": r["impl"]["label"], "error": r["error"]}
                                     for r in failed],
                          "skipped": [{"label": lbl, "reason": why} for lbl, why in suite.skipped],
                          "summary": json.loads(summary.to_json(orient="records"))}, indent=1))
    else:
        print(text([r for r in records if r]))
        print(f"\nrecords: {args.out}/  (python -m harness report {args.out})", file=sys.stderr)
    return 0 if not failed else 1
