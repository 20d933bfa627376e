"""MXNet's own exporter, mx.onnx.export_model, from the hybridized Gluon block (batch dynamic).

MXNet 1.9 stamps the file with the newest opset the installed onnx knows, but its operator
translations stop at opset 13 (Split, for one, is written the opset-13 way): the stamp is held at 13."""
from __future__ import annotations

import os
import tempfile
from unittest import mock

import mxnet as mx
import numpy as np

from harness.protocol import ExportUnsupported

MXNET_OPSET = 13


def export(trainer, fmt: str, path: str, example) -> dict:
    if fmt != "onnx":
        raise ExportUnsupported(f"MXNet exports onnx, not {fmt}")
    import onnx

    x = np.asarray(example)
    trainer.predict(x[:1])  # a hybridized block exports the graph its first call cached
    dtype = np.float32 if x.dtype.kind == "f" else np.int32  # the Gluon models take int32 token ids
    with tempfile.TemporaryDirectory(prefix="dl-rosetta-mxnet-") as tmp:
        prefix = os.path.join(tmp, "model")
        trainer.net.export(prefix, epoch=0)  # symbol JSON and parameters
        with mock.patch("onnx.defs.onnx_opset_version", lambda: MXNET_OPSET):
            mx.onnx.export_model(f"{prefix}-symbol.json", f"{prefix}-0000.params", in_shapes=[x.shape],
                                 in_types=[dtype], onnx_file_path=path, dynamic=True,
                                 dynamic_input_shapes=[(None, *x.shape[1:])])
    return {"exporter": f"mx.onnx.export_model, MXNet {mx.__version__}, onnx {onnx.__version__}",
            "layout": "NCHW" if x.ndim == 4 else "tokens", "dynamic_batch": True}
