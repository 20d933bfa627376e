"""`python -m harness run`: train the selected implementations, one fresh worker per run."""
from __future__ import annotations

import argparse
import shlex
import sys

from harness.protocol import DEVICES, PRECISIONS

FORMATS = ("table", "json")


def whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def positive_int(text: str) -> int:
    value = whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value:g} must be above 0")
    return value


def addresses(text: str) -> list[str]:
    """HOST:PORT,HOST:PORT,... (--workers)."""
    out = [a.strip() for a in text.split(",")]
    for a in out:
        host, _, port = a.rpartition(":")
        if not host or not port.isdigit():
            raise argparse.ArgumentTypeError(f"{a!r} is not HOST:PORT")
    return out


def rank(text: str) -> int:
    value = whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be 0 or more")
    return value


def add_selection(p: argparse.ArgumentParser, model_default: str | None = "cnn") -> None:
    p.add_argument("--lang", default="python", help="python, r or julia (default: python)")
    p.add_argument("--framework", help="e.g. pytorch, tensorflow, keras, jax, mxnet, chainer, pytensor, flux, knet "
                   "(default: every framework of --lang)")
    p.add_argument("--backend", help="Keras 3 backend: tensorflow, jax or torch (default: each)")
    p.add_argument("--model", default=model_default, help="cnn, resnet50 or rnn (default: %(default)s)")


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="weight init and epoch order (default: 0)")
    p.add_argument("--device", default="cpu", choices=DEVICES)
    p.add_argument("--gpus", type=positive_int, default=1, help="data-parallel replicas per machine: GPUs with "
                   "--device cuda, or N CPU replicas with --device cpu, for testing the data-parallel path")
    p.add_argument("--scaling", default="weak", choices=("weak", "strong"), help="weak (default): spec batch per "
                   "replica, lr x replicas; strong: global batch = spec batch, split over the replicas")
    p.add_argument("--nodes", type=positive_int, default=1, help="machines, joined by the framework's own "
                   "multi-node launch: torchrun (pytorch), jax.distributed (jax, keras --backend jax), "
                   "MultiWorkerMirroredStrategy (tensorflow); run the command on each node")
    p.add_argument("--rdzv-endpoint", help="HOST:PORT of node 0, the same on every node: torchrun's rendezvous, "
                   "jax.distributed's coordinator")
    p.add_argument("--node-rank", type=rank, help="this node's rank, 0 .. K-1 (jax, keras, tensorflow; "
                   "torchrun assigns its own); node 0 writes the record")
    p.add_argument("--workers", type=addresses, help="HOST:PORT of every node's TensorFlow worker in "
                   "node-rank order (tensorflow with --nodes; written into TF_CONFIG)")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS)
    p.add_argument("--compile", action="store_true", help="torch.compile / XLA jit_compile where offered")
    p.add_argument("--image-size", type=positive_int, default=32, help="resnet50 input side (default: 32)")
    p.add_argument("--data-dir", help="data cache (default: $DL_ROSETTA_DATA or ~/.cache/dl-rosetta)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_selection(p)
    p.add_argument("--epochs", type=positive_int, help="default: the spec's (cnn 10, resnet50 10, rnn 3)")
    p.add_argument("--batch-size", type=positive_int, help="default: the spec's (64)")
    p.add_argument("--data", help="cifar10, imdb, synthetic or FILE.npz (default: the model's data set)")
    p.add_argument("--samples", type=positive_int, help="use the first N training examples")
    p.add_argument("--repeats", type=positive_int, default=1, help="fresh worker processes per implementation")
    add_options(p)
    p.add_argument("--timeout", type=positive_float, default=3600.0, help="seconds per run (default: 3600)")
    p.add_argument("--out", default="results", help="results folder (default: results/)")
    p.add_argument("--resume", action="store_true", help="skip runs already recorded in --out (same options "
                   "and repeat, this machine and commit)")
    p.add_argument("--format", default="table", choices=FORMATS)
    p.add_argument("--quiet", action="store_true", help="no progress display")


def resolve(args, include_unavailable: bool = False):
    """The implementations to run and the reasons the others cannot; bad values raise UsageError."""
    from harness import runtimes
    from harness.errors import UsageError
    from harness.registry import select

    # a retired framework is only worth a message when asked for by name
    impls = select(args.lang, args.framework, args.backend, args.model, include_retired=bool(args.framework))
    if not impls:
        raise UsageError(f"nothing registered for --lang {args.lang} --framework {args.framework} --model {args.model}")
    runnable, skipped = [], []
    for impl in impls:
        reason = runtimes.availability(impl)
        (skipped if reason else runnable).append((impl, reason))
    if skipped and args.framework and not include_unavailable:
        impl, reason = skipped[0]
        raise UsageError(f"{impl.label} cannot run here: {reason}")
    if not runnable and not include_unavailable:
        raise UsageError("no selected implementation can run here: "
                         + "; ".join(f"{i.label}: {r}" for i, r in skipped))
    return [i for i, _ in runnable], skipped


def check_device(args, impls=None) -> None:
    from harness import environment, parallel
    from harness.errors import UsageError

    if args.device == "cuda":
        found = environment.gpus()
        if not found:
            raise UsageError("--device cuda: no NVIDIA GPU found here (nvidia-smi lists none); choices: cpu")
        if args.gpus > len(found):
            raise UsageError(f"--gpus {args.gpus}: only {len(found)} GPU(s) here")
    if args.precision == "fp16" and args.device == "cpu":
        raise UsageError("--precision fp16 needs --device cuda; choices on cpu: fp32, bf16")
    parallel.check(args, impls)


def main(args) -> int:
    import json
    import os

    from harness import data as datasets
    from harness.errors import UsageError
    from harness.progress import RunProgress
    from harness.runs import execute, summary_table
    from harness.specs import get_spec

    impls, skipped = resolve(args)
    check_device(args, impls)
    for impl, reason in skipped:
        print(f"skipped {impl.label}: {reason}", file=sys.stderr)
    prepared = {}
    for impl in impls:
        if impl.model not in prepared:
            spec = get_spec(impl.model)
            prepared[impl.model] = datasets.prepare(args.data or spec.dataset, spec, args.samples, args.data_dir)
    command = "python -m harness " + shlex.join(sys.argv[1:])
    from harness import suites

    records = []
    done = suites.completed(args.out) if args.resume else {}
    given = json.loads(os.environ["DL_ROSETTA_PLAN"]) if os.environ.get("DL_ROSETTA_PLAN") else None
    with RunProgress(enabled=not args.quiet and sys.stderr.isatty()) as progress:
        for repeat in range(args.repeats):  # round-robin: machine drift spreads over every row
            for impl in impls:
                plan = suites.run_plan(impl, args, repeat)
                if given:  # one planned run of a suite (harness.slurm's batch job): its suite, repeat, job
                    if given.get("config") != plan["config"]:
                        raise UsageError(f"DL_ROSETTA_PLAN is plan {given.get('config')}, these options are "
                                         f"plan {plan['config']}; submit again from this checkout")
                    plan, repeat = given, given["repeat"]
                if suites.plan_id(plan) in done:
                    records.append(done[suites.plan_id(plan)])
                    continue
                records.append(execute(impl, args, prepared[impl.model], repeat, command, progress, plan=plan))
    if args.format == "json":
        print(json.dumps(records[0] if len(records) == 1 else records, indent=1, default=str))
    else:
        print(summary_table(records).to_string(index=False))
        print(f"\nrecords: {args.out}/", file=sys.stderr)
    for r in records:
        if r["status"] == "replica":
            print(f"{r['impl']['label']}: this node trained as a replica of a {r['config']['nodes']}-node run; "
                  "its record is written on node 0", file=sys.stderr)
    return 0 if all(r["status"] in ("ok", "replica") for r in records) else 1
