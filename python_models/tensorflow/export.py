"""TensorFlow's exporters, both from the eval tf.function (NHWC images, batch dynamic):
tf2onnx to ONNX and the TFLite converter to LiteRT's flatbuffer."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from harness.onnx_files import ONNX_OPSET
from harness.protocol import ExportUnsupported


def export(trainer, fmt: str, path: str, example) -> dict:
    forward = trainer._forward  # tf.function(model(x, training=False)) with its input signature
    layout = "NHWC" if np.ndim(example) == 4 else "tokens"
    if fmt == "onnx":
        import tf2onnx

        tf2onnx.convert.from_function(forward, input_signature=forward.input_signature, opset=ONNX_OPSET,
                                      output_path=path)
        return {"exporter": f"tf2onnx {tf2onnx.__version__} (tf.function), TensorFlow {tf.__version__}",
                "layout": layout, "dynamic_batch": True}
    if fmt == "tflite":
        converter = tf.lite.TFLiteConverter.from_concrete_functions([forward.get_concrete_function()], trainer.model)
        with open(path, "wb") as f:
            f.write(converter.convert())
        return {"exporter": f"tf.lite.TFLiteConverter (tf.function), TensorFlow {tf.__version__}",
                "layout": layout, "dynamic_batch": True}
    raise ExportUnsupported(f"TensorFlow exports onnx and tflite, not {fmt}")
