"""A user's own .npz (x_train, y_train, x_test, y_test), validated against the model's spec."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from harness.errors import UsageError
from harness.specs import ModelSpec

KEYS = ("x_train", "y_train", "x_test", "y_test")


def _check_x(name: str, x: np.ndarray, spec: ModelSpec, path: Path) -> np.ndarray:
    want = spec.input_shape
    if x.ndim != len(want) + 1 or tuple(x.shape[1:]) != want:
        raise UsageError(f"{path}: {name} has shape {x.shape}, model {spec.name} needs (N, {', '.join(map(str, want))})")
    if spec.input_dtype == "float32":
        if x.dtype == np.uint8:
            return x.astype(np.float32) * np.float32(1 / 255)
        if x.dtype not in (np.float32, np.float64):
            raise UsageError(f"{path}: {name} has dtype {x.dtype}; images must be float32 in [0,1] or uint8")
        if not np.isfinite(x).all():
            raise UsageError(f"{path}: {name} contains NaN or infinite values")
        if x.min() < 0 or x.max() > 1:
            raise UsageError(f"{path}: {name} values span [{x.min():g}, {x.max():g}]; float images must lie in [0, 1]")
        return x.astype(np.float32)
    if not np.issubdtype(x.dtype, np.integer):
        raise UsageError(f"{path}: {name} has dtype {x.dtype}; token ids must be integers")
    vocab = spec.arch.vocab
    if x.size and (x.min() < 0 or x.max() >= vocab):
        raise UsageError(f"{path}: {name} token ids span [{x.min()}, {x.max()}]; they must lie in [0, {vocab})")
    return x.astype(np.int64)


def _check_y(name: str, y: np.ndarray, n: int, spec: ModelSpec, path: Path) -> np.ndarray:
    """Class labels (N,), or a next-token model's targets (N, T): one per position, ids of its vocabulary."""
    want = (n, *spec.target_shape)
    if y.shape != want:
        raise UsageError(f"{path}: {name} has shape {y.shape}, expected {want} to match its x"
                         + (" (a next-token target per position)" if spec.sequence else ""))
    if not np.issubdtype(y.dtype, np.integer):
        raise UsageError(f"{path}: {name} has dtype {y.dtype}; {'targets' if spec.sequence else 'labels'} must be integers")
    if y.size and (y.min() < 0 or y.max() >= spec.num_classes):
        what = "targets" if spec.sequence else "labels"
        raise UsageError(
            f"{path}: {name} {what} span [{y.min()}, {y.max()}]; model {spec.name} has classes 0..{spec.num_classes - 1}"
        )
    return y.astype(np.int64)


def load(path: Path, spec: ModelSpec) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in KEYS if k not in f.files]
            if missing:
                raise UsageError(f"{path}: missing arrays {', '.join(missing)}; an .npz needs {', '.join(KEYS)}")
            raw = {k: f[k] for k in KEYS}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise UsageError(f"cannot read {path} as .npz ({e})") from None
    out = {}
    for split in ("train", "test"):
        x = _check_x(f"x_{split}", raw[f"x_{split}"], spec, path)
        out[f"x_{split}"] = x
        out[f"y_{split}"] = _check_y(f"y_{split}", raw[f"y_{split}"], len(x), spec, path)
    return out
