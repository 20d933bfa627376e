"""The options the commands share, and the typed requests (harness.requests) a Namespace becomes.

Every command module builds its parser from these definitions and converts what argparse parsed
into typed values right here, at the edge; no command imports another command. Suite files
(harness.schedule) are parsed with the same `run` options, so a suite can say anything a run can.
"""
from __future__ import annotations

import argparse
import math

from harness.errors import UsageError
from harness.protocol import DEVICES, PRECISIONS
from harness.requests import DeviceSetup, RunRequest, Selection

FORMATS = ("table", "json")
SEED_MAX = 2**32 - 1  # what every framework's seeding takes (numpy's legacy RandomState, TensorFlow)
TIMEOUT_MAX = 7 * 24 * 3600  # seconds; far larger values overflow the event loop's select()


# --------------------------------------------------------------------------- value types
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
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value:g} must be above 0")
    return value


def timeout_seconds(text: str) -> float:
    """Seconds a worker may run: a finite number above 0, at most TIMEOUT_MAX (7 days)."""
    value = positive_float(text)
    if value > TIMEOUT_MAX:
        raise argparse.ArgumentTypeError(f"{value:g} s is more than {TIMEOUT_MAX} s (7 days); choices: 0 < S <= {TIMEOUT_MAX}")
    return value


def probability(text: str) -> float:
    """A probability strictly between 0 and 1 (a significance level)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text} must lie between 0 and 1, e.g. 0.05")
    return value


def seed(text: str) -> int:
    """A seed every framework takes: 0 .. 2**32 - 1."""
    value = whole_number(text)
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"{value} is outside 0 .. {SEED_MAX}")
    return value


def addresses(text: str) -> tuple[str, ...]:
    """HOST:PORT,HOST:PORT,... (--workers)."""
    out = tuple(a.strip() for a in text.split(","))
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


# --------------------------------------------------------------------------- option groups
def no_abbreviations(p: argparse.ArgumentParser) -> None:
    """--ou is not --out: an abbreviation would get past the keys a suite may not set, and a
    record's run_args would not reproduce the run."""
    p.allow_abbrev = False


def add_selection(p: argparse.ArgumentParser, model_default: str | None = "cnn") -> None:
    no_abbreviations(p)
    p.add_argument("--lang", default="python", help="python, r or julia (default: python)")
    p.add_argument("--framework", help="e.g. pytorch, tensorflow, keras, jax, mxnet, chainer, pytensor, flux, knet "
                   "(default: every framework of --lang)")
    p.add_argument("--backend", help="Keras 3 backend: tensorflow, jax or torch (default: each)")
    p.add_argument("--model", default=model_default, help="cnn, resnet50 or rnn (default: %(default)s)")


def add_device_setup(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=seed, default=0, help=f"weight init and epoch order, 0 .. {SEED_MAX} (default: 0)")
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


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Every option of `run` (and of a suite entry)."""
    add_selection(p)
    p.add_argument("--epochs", type=positive_int, help="default: the spec's (cnn 10, resnet50 10, rnn 3)")
    p.add_argument("--batch-size", type=positive_int, help="default: the spec's (64)")
    p.add_argument("--data", help="cifar10, imdb, synthetic or FILE.npz (default: the model's data set)")
    p.add_argument("--samples", type=positive_int, help="use the first N training examples")
    p.add_argument("--repeats", type=positive_int, default=1, help="fresh worker processes per implementation")
    add_device_setup(p)
    p.add_argument("--timeout", type=timeout_seconds, default=3600.0, help="seconds per run (default: 3600)")
    p.add_argument("--out", default="results", help="results folder (default: results/)")
    p.add_argument("--resume", action="store_true", help="skip runs already recorded in --out (same options "
                   "and repeat, this machine and commit)")
    p.add_argument("--refresh", action="store_true", help="prepare the data set again, whatever the cache holds")
    p.add_argument("--format", default="table", choices=FORMATS)
    p.add_argument("--quiet", action="store_true", help="no progress display")


def add_implementation(p: argparse.ArgumentParser) -> None:
    """Exactly one implementation, as `run` names them (weights, predict)."""
    no_abbreviations(p)
    p.add_argument("--lang", default="python", help="python, r or julia (default: python)")
    p.add_argument("--framework", required=True, help="e.g. pytorch, tensorflow, keras, jax, mxnet, chainer, "
                   "pytensor, flux, knet")
    p.add_argument("--backend", help="Keras 3 backend: tensorflow, jax or torch")
    p.add_argument("--model", required=True, help="cnn, resnet50 or rnn")
    p.add_argument("--device", default="cpu", choices=DEVICES)
    p.add_argument("--timeout", type=timeout_seconds, default=1800.0, help="seconds for the worker (default: 1800)")


# --------------------------------------------------------------------------- Namespace -> typed values
def selection(ns: argparse.Namespace) -> Selection:
    return Selection(ns.lang, ns.framework, ns.backend, ns.model)


def device_setup(ns: argparse.Namespace) -> DeviceSetup:
    return DeviceSetup(device=ns.device, gpus=ns.gpus, scaling=ns.scaling, nodes=ns.nodes,
                       rdzv_endpoint=ns.rdzv_endpoint, node_rank=ns.node_rank, workers=ns.workers,
                       precision=ns.precision, compile=ns.compile, image_size=ns.image_size)


def run_request(ns: argparse.Namespace) -> RunRequest:
    return RunRequest(selection(ns), device_setup(ns), epochs=ns.epochs, batch_size=ns.batch_size, data=ns.data,
                      samples=ns.samples, seed=ns.seed, repeats=ns.repeats, timeout=ns.timeout, out=ns.out,
                      resume=ns.resume, data_dir=ns.data_dir, refresh=getattr(ns, "refresh", False))


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def run_parser() -> argparse.ArgumentParser:
    """`run`'s options as a parser that raises UsageError (for suite files)."""
    p = _Parser(prog="python -m harness run", add_help=False, allow_abbrev=False)
    add_run_arguments(p)
    return p
