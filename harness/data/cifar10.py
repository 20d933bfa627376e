"""CIFAR-10 from the official python-format archive (cifar-10-python.tar.gz)."""
from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np

from harness.data.cache import fetch
from harness.errors import UsageError

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
FILENAME = "cifar-10-python.tar.gz"
CHECKSUM = ("md5", "c58f30108f718f92721af3b95e74349a")  # the digest published beside the archive
TRAIN_MEMBERS = tuple(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6))
TEST_MEMBERS = ("cifar-10-batches-py/test_batch",)


def _read_batches(tar: tarfile.TarFile, members) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for name in members:
        f = tar.extractfile(name)
        if f is None:
            raise KeyError(name)
        batch = pickle.load(f, encoding="bytes")
        xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))  # rows are R,G,B planes
        ys.append(np.asarray(batch[b"labels"], dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def decode(archive: Path) -> dict[str, np.ndarray]:
    """float32 pixels/255 in (N,3,32,32) and int64 labels."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            x_train, y_train = _read_batches(tar, TRAIN_MEMBERS)
            x_test, y_test = _read_batches(tar, TEST_MEMBERS)
    except (tarfile.TarError, EOFError, OSError, KeyError, pickle.UnpicklingError, ValueError) as e:
        raise UsageError(f"corrupt CIFAR-10 archive {archive} ({type(e).__name__}: {e}); delete it and retry") from None
    scale = np.float32(1 / 255)
    return {
        "x_train": x_train.astype(np.float32) * scale, "y_train": y_train,
        "x_test": x_test.astype(np.float32) * scale, "y_test": y_test,
    }


def load(raw_dir: Path) -> dict[str, np.ndarray]:
    return decode(fetch(URL, raw_dir / FILENAME, *CHECKSUM))
