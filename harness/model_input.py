"""What a model is fed: the prepared arrays in the layout and size the implementation declares.

Images are prepared (N, C, H, W); an implementation that declares NHWC gets them transposed, and
ResNet-50 at `--image-size S` gets them upsampled, both before the clock starts. Used inside the
worker (every mode) and by the parent (check 4 recomputes what an implementation must have seen).
"""
from __future__ import annotations

import numpy as np


def to_layout(x: np.ndarray, layout: str) -> np.ndarray:
    """Images arrive NCHW; an implementation that declares NHWC gets them converted here, untimed."""
    if x.ndim == 4 and layout == "NHWC":
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    return x


def upsample(x: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of (N,C,H,W) images to size x size (ResNet-50's --image-size)."""
    if x.ndim != 4 or x.shape[-1] == size:
        return x
    rows = (np.arange(size) * x.shape[-2]) // size
    cols = (np.arange(size) * x.shape[-1]) // size
    return np.ascontiguousarray(x[:, :, rows][:, :, :, cols])


def model_input(model: str, options, x: np.ndarray, layout: str) -> np.ndarray:
    """x as `model` takes it under `options` (RunOptions) in the declared `layout`."""
    if model == "resnet50":
        x = upsample(x, options.image_size)
    return to_layout(x, layout)
