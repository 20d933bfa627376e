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
TASKS = ("train", "infer")
INFER_PRECISIONS = PRECISIONS + ("int8",)  # int8: --task infer on a runtime that quantizes
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
        raise argparse.ArgumentTypeError(f"{text!r} is not a number: give a level between 0 and 1, e.g. 0.05") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text} is out of range: give a level between 0 and 1, e.g. 0.05")
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


def variant(text: str) -> tuple[tuple[str, str], ...]:
    """KEY=VALUE,KEY=VALUE (--variant): sorted (key, value) pairs."""
    pairs = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise argparse.ArgumentTypeError(f"{part!r} is not KEY=VALUE (e.g. loop=train_on_batch)")
        pairs[key.strip()] = value.strip()
    if not pairs:
        raise argparse.ArgumentTypeError(f"{text!r} names no KEY=VALUE")
    return tuple(sorted(pairs.items()))


def rank(text: str) -> int:
    value = whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be 0 or more")
    return value


# --------------------------------------------------------------------------- option groups
def _langs() -> str:
    from harness.registry import LANGS

    return ", ".join(LANGS)


def _models() -> str:
    from harness.specs import MODELS

    return ", ".join(MODELS)


def _variants() -> str:
    from harness.registry import FRAMEWORKS

    return "; ".join(f"{f.lang}/{f.name}: " + ", ".join(f"{k}={'|'.join(v)}" for k, v in f.variants)
                     for f in FRAMEWORKS if f.variants)


def no_abbreviations(p: argparse.ArgumentParser) -> None:
    """--ou is not --out: an abbreviation would get past the keys a suite may not set, and a
    record's run_args would not reproduce the run."""
    p.allow_abbrev = False


def add_selection(p: argparse.ArgumentParser, model_default: str | None = "cnn") -> None:
    no_abbreviations(p)
    p.add_argument("--lang", default="python", help=f"{_langs()} (default: python)")
    p.add_argument("--framework", help="e.g. pytorch, tensorflow, keras, jax, mxnet, chainer, pytensor, flux, knet "
                   "(default: every framework of --lang)")
    p.add_argument("--backend", help="Keras 3 backend: tensorflow, jax or torch (default: each)")
    p.add_argument("--model", default=model_default, help=f"{_models()} (default: %(default)s)")


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
    p.add_argument("--precision", default="fp32", choices=INFER_PRECISIONS,
                   help="fp32, bf16, fp16 (cuda); int8 only for --task infer on a runtime that quantizes")
    p.add_argument("--compile", action="store_true", help="torch.compile / XLA jit_compile where offered")
    p.add_argument("--image-size", type=positive_int, default=32, help="resnet50 input side (default: 32)")
    p.add_argument("--variant", type=variant, default=(), help="KEY=VALUE[,KEY=VALUE]: another way a user of a "
                   f"binding writes the same training; {_variants()} (default: the first of each)")
    p.add_argument("--data-dir", help="data cache (default: $DL_ROSETTA_DATA or ~/.cache/dl-rosetta)")


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Every option of `run` (and of a suite entry)."""
    add_selection(p)
    p.add_argument("--epochs", type=positive_int, help="default: the spec's (cnn 10, resnet50 10, rnn 3, transformer 10)")
    p.add_argument("--batch-size", type=positive_int, help="default: the spec's (64)")
    p.add_argument("--data", help="cifar10, imdb, shakespeare, synthetic, FILE.npz or (transformer) FILE.txt "
                   "(default: the model's data set)")
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
    add_infer_arguments(p)


def add_infer_arguments(p: argparse.ArgumentParser, task: bool = True) -> None:
    """The inference task's options (harness.inference): on `run` with --task infer, and on `infer`."""
    if task:
        p.add_argument("--task", default="train", choices=TASKS, help="train (default): time training; infer: "
                       "export the trained model and time inference natively and on deployment runtimes")
    p.add_argument("--runtime", help="--task infer: comma-separated native, onnxruntime, openvino, tvm, iree, "
                   "litert (default: native and every installed runtime that reads the export)")
    p.add_argument("--weights", help="--task infer: canonical weights (.npz) instead of the brief training")
    p.add_argument("--threads", type=positive_int, help="--task infer: compute threads of every runtime "
                   "(default: the cores this process may use)")
    p.add_argument("--queries", type=rank, default=300, help="--task infer: single-stream (batch 1) queries for "
                   "the latency percentiles (default: 300; 0: none)")
    p.add_argument("--passes", type=positive_int, default=3, help="--task infer: timed offline passes after the "
                   "warm-up pass (default: 3)")
    p.add_argument("--examples", type=positive_int, help="--task infer: offline examples N (default: 1024 or "
                   "the whole test set if smaller, in full batches)")


def add_implementation(p: argparse.ArgumentParser) -> None:
    """Exactly one implementation, as `run` names them (weights, predict)."""
    no_abbreviations(p)
    p.add_argument("--lang", default="python", help=f"{_langs()} (default: python)")
    p.add_argument("--framework", required=True, help="e.g. pytorch, tensorflow, keras, jax, mxnet, chainer, "
                   "pytensor, flux, knet")
    p.add_argument("--backend", help="Keras 3 backend: tensorflow, jax or torch")
    p.add_argument("--model", required=True, help=_models())
    p.add_argument("--device", default="cpu", choices=DEVICES)
    p.add_argument("--timeout", type=timeout_seconds, default=1800.0, help="seconds for the worker (default: 1800)")


# --------------------------------------------------------------------------- Namespace -> typed values
def selection(ns: argparse.Namespace) -> Selection:
    return Selection(ns.lang, ns.framework, ns.backend, ns.model)


def device_setup(ns: argparse.Namespace) -> DeviceSetup:
    return DeviceSetup(device=ns.device, gpus=ns.gpus, scaling=ns.scaling, nodes=ns.nodes,
                       rdzv_endpoint=ns.rdzv_endpoint, node_rank=ns.node_rank, workers=ns.workers,
                       precision=ns.precision, compile=ns.compile, image_size=ns.image_size,
                       variant=getattr(ns, "variant", ()))


def run_request(ns: argparse.Namespace) -> RunRequest:
    return RunRequest(selection(ns), device_setup(ns), epochs=ns.epochs, batch_size=ns.batch_size, data=ns.data,
                      samples=ns.samples, seed=ns.seed, repeats=ns.repeats, timeout=ns.timeout, out=ns.out,
                      resume=ns.resume, data_dir=ns.data_dir, refresh=getattr(ns, "refresh", False))


def infer_request(ns: argparse.Namespace):
    """--task infer: the run request (epochs = the brief training's, batch size = the offline batch) and the rest."""
    from harness.inference import InferRequest, parse_runtimes

    return InferRequest(run_request(ns), runtimes=parse_runtimes(ns.runtime), weights=ns.weights,
                        precision=ns.precision, threads=ns.threads, queries=ns.queries, passes=ns.passes,
                        examples=ns.examples)


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def run_parser() -> argparse.ArgumentParser:
    """`run`'s options as a parser that raises UsageError (for suite files)."""
    p = _Parser(prog="python -m harness run", add_help=False, allow_abbrev=False)
    add_run_arguments(p)
    return p
