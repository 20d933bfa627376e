"""Text as next-byte examples: any bytes, cut into non-overlapping windows of context + 1 bytes.

A window's first `context` bytes are x, its last `context` bytes y (x shifted by one): y[t] is the
byte after x[t]. The text is split 90/10 by position (the first 90 % of the bytes train, the rest
test, as nanoGPT splits Shakespeare), and each part is cut into windows from its start; a part's
last bytes that fill no whole window are left out. Bytes are token ids 0..255: no tokenizer.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.errors import UsageError

TRAIN_FRACTION = 0.9


def windows(data: bytes | np.ndarray, context: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y), each (N, context) int64, from N = len(data) // (context + 1) whole windows."""
    ids = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) else np.asarray(data)
    n = len(ids) // (context + 1)
    w = ids[: n * (context + 1)].reshape(n, context + 1).astype(np.int64)
    return np.ascontiguousarray(w[:, :-1]), np.ascontiguousarray(w[:, 1:])


def split_point(size: int) -> int:
    return int(size * TRAIN_FRACTION)


def split_sizes(size: int, context: int) -> tuple[int, int]:
    """(train windows, test windows) of a text of `size` bytes."""
    cut = split_point(size)
    return cut // (context + 1), (size - cut) // (context + 1)


def examples(data: bytes, context: int) -> dict[str, np.ndarray]:
    cut = split_point(len(data))
    x_train, y_train = windows(data[:cut], context)
    x_test, y_test = windows(data[cut:], context)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def minimum_bytes(context: int) -> int:
    """The shortest text whose 90/10 split gives one whole window on each side."""
    size = context + 1
    while min(split_sizes(size, context)) < 1:
        size += 1
    return size


def load_file(path: Path, spec) -> dict[str, np.ndarray]:
    """A user's text file (--data FILE.txt), read as bytes, for a next-token model."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read {path} ({e.strerror or e})") from None
    context = spec.input_shape[0]
    train, test = split_sizes(len(data), context)
    if min(train, test) < 1:
        raise UsageError(f"{path}: {len(data):,} bytes give {train} training and {test} test windows of "
                         f"{context + 1} bytes (split 90/10 by position); {spec.name} needs at least "
                         f"{minimum_bytes(context):,} bytes")
    return examples(data, context)
