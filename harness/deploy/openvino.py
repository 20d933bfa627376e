"""OpenVINO: the CPU plugin reads the ONNX file directly (its ONNX frontend).

Threads: INFERENCE_NUM_THREADS = opts.threads, one stream (NUM_STREAMS 1, the LATENCY hint): one
infer request at a time uses every thread, as the other runtimes do, for throughput too.
Precision: fp32/bf16/fp16 set INFERENCE_PRECISION_HINT (f32/bf16/f16), always explicitly: on a CPU
with AVX512_BF16 or AMX the plugin's default is bf16 (seen here on an AMD EPYC: an unset hint ran
bf16), so "OpenVINO fp32" would otherwise be bf16. The plugin answers with the
precision it will really use, which must be the one asked for (a CPU without FP16 capability turns
f16 into bf16: refused, not mislabelled). int8: NNCF post-training quantization of the OpenVINO
model on the calibration examples (the quantized IR is cached); its non-quantized layers run in f32.
The compiled blob (CompiledModel.export_model) is the cached artefact, keyed with the threads.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.deploy import cache
from harness.deploy.common import (CompileError, Compiled, DeployOptions, Timer, base_info, batches,
                                   check_calibration, sha256_array, model_sha256)
from harness.deploy.host import cpu_fingerprint

NAME = "openvino"
HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}
CALIBRATION_BATCH = 1  # NNCF collects statistics per dataset item


class OvCompiled(Compiled):
    def __init__(self, compiled, info: dict):
        self.compiled, self.info = compiled, info
        self.request = compiled.create_infer_request()

    def run(self, x: np.ndarray) -> np.ndarray:
        self.request.infer({0: x})
        return np.array(self.request.get_output_tensor(0).data, np.float32)  # a copy: the buffer is reused


def _quantize(core, model_path: Path, opts: DeployOptions, out: Path) -> None:
    import nncf
    import openvino as ov

    model = core.read_model(str(model_path))
    data = nncf.Dataset(list(batches(opts.calibration, CALIBRATION_BATCH)))
    q = nncf.quantize(model, data, subset_size=len(opts.calibration), preset=nncf.QuantizationPreset.PERFORMANCE)
    ov.save_model(q, str(out / "model.xml"))


def compile(model_path, fmt: str, example: np.ndarray, opts: DeployOptions) -> Compiled:
    import openvino as ov

    model_path = Path(model_path)
    if fmt != "onnx":
        raise CompileError(NAME, f"reads ONNX here, not {fmt}", "setup")
    if opts.device != "cpu":
        raise CompileError(NAME, "the OpenVINO GPU plugin is for Intel GPUs; choices for --device: cpu", "setup")
    core = ov.Core()
    version = ov.get_version()
    config = {"INFERENCE_NUM_THREADS": opts.threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_PRECISION_HINT": HINTS[opts.precision]}
    info = base_info(NAME, version, opts, target=f"CPU: {cpu_fingerprint()}", config={k: str(v) for k, v in config.items()},
                     threads_applied=f"INFERENCE_NUM_THREADS={opts.threads}, NUM_STREAMS=1 (LATENCY hint)",
                     capabilities=list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")),
                     model_sha256=model_sha256(model_path))
    key = {"model_sha256": info["model_sha256"], "runtime": version, "target": cpu_fingerprint(),
           "precision": opts.precision}
    source, quantize_s = model_path, 0.0
    if opts.precision == "int8":
        check_calibration(opts.calibration, opts.held_out)
        qkey = {**key, "calibration_sha256": sha256_array(opts.calibration), "nncf": _nncf_version(), "stage": "nncf"}
        try:
            q = cache.cached(opts.cache_dir, NAME, qkey, lambda out: _quantize(core, model_path, opts, out))
        except Exception as e:
            raise CompileError(NAME, f"{type(e).__name__}: {e}", "quantize") from e
        source, quantize_s = q.path / "model.xml", q.build_s
        key["calibration_sha256"] = qkey["calibration_sha256"]
        info["quantization"] = {"method": f"NNCF {_nncf_version()} nncf.quantize (post-training, PERFORMANCE preset)",
                                "calibration_examples": int(len(opts.calibration)), "quantize_s": quantize_s,
                                "cache": q.record()}

    def build(out: Path) -> None:
        compiled = core.compile_model(str(source), "CPU", config)
        blob = compiled.export_model()  # an io.BytesIO in this API
        (out / "compiled.blob").write_bytes(blob.getvalue() if hasattr(blob, "getvalue") else bytes(blob))

    key.update(threads=opts.threads, config=info["config"])
    try:
        with Timer() as t:
            entry = cache.cached(opts.cache_dir, NAME, key, build)
            compiled = core.import_model((entry.path / "compiled.blob").read_bytes(), "CPU", config)
    except Exception as e:  # OpenVINO's frontend / plugin message
        raise CompileError(NAME, str(e)) from e
    info["compile_s"] = t.s
    info["cache"] = entry.record()
    ran = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # "f32", "bf16", "f16"
    info["inference_precision"] = ran
    info["execution_devices"] = list(compiled.get_property("EXECUTION_DEVICES"))
    if ran != HINTS[opts.precision]:
        raise CompileError(NAME, f"asked for {HINTS[opts.precision]}, the CPU plugin would run {ran} "
                                 f"(capabilities: {', '.join(info['capabilities'])})", "setup")
    return OvCompiled(compiled, info)


def _nncf_version() -> str:
    import nncf

    return nncf.__version__
