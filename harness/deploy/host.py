"""The host CPU as compilers name it, and ONNX helpers the runtimes share."""
from __future__ import annotations

import functools
import hashlib
import platform
from pathlib import Path

import numpy as np


@functools.lru_cache(maxsize=None)
def cpu_fingerprint() -> str:
    """The CPU's model name and a digest of its feature flags (part of every host-targeted cache key):
    code compiled for this CPU's vector extensions must not be reused on another."""
    model, flags = platform.processor() or platform.machine(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            k, _, v = line.partition(":")
            if k.strip() == "model name" and model in ("", platform.machine(), platform.processor()):
                model = v.strip()
            elif k.strip() in ("flags", "Features") and not flags:
                flags = " ".join(sorted(v.split()))
    except OSError:
        pass
    return f"{model} [{hashlib.sha256(flags.encode()).hexdigest()[:12]}]"


def onnx_input(model_path: Path) -> tuple[str, list]:
    """The ONNX graph's one real input: its name and dims (int, or the dim_param string)."""
    import onnx

    m = onnx.load(str(model_path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    inputs = [i for i in m.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ValueError(f"expected one input, found {[i.name for i in inputs]}")
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in inputs[0].type.tensor_type.shape.dim]
    return inputs[0].name, dims


def static_batch(model_path: Path, batch: int, out: Path) -> Path:
    """A copy of an ONNX model with its batch dimension fixed (compilers that want static shapes)."""
    import onnx
    from onnx.tools import update_model_dims

    m = onnx.load(str(model_path))
    def dims(v):
        ds = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in v.type.tensor_type.shape.dim]
        return [batch] + ds[1:]
    inputs = {i.name: dims(i) for i in m.graph.input if i.name not in {t.name for t in m.graph.initializer}}
    outputs = {o.name: dims(o) for o in m.graph.output}
    m = update_model_dims.update_inputs_outputs_dims(m, inputs, outputs)
    m = onnx.shape_inference.infer_shapes(m)
    onnx.save(m, str(out))
    return out


def as_float32(y) -> np.ndarray:
    return np.asarray(y, dtype=np.float32)
