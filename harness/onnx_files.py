"""Facts of an exported model file, read without any runtime: digest, ONNX opset, graph input.

Imported in workers of every environment (the legacy one included, which has onnx for MXNet's and
Chainer's exporters), so it needs numpy and, for ONNX files, the onnx package only."""
from __future__ import annotations

import hashlib
from pathlib import Path

ONNX_OPSET = 18  # asked of every exporter that takes an opset; exporters that cannot say why (registry notes)
EXTENSIONS = {"onnx": ".onnx", "tflite": ".tflite"}
ONNX_DTYPES = {1: "float32", 6: "int32", 7: "int64", 10: "float16", 16: "bfloat16"}


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def single_file(path) -> bool:
    """Fold an ONNX file's external weights (a sidecar some exporters write, e.g. jax2onnx's file
    mode) back into the file, so that one file and one digest are the export. True if it did."""
    import onnx

    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    external = {e.value for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
                for e in t.external_data if e.key == "location"}
    if not external:
        return False
    model = onnx.load(str(path))  # reads the sidecars
    onnx.save(model, str(path), save_as_external_data=False)
    for name in external:
        (path.parent / name).unlink(missing_ok=True)
    return True


def describe(path, fmt: str) -> dict:
    """{"sha256", "bytes", "opset" (ONNX default domain, None for TFLite), "input": {"name", "dtype",
    "shape" (None for a symbolic dimension)}} of an exported file."""
    path = Path(path)
    out = {"sha256": sha256(path), "bytes": path.stat().st_size, "opset": None, "input": None}
    if fmt == "onnx":
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
            raise ValueError(f"{path.name} keeps its weights in an external file; the harness caches one file per export")
        out["opset"] = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
        weights = {t.name for t in model.graph.initializer}
        first = next(i for i in model.graph.input if i.name not in weights)
        tensor = first.type.tensor_type
        out["input"] = {"name": first.name, "dtype": ONNX_DTYPES.get(tensor.elem_type, str(tensor.elem_type)),
                        "shape": [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]}
    return out
