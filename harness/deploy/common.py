"""What every runtime module shares: the options, the compiled model, the errors, calibration rules.

Calibration (int8) is drawn from training examples only. `check_calibration` compares every
calibration example's bytes with the held-out (test) examples and refuses any overlap: a
quantizer calibrated on the test set would report an accuracy it never earned.
"""
from __future__ import annotations

import hashlib
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
MLPERF_KEEP = 0.99  # MLPerf Inference: a quantized model keeps at least 99 % of the fp32 accuracy


@dataclass(frozen=True)
class DeployOptions:
    threads: int = 1  # every runtime gets the same number of compute threads (the cores the run is given)
    precision: str = "fp32"  # "fp32" | "fp16" | "bf16" | "int8"
    device: str = "cpu"  # "cpu" | "cuda"
    calibration: np.ndarray | None = None  # int8: training examples, in the export's input layout
    cache_dir: Path = Path(".")  # compiled artefacts, keyed by model SHA-256, runtime version, target, precision
    held_out: np.ndarray | None = None  # int8: the test examples calibration must not contain (refused if it does)
    tuning_trials: int = 0  # TVM MetaSchedule trials (0: untuned kernels); other runtimes ignore it

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choices: {', '.join(PRECISIONS)}")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, not {self.threads}")
        object.__setattr__(self, "cache_dir", Path(self.cache_dir))


class CompileError(Exception):
    """A runtime could not read or compile a model. The message is the runtime's own; the runtime's
    exception is chained as __cause__. The caller records a failed row with it."""

    def __init__(self, runtime: str, message: str, stage: str = "compile"):
        self.runtime, self.stage, self.message = runtime, stage, message.strip()
        super().__init__(f"{runtime} {stage}: {self.message}")


class CalibrationError(ValueError):
    """int8 calibration that is missing, or that contains held-out (test) examples."""


class Compiled(ABC):
    """A model compiled by a runtime. run(x) takes a batch in the export's input layout and dtype and
    returns float32 logits (N, classes); info says how (see harness/deploy/__init__.py)."""

    info: dict

    @abstractmethod
    def run(self, x: np.ndarray) -> np.ndarray:
        ...


def base_info(runtime: str, version: str, opts: DeployOptions, **kw) -> dict:
    return {"runtime": runtime, "version": version, "device": opts.device, "precision": opts.precision,
            "threads": opts.threads, **kw}


class Timer:
    """with Timer() as t: ...; t.s is the wall time in seconds (time.perf_counter)."""

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.s = time.perf_counter() - self.start
        return False


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def model_sha256(path: Path) -> str:
    """The SHA-256 of a model file and, for ONNX, of every external-data file it references (the
    dynamo exporter writes the weights beside the graph, in <name>.onnx.data): other weights in the
    same graph are another model."""
    path = Path(path)
    if path.suffix != ".onnx":
        return sha256_file(path)
    import onnx
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # not ONNX at all: the runtime's reader says why; the file's bytes are the digest
        return sha256_file(path)
    locations = sorted({entry.value for t in _get_all_tensors(model) if uses_external_data(t)
                        for entry in t.external_data if entry.key == "location"})
    h = hashlib.sha256(sha256_file(path).encode())
    for location in locations:
        f = path.parent / location
        h.update(f"{location}:{sha256_file(f) if f.is_file() else 'missing'}".encode())
    return h.hexdigest()


def sha256_array(x: np.ndarray | None) -> str | None:
    if x is None:
        return None
    x = np.ascontiguousarray(x)
    h = hashlib.sha256(f"{x.dtype.str}{x.shape}".encode())
    h.update(x.tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------------- calibration
def _row_digests(x: np.ndarray) -> set[bytes]:
    x = np.ascontiguousarray(x)
    return {hashlib.sha256(row.tobytes()).digest() for row in x.reshape(len(x), -1)}


def check_calibration(calibration: np.ndarray | None, held_out: np.ndarray | None) -> None:
    """Refuse int8 calibration that is missing, or that contains any held-out example (byte-equal)."""
    if calibration is None or len(calibration) == 0:
        raise CalibrationError("int8 needs calibration examples drawn from the training set (DeployOptions.calibration)")
    if held_out is None:
        raise CalibrationError("int8 needs the held-out test examples (DeployOptions.held_out) to prove the "
                               "calibration examples are not among them")
    if calibration.shape[1:] != held_out.shape[1:]:
        raise CalibrationError(f"calibration examples {calibration.shape[1:]} and held-out examples "
                               f"{held_out.shape[1:]} differ in shape: pass both in the export's input layout")
    shared = _row_digests(calibration) & _row_digests(held_out)
    if shared:
        raise CalibrationError(f"{len(shared)} of {len(calibration)} calibration examples are test examples: "
                               "calibrate on training examples only")


def calibration_examples(x_train: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """n training examples in a seeded order: the calibration set for int8."""
    order = np.random.default_rng([seed, 1414]).permutation(len(x_train))[:n]
    return np.ascontiguousarray(x_train[np.sort(order)])


def mlperf_rule(accuracy: float, fp32_accuracy: float, keep: float = MLPERF_KEEP) -> dict:
    """MLPerf Inference's quality target for a quantized model: >= 99 % of the fp32 accuracy."""
    ratio = accuracy / fp32_accuracy if fp32_accuracy > 0 else float("nan")
    return {"accuracy": accuracy, "fp32_accuracy": fp32_accuracy, "ratio": ratio,
            "target": keep, "kept": bool(accuracy >= keep * fp32_accuracy)}


def batches(x: np.ndarray, size: int):
    for i in range(0, len(x), size):
        yield x[i:i + size]
