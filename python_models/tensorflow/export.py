"""TensorFlow's exporters, both from the eval tf.function (NHWC images, batch dynamic):
tf2onnx to ONNX and the TFLite converter to LiteRT's flatbuffer."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from harness.onnx_files import ONNX_OPSET
from harness.protocol import ExportUnsupported


def export(trainer, fmt: str, path: str, example) -> dict:
    # The eval function of the trainer (trainer._forward), traced for this input: the batch stays
    # dynamic, the image side is the example's (the trainer's own signature leaves H and W open,
    # which the TFLite runtime cannot plan and some ONNX compilers cannot reshape).
    x = np.asarray(example)
    signature = [tf.TensorSpec([None, *x.shape[1:]], tf.float32 if x.dtype.kind == "f" else tf.int64)]
    forward = tf.function(lambda x: trainer.model(x, training=False), input_signature=signature)
    layout = "NHWC" if x.ndim == 4 else "tokens"
    if fmt == "onnx":
        import tf2onnx

        tf2onnx.convert.from_function(forward, input_signature=signature, opset=ONNX_OPSET, output_path=path)
        return {"exporter": f"tf2onnx {tf2onnx.__version__} (tf.function), TensorFlow {tf.__version__}",
                "layout": layout, "dynamic_batch": True}
    if fmt == "tflite":
        converter = tf.lite.TFLiteConverter.from_concrete_functions([forward.get_concrete_function()], trainer.model)
        with open(path, "wb") as f:
            f.write(converter.convert())
        return {"exporter": f"tf.lite.TFLiteConverter (tf.function), TensorFlow {tf.__version__}",
                "layout": layout, "dynamic_batch": True}
    raise ExportUnsupported(f"TensorFlow exports onnx and tflite, not {fmt}")
