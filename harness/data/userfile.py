"""A user's own .npz (x_train, y_train, x_test, y_test), validated against the model's spec.

`check_archive` reads only the zip directory and each array's .npy header, so a file that is not
an .npz, that declares arrays larger than it holds or than this machine's memory, or whose arrays
are empty, is refused before anything is decompressed; `load` then checks the values.
"""
from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from harness.errors import UsageError
from harness.specs import ModelSpec

KEYS = ("x_train", "y_train", "x_test", "y_test")


def _header(f) -> tuple[tuple, np.dtype]:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise ValueError(f"unsupported .npy format version {version}")
    return tuple(shape), dtype


def check_archive(path: Path, spec: ModelSpec) -> None:
    """Refuse, from the zip directory and the .npy headers alone, what `load` could not take."""
    from harness.data.memory import check_fits, gb

    if not zipfile.is_zipfile(path):
        raise UsageError(f"{path} is not an .npz archive (a zip of .npy arrays, as numpy.savez writes); "
                         f"an .npz needs {', '.join(KEYS)}")
    needed = 0
    try:
        with zipfile.ZipFile(path) as z:
            members = {i.filename: i for i in z.infolist()}
            missing = [k for k in KEYS if f"{k}.npy" not in members]
            if missing:
                raise UsageError(f"{path}: missing arrays {', '.join(missing)}; an .npz needs {', '.join(KEYS)}")
            for k in KEYS:
                info = members[f"{k}.npy"]
                with z.open(info) as f:
                    shape, dtype = _header(f)
                    offset = f.tell()
                if dtype.hasobject:
                    raise UsageError(f"{path}: {k} holds Python objects (pickled); arrays must be numbers")
                declared = math.prod(shape) * dtype.itemsize
                if declared != info.file_size - offset:
                    raise UsageError(f"{path}: {k} declares {dtype} {shape} ({gb(declared)}) but holds "
                                     f"{gb(info.file_size - offset)}; the file is damaged")
                if k.startswith("x_") and (not shape or shape[0] == 0):
                    raise UsageError(f"{path}: {k} holds no examples (shape {shape})")
                # uint8 images become float32 (4x); the prepared copy is written beside the original
                needed += declared * (4 if dtype == np.uint8 and spec.input_dtype == "float32" else 1)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise UsageError(f"cannot read {path} as .npz ({e})") from None
    check_fits(2 * needed, f"the arrays of {path}", "use a smaller file")


def _check_x(name: str, x: np.ndarray, spec: ModelSpec, path: Path) -> np.ndarray:
    want = spec.input_shape
    if x.ndim != len(want) + 1 or tuple(x.shape[1:]) != want:
        raise UsageError(f"{path}: {name} has shape {x.shape}, model {spec.name} needs (N, {', '.join(map(str, want))})")
    if spec.input_dtype == "float32":
        if x.dtype == np.uint8:
            return x.astype(np.float32) * np.float32(1 / 255)
        if x.dtype not in (np.float32, np.float64):
            raise UsageError(f"{path}: {name} has dtype {x.dtype}; images must be float32 in [0,1] or uint8")
        if not x.size:
            raise UsageError(f"{path}: {name} holds no examples")
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
