"""ONNX Runtime: the CPU execution provider (CUDA / TensorRT providers with the onnxruntime-gpu build).

Threads: intra_op_num_threads = opts.threads (one operator's parallel loops), inter_op 1 and
sequential execution (one operator at a time), so the runtime uses exactly opts.threads cores.
int8: static quantization in QDQ form (per-channel int8 weights, uint8 activations, MinMax ranges)
calibrated on the given training examples; the quantized model is the cached artefact.
fp16 (CUDA only): the model's float tensors converted to float16, inputs and outputs kept float32.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.deploy import cache
from harness.deploy.common import (CompileError, Compiled, DeployOptions, Timer, base_info, batches,
                                   check_calibration, sha256_array, model_sha256)

NAME = "onnxruntime"
CALIBRATION_BATCH = 32


class OrtCompiled(Compiled):
    def __init__(self, session, info: dict):
        self.session, self.info = session, info
        self.input = session.get_inputs()[0].name

    def run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(None, {self.input: x})[0], np.float32)


def _providers(ort, device: str) -> list[str]:
    if device == "cpu":
        return ["CPUExecutionProvider"]
    have = ort.get_available_providers()
    gpu = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in have]
    if not gpu:
        raise CompileError(NAME, f"this onnxruntime build has no GPU provider (available: {', '.join(have)}); "
                                 "install the onnxruntime-gpu build: pip install -e '.[onnxruntime-gpu]'", "setup")
    return gpu + ["CPUExecutionProvider"]


def _quantize(model_path: Path, opts: DeployOptions, input_name: str, out: Path) -> None:
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{input_name: b} for b in batches(opts.calibration, CALIBRATION_BATCH)])

        def get_next(self):
            return next(self.it, None)

    import onnx

    # One self-contained file first: quant_pre_process copies its input alone to a temporary folder,
    # losing the external weights file (<name>.onnx.data) the dynamo exporter writes beside the graph.
    inline, pre = out / "inline.onnx", out / "preprocessed.onnx"
    onnx.save(onnx.load(str(model_path)), str(inline))
    quant_pre_process(str(inline), str(pre), skip_symbolic_shape=True)  # shape inference + graph cleanup
    quantize_static(str(pre), str(out / "model.onnx"), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    inline.unlink()
    pre.unlink()


def _fp16(model_path: Path, out: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx.save(convert_float_to_float16(onnx.load(str(model_path)), keep_io_types=True), str(out / "model.onnx"))


def compile(model_path, fmt: str, example: np.ndarray, opts: DeployOptions) -> Compiled:
    import onnxruntime as ort

    model_path = Path(model_path)
    if fmt != "onnx":
        raise CompileError(NAME, f"reads ONNX, not {fmt}", "setup")
    providers = _providers(ort, opts.device)
    info = base_info(NAME, ort.__version__, opts, providers=providers, target=ort.get_device(),
                     threads_applied=f"intra_op_num_threads={opts.threads}, inter_op_num_threads=1, sequential",
                     model_sha256=model_sha256(model_path))
    session_path, quantize_s = model_path, 0.0
    if opts.precision in ("int8", "fp16"):
        key = {"model_sha256": info["model_sha256"], "runtime": ort.__version__, "precision": opts.precision,
               "target": "any"}
        if opts.precision == "int8":
            check_calibration(opts.calibration, opts.held_out)
            key["calibration_sha256"] = sha256_array(opts.calibration)
            input_name = _input_name(ort, model_path)
            build = lambda out: _quantize(model_path, opts, input_name, out)  # noqa: E731
        else:
            build = lambda out: _fp16(model_path, out)  # noqa: E731
        try:
            entry = cache.cached(opts.cache_dir, NAME, key, build)
        except Exception as e:  # the quantizer's own failure
            raise CompileError(NAME, f"{type(e).__name__}: {e}", "quantize") from e
        session_path, quantize_s = entry.path / "model.onnx", entry.build_s
        info["cache"] = entry.record()
        if opts.precision == "int8":
            info["quantization"] = {"method": "onnxruntime.quantization.quantize_static", "format": "QDQ",
                                    "weights": "int8 per-channel", "activations": "uint8", "ranges": "MinMax",
                                    "calibration_examples": int(len(opts.calibration)), "quantize_s": quantize_s}
    else:
        info["cache"] = {"status": "none: a session is built from the ONNX file in well under a second"}
    so = ort.SessionOptions()
    so.intra_op_num_threads = opts.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    try:
        with Timer() as t:
            session = ort.InferenceSession(str(session_path), so, providers=providers)
    except Exception as e:  # onnxruntime's Fail / InvalidProtobuf / NotImplemented ...
        raise CompileError(NAME, str(e)) from e
    info["compile_s"] = t.s
    info["providers"] = session.get_providers()
    return OrtCompiled(session, info)


def _input_name(ort, model_path: Path) -> str:
    try:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"]).get_inputs()[0].name
    except Exception as e:
        raise CompileError(NAME, str(e)) from e
