"""The deployment runtimes: a trained model's export compiled and run outside its framework.

One `Runtime` row per runtime says which export formats it reads, which precisions it offers on
each device, the pyproject extra that installs it and the module that drives it. The parent side
asks `availability(name)` (no heavy import: the modules are found by spec); the worker calls
`load(name).compile(model_path, fmt, example, DeployOptions(...))` and gets a `Compiled` whose
`run(x)` returns float32 logits and whose `info` says how it ran (runtime version, provider or
target, precision, threads and how the runtime applies them, compile_s, the cache outcome).

Every runtime module has the same shape (harness/deploy/onnxruntime.py is the shortest):

    def compile(model_path, fmt, example, opts) -> Compiled

and raises `CompileError` (the runtime's own message, its exception chained) when the runtime
cannot read or compile the model, so that the caller records a failed row, never a crash.
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass

from harness.deploy.common import (CalibrationError, Compiled, CompileError, DeployOptions, PRECISIONS,
                                   check_calibration, calibration_examples, mlperf_rule)
from harness.errors import UsageError, choices_error

__all__ = ["RUNTIMES", "Runtime", "DeployOptions", "Compiled", "CompileError", "CalibrationError",
           "PRECISIONS", "availability", "load", "check_precision", "check_calibration",
           "calibration_examples", "mlperf_rule"]


@dataclass(frozen=True)
class Runtime:
    name: str
    display: str
    formats: tuple[str, ...]  # export formats it reads: "onnx", "tflite"
    precisions: tuple[str, ...]  # on the CPU ("fp32" first)
    extra: str  # pyproject.toml extra: pip install -e '.[extra]'
    module: str  # the harness module that drives it (compile -> Compiled)
    needs: tuple[str, ...]  # importable modules, checked by spec without importing them
    cuda_precisions: tuple[str, ...] = ()  # with --device cuda, where the runtime has a GPU path
    note: str = ""  # what a reader of the results must know about this runtime here

    @property
    def install(self) -> str:
        return f"pip install -e '.[{self.extra}]'"

    def precisions_on(self, device: str) -> tuple[str, ...]:
        return self.cuda_precisions if device == "cuda" else self.precisions


RUNTIMES: dict[str, Runtime] = {r.name: r for r in (
    Runtime("onnxruntime", "ONNX Runtime", ("onnx",), ("fp32", "int8"), "onnxruntime",
            "harness.deploy.onnxruntime", ("onnxruntime",), cuda_precisions=("fp32", "fp16"),
            note="CPU execution provider; int8 = static QDQ quantization (onnxruntime.quantization) "
                 "calibrated on training examples; CUDA/TensorRT providers only with the onnxruntime-gpu "
                 "build (extra onnxruntime-gpu, which replaces the CPU build)"),
    Runtime("openvino", "OpenVINO", ("onnx",), ("fp32", "bf16", "fp16", "int8"), "openvino",
            "harness.deploy.openvino", ("openvino",),
            note="reads the ONNX file directly; bf16/fp16 = the CPU plugin's inference precision hint "
                 "(the precision it actually ran at is recorded); int8 = NNCF post-training quantization"),
    Runtime("tvm", "Apache TVM", ("onnx",), ("fp32",), "tvm", "harness.deploy.tvm", ("tvm", "onnx"),
            note="Relax ONNX frontend, llvm target with the host CPU (-mcpu from LLVM's host detection); "
                 "without MetaSchedule tuning (DeployOptions.tuning_trials) its kernels are untuned"),
    Runtime("iree", "IREE", ("onnx",), ("fp32", "bf16", "fp16"), "iree", "harness.deploy.iree",
            ("iree.compiler", "iree.runtime", "onnx"),
            note="iree-import-onnx then iree-compile for llvm-cpu (target cpu = host), local-task driver; "
                 "compiled for the example's batch (static shapes), recompiled once per new batch size"),
    Runtime("litert", "LiteRT", ("tflite",), ("fp32",), "litert", "harness.deploy.litert", ("ai_edge_litert",),
            note="the TFLite interpreter with its default XNNPACK delegate; the precision is the file's "
                 "(quantize in the TFLite converter)"),
)}


def runtime(name: str) -> Runtime:
    try:
        return RUNTIMES[name]
    except KeyError:
        raise choices_error("runtime", name, RUNTIMES) from None


def availability(name: str) -> str | None:
    """Parent side, without importing the runtime: None if it can run here, else why not and the fix."""
    rt = runtime(name)
    missing = [m for m in rt.needs if _missing(m)]
    if missing:
        return f"{rt.display} is not installed ({', '.join(missing)} missing): {rt.install}"
    return None


def _missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except ModuleNotFoundError:  # a parent package is missing
        return True


def check_precision(name: str, precision: str, device: str = "cpu") -> None:
    """Parent side: refuse a precision the runtime does not offer on this device (one line, the choices)."""
    rt = runtime(name)
    offered = rt.precisions_on(device)
    if precision not in offered:
        where = f" for {name} on {device}"
        if not offered:
            raise UsageError(f"{rt.display} has no {device} path here; choices for --device: cpu")
        raise choices_error("precision", precision, offered, where)


def load(name: str):
    """In the worker: the module that compiles for this runtime (imports the runtime itself lazily)."""
    return importlib.import_module(runtime(name).module)
