"""A stand-in for harness.deploy with ONNX Runtime alone, used only while that package is absent.

harness.deploy (the deployment runtimes: ONNX Runtime, OpenVINO, Apache TVM, IREE, LiteRT) is
built on its own branch; the inference task calls it through its interface (RUNTIMES,
availability, load(name).compile(...) -> Compiled with run(x) and info). Until it lands, this
module offers the same interface for ONNX Runtime's CPU execution provider at fp32, so the task,
its records and its checks run end to end. `harness.inference.deploy_api()` prefers the real
package; delete this file once it is merged.
"""
from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.errors import choices_error


@dataclass(frozen=True)
class Runtime:
    name: str
    display: str
    formats: tuple[str, ...]
    precisions: tuple[str, ...]
    extra: str
    module: str
    needs: tuple[str, ...]
    cuda_precisions: tuple[str, ...] = ()
    note: str = ""

    @property
    def install(self) -> str:
        return f"pip install -e '.[{self.extra}]'"


RUNTIMES = {"onnxruntime": Runtime("onnxruntime", "ONNX Runtime", ("onnx",), ("fp32",), "onnxruntime",
                                   "harness.inference_ort", ("onnxruntime",),
                                   note="stand-in (harness/inference_ort.py): CPU execution provider, fp32")}


@dataclass(frozen=True)
class DeployOptions:
    threads: int = 1
    precision: str = "fp32"
    device: str = "cpu"
    calibration: np.ndarray | None = None
    cache_dir: Path = field(default=Path("."))


class CompileError(Exception):
    def __init__(self, runtime: str, message: str, stage: str = "compile"):
        self.runtime, self.stage, self.message = runtime, stage, message.strip()
        super().__init__(f"{runtime} {stage}: {self.message}")


def availability(name: str) -> str | None:
    if name not in RUNTIMES:
        raise choices_error("runtime", name, RUNTIMES)
    rt = RUNTIMES[name]
    missing = [m for m in rt.needs if importlib.util.find_spec(m) is None]
    return f"{rt.display} is not installed ({', '.join(missing)} missing): {rt.install}" if missing else None


def load(name: str):
    return importlib.import_module(RUNTIMES[name].module)


class Compiled:
    def __init__(self, session, info: dict):
        self.session, self.info = session, info
        self.input = session.get_inputs()[0].name

    def run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(None, {self.input: x})[0], np.float32)


def compile(model_path, fmt: str, example: np.ndarray, opts) -> Compiled:  # noqa: A001 - the interface's name
    import onnxruntime as ort

    if fmt != "onnx" or opts.precision != "fp32" or opts.device != "cpu":
        raise CompileError("onnxruntime", f"the stand-in runs onnx at fp32 on cpu, not {fmt} {opts.precision} {opts.device}")
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = opts.threads, 1
    t = time.perf_counter()
    try:
        session = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - the runtime's own message, for a failed row
        raise CompileError("onnxruntime", str(e)) from e
    info = {"runtime": "onnxruntime", "version": ort.__version__, "provider": "CPUExecutionProvider",
            "precision": "fp32", "threads": opts.threads, "device": "cpu",
            "compile_s": time.perf_counter() - t, "stand_in": True}
    return Compiled(session, info)
