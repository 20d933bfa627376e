"""Chainer to ONNX with onnx-chainer 1.6 (Chainer's own exporter, installed without its chainer<7
pin: it runs against Chainer 7.8). It traces one forward pass, so the file takes the example's
batch size only (static shapes)."""
from __future__ import annotations

import chainer
import numpy as np

from harness.protocol import ExportUnsupported


def export(trainer, fmt: str, path: str, example) -> dict:
    if fmt != "onnx":
        raise ExportUnsupported(f"Chainer exports onnx, not {fmt}")
    import onnx_chainer

    x = trainer._input(np.asarray(example))  # the device array the model takes (int32 token ids)
    with chainer.using_config("train", False), chainer.no_backprop_mode():
        onnx_chainer.export(trainer.model, x, filename=path)  # opset: onnx-chainer's newest (11)
    return {"exporter": f"onnx-chainer {onnx_chainer.__version__}, Chainer {chainer.__version__}",
            "layout": "NCHW" if np.ndim(example) == 4 else "tokens", "dynamic_batch": False}
