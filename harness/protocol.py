"""The contract between the harness and an implementation, in any language.

The harness owns the data arrays, the epoch order and the clock. An implementation module
(`python_models/<framework>/<model>.py`) exposes

    build(spec: ModelSpec, options: RunOptions) -> Trainer

and the Trainer it returns does the rest:

    trainer.info: dict                    fast-path options and deviations it declares
                                          (keys: "layout", "fast_path", "deviations", ...)
    trainer.fit_data(x, y)                untimed: take the training arrays (may copy to device)
    trainer.train_epoch(batches) -> array timed: one step per row of `batches`, returns the
                                          per-step losses (float, host memory) only once every
                                          step's device work has finished
    trainer.predict(x) -> ndarray         eval-mode logits (N, classes), float32, host memory
    trainer.get_weights() -> dict         canonical weights (harness.specs keys, PyTorch layouts)
    trainer.set_weights(dict)             load canonical weights
    trainer.param_count() -> int          trainable parameters, counted by the framework itself
    trainer.peak_device_memory() -> int|None   bytes, optional
    trainer.data_digest(name) -> str      optional: SHA-256 (hex) of the bytes of the array that
                                          fit_data received ("x" or "y"), computed in the
                                          implementation's own runtime (R, Julia) as it sees them

R and Julia runtimes wrap their language's objects to present the same methods.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

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
