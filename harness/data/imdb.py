"""IMDB reviews, encoded exactly as keras.datasets.imdb.load_data(num_words=30000) does, then
cut to the last 150 tokens and padded with 0 at the front (the GRU reads the last step)."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from harness.data.cache import fetch
from harness.errors import UsageError
from harness.specs import RNN

URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/imdb.npz"
FILENAME = "imdb.npz"
CHECKSUM = ("sha256", "69664113be75683a8fe16e3ed0ab59fda8886cb3cd7ada244f7d9544e4676b9f")
START, OOV, INDEX_FROM = 1, 2, 3
KERAS_SHUFFLE_SEED = 113  # load_data shuffles train and test with this seed


def encode(reviews, num_words: int = RNN.arch.vocab) -> list[list[int]]:
    """Word ranks -> Keras ids: start 1, ranks shifted by 3, ids >= num_words become 2."""
    return [[START] + [w + INDEX_FROM if w + INDEX_FROM < num_words else OOV for w in r] for r in reviews]


def pad_front(seqs: list[list[int]], maxlen: int = RNN.arch.maxlen) -> np.ndarray:
    """Keep the last maxlen ids, pad with 0 at the front (Keras pad_sequences' defaults)."""
    out = np.zeros((len(seqs), maxlen), dtype=np.int64)
    for i, s in enumerate(seqs):
        s = s[-maxlen:]
        if s:
            out[i, maxlen - len(s):] = s
    return out


def decode(archive: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(archive, allow_pickle=True) as f:
            parts = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise UsageError(f"corrupt IMDB archive {archive} ({type(e).__name__}: {e}); delete it and retry") from None
    rng = np.random.RandomState(KERAS_SHUFFLE_SEED)
    out = {}
    for split in ("train", "test"):
        x, y = parts[f"x_{split}"], parts[f"y_{split}"]
        order = np.arange(len(x))
        rng.shuffle(order)
        out[f"x_{split}"] = pad_front(encode(x[order]))
        out[f"y_{split}"] = np.asarray(y[order], dtype=np.int64)
    return out


def load(raw_dir: Path) -> dict[str, np.ndarray]:
    return decode(fetch(URL, raw_dir / FILENAME, *CHECKSUM))
