"""The contract between the harness and an implementation, in any language.

The harness owns the data arrays, the epoch order and the clock. An implementation module
(`python_models/<framework>/<model>.py`) exposes

    build(spec: ModelSpec, options: RunOptions) -> Trainer

and the Trainer (below) does the rest. R and Julia runtimes wrap their language's objects in a
Trainer of their own (harness/runtimes/r.py, julia.py), so the worker sees one interface.
"""
from __future__ import annotations

import time
from abc import abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Protocol, runtime_checkable

DEVICES = ("cpu", "cuda")
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class RunOptions:
    seed: int = 0
    device: str = "cpu"
    gpus: int = 1
    precision: str = "fp32"
    scaling: str = "weak"  # weak: batch per replica = spec batch, lr x replicas; strong: global batch = spec batch
    nodes: int = 1  # machines (torchrun rendezvous); replicas = gpus x nodes
    compile: bool = False  # torch.compile / XLA jit_compile where the framework offers it
    backend: str | None = None  # Keras 3 backend
    dropout: bool = True  # False for the equivalence checks' training steps
    image_size: int = 32  # resnet50 input side; larger sizes are upsampled before the clock
    extra: dict = field(default_factory=dict)  # implementation-specific options, recorded verbatim

    def to_dict(self) -> dict:
        return asdict(self)


@runtime_checkable
class Trainer(Protocol):
    """What the harness asks of a built model. Subclass it: the required methods are abstract,
    the optional ones have the defaults shown here.

    `info` (an attribute) holds what the implementation declares: "layout" ("NCHW" or "NHWC", the
    image layout fit_data/predict take), "fast_path" (options it uses), "deviations" (departures
    from the spec, in words), "setup" (setup_record(...): the device setup it trains on), and, for
    a runtime that compiles code for the run, "compile" ({"seconds", "cached", "phase": "import" or
    "build"}: the worker records those seconds as timing.compile_s, apart from that phase's time)."""

    info: dict

    @abstractmethod
    def fit_data(self, x, y) -> None:
        """Untimed: take the training arrays (x in the declared layout; y int64: class labels (N,),
        or the transformer's next-byte targets (N, T), spec.target_shape); may copy them to the device."""

    @abstractmethod
    def train_epoch(self, batches: Batches):
        """Timed: one optimiser step per row of `batches` (row = the example indices of one batch).
        Returns the per-step losses (host memory), only once every step's device work is done."""

    @abstractmethod
    def predict(self, x):
        """Eval-mode logits, float32, host memory, in batches of harness.specs.EVAL_BATCH: (N, classes),
        or (N, T, vocab) for a next-token model (spec.logits_shape(N))."""

    @abstractmethod
    def get_weights(self) -> dict:
        """The canonical weights: the spec's keys, PyTorch's layouts, float32 host arrays."""

    @abstractmethod
    def set_weights(self, weights: dict) -> None:
        """Load canonical weights; call check_weights(spec, weights) first."""

    @abstractmethod
    def param_count(self) -> int:
        """Trainable parameters, counted by the framework itself."""

    # ---- optional
    def barrier(self) -> None:
        """Data-parallel replicas wait here for each other before each epoch's clock starts."""

    def peak_device_memory(self) -> int | None:
        """Peak bytes allocated on the device (the most of any replica), None where unknown."""
        return None

    def matmul_peak(self, precision: str) -> float | None:
        """Peak FLOP/s of a dense matrix product in this implementation's framework, on its device,
        at `precision` ("fp32", "bf16", "fp16") and its thread count (what MFU divides by; the
        harness caches it per machine, harness.peak). Put the thread count in info["threads"].
        Default: numpy's BLAS in float32 (None for reduced precisions), declared as such in the record."""
        from harness.peak import numpy_matmul_peak

        return numpy_matmul_peak(precision)

    def infer(self, x):
        """Eval-mode logits of one batch `x` (host array in the declared layout), float32 host memory:
        the framework's own way of serving a batch, timed by the inference task (`--task infer
        --runtime native`). Default: predict(x), which is one forward pass for a batch of at most
        EVAL_BATCH; override where a framework has a leaner single-batch call."""
        return self.predict(x)

    def export(self, fmt: str, path: str, example) -> dict:
        """Write the model, with its current weights, to `path` in format `fmt` ("onnx", "tflite")
        with the framework's own exporter, for input like `example` (a batch in the declared
        layout). Returns what the record needs: {"exporter": name and version, "layout": the input
        layout the file takes ("NCHW", "NHWC" or "tokens"), "dynamic_batch": whether the file takes
        any batch size (False: it takes the example's only), and anything else worth keeping}.
        Default: no exporter (ExportUnsupported); the registry row names what a framework offers."""
        raise ExportUnsupported(f"{type(self).__name__} has no exporter")

    def data_digest(self, name: str) -> str | None:
        """SHA-256 (hex) of the bytes of the training array fit_data received ("x" or "y"), computed
        in the implementation's own runtime (R, Julia) as it holds them; None: the worker digests
        the array it handed over."""
        return None


class ExportUnsupported(NotImplementedError):
    """The framework (or this model in it) has no exporter for the asked format."""


def check_weights(spec, weights: dict) -> None:
    """The one check every set_weights makes: exactly the spec's keys, each in the spec's shape
    (dtypes are each framework's to convert). Raises ValueError naming what differs."""
    from harness.canonical import shapes_of, weight_problems

    problems = [p for p in weight_problems(spec, shapes_of(weights)) if "canonical weights are float32" not in p]
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ValueError(f"weights differ from the {spec.name} spec: {'; '.join(problems[:5])}{more}")


def setup_record(options: RunOptions, engine: str = "one process", devices: list | None = None,
                 replicas: int | None = None, cuda: str | None = None, cudnn=None, nccl: str | None = None) -> dict:
    """A trainer's info["setup"]: the device setup every record carries, the same fields for every
    framework (peak_bytes_per_device is filled in by peak_device_memory once training ran).
    `devices` are this process's; `replicas` counts all of them (every node's), by default len(devices)."""
    devices = list(devices) if devices is not None else [options.device]
    replicas = len(devices) if replicas is None else replicas
    return {"engine": engine, "replicas": replicas, "gpus_per_node": options.gpus, "nodes": options.nodes,
            "scaling": options.scaling, "precision": options.precision, "devices": devices,
            "cuda": cuda, "cudnn": cudnn, "nccl": nccl, "peak_bytes_per_device": None}


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int):
    """The harness's epoch order: a seeded permutation cut into full batches.

    Returns (n // batch_size, batch_size) int64 row indices; the last partial batch is dropped."""
    import numpy as np

    perm = np.random.default_rng([seed, epoch]).permutation(n)
    steps = n // batch_size
    return perm[: steps * batch_size].reshape(steps, batch_size).astype(np.int64)


class Batches:
    """Iterates the rows of an epoch plan, reporting progress at most every `every` seconds.

    Iterating costs one clock read per batch; `.index` is the plain (steps, batch) array for
    runtimes (R, Julia) that index on their side."""

    def __init__(self, index, report=None, every: float = 0.5):
        self.index = index
        self._report = report
        self._every = every

    def __len__(self) -> int:
        return len(self.index)

    def __iter__(self):
        report, every = self._report, self._every
        last = time.monotonic()
        for i, row in enumerate(self.index):
            yield row
            if report is not None:
                now = time.monotonic()
                if now - last >= every:
                    report(i + 1, len(self.index))
                    last = now
