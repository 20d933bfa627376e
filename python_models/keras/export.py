"""Keras 3's own exporter, Model.export, on every backend: format="onnx" (tf2onnx on TensorFlow,
jax2onnx on JAX, torch.onnx on torch) and format="litert" (the TFLite converter, TensorFlow)."""
from __future__ import annotations

import keras
import numpy as np

from harness.onnx_files import ONNX_OPSET
from harness.protocol import ExportUnsupported


def export(trainer, fmt: str, path: str, example) -> dict:
    model, backend = trainer.model, keras.backend.backend()
    spec = keras.InputSpec(shape=(None, *np.shape(example)[1:]), dtype=model.inputs[0].dtype)  # batch dynamic
    layout = "NHWC" if np.ndim(example) == 4 else "tokens"
    if fmt == "onnx":
        model.export(path, format="onnx", verbose=False, input_signature=[spec], opset_version=ONNX_OPSET)
    elif fmt == "tflite" and backend == "tensorflow":
        model.export(path, format="litert", verbose=False, input_signature=[spec])
    else:
        raise ExportUnsupported(f"Keras on {backend} exports onnx{' and tflite' if backend == 'tensorflow' else ''}, "
                                f"not {fmt}")
    return {"exporter": f"keras {keras.__version__} Model.export(format={'onnx' if fmt == 'onnx' else 'litert'!r}) "
                        f"on {backend}", "layout": layout, "dynamic_batch": True}
