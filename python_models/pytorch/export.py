"""PyTorch's own exporter: torch.onnx.export with the dynamo tracer (torch.export), batch dynamic."""
from __future__ import annotations

import numpy as np
import torch

from harness.onnx_files import ONNX_OPSET
from harness.protocol import ExportUnsupported


def export(trainer, fmt: str, path: str, example) -> dict:
    if fmt != "onnx":
        raise ExportUnsupported(f"PyTorch exports onnx, not {fmt}")
    x = np.asarray(example)
    if len(x) < 2:  # torch.export specialises a dimension of size 1: trace a batch of two
        x = np.concatenate([x, x])
    model = trainer.model.eval()
    batch = torch.export.Dim("batch")
    program = torch.onnx.export(model, (torch.as_tensor(x).to(trainer.device),), dynamo=True,
                                dynamic_shapes=({0: batch},), input_names=["input"], output_names=["logits"],
                                opset_version=ONNX_OPSET)  # optimize=True (the default) folds constants
    program.save(path, external_data=False)  # one file: the weights inside
    return {"exporter": f"torch.onnx.export (dynamo) torch {torch.__version__}",
            "layout": "NCHW" if x.ndim == 4 else "tokens", "dynamic_batch": True}
