"""Seeded synthetic data with the shapes and dtypes of the real sets and a learnable signal.

Examples are generated in fixed blocks, each from its own seeded generator, so the first n
examples of a larger set are byte-identical to a smaller set of n: `--samples` never changes
the data an example holds, only how many are used.
"""
from __future__ import annotations

import numpy as np

from harness.specs import MAXLEN, VOCAB

BLOCK = 1024
TEST_SEED_OFFSET = 1_000_003  # test examples come from their own stream


def test_size(n_train: int, full_test: int) -> int:
    return min(full_test, max(256, n_train // 4))


def _blocks(n: int, seed: int, stream: int, make):
    parts = []
    for b in range(0, n, BLOCK):
        rng = np.random.default_rng([seed, stream, b // BLOCK])
        parts.append(make(rng, min(BLOCK, n - b)))
    return parts


def images(n: int, seed: int, stream: int = 0, num_classes: int = 10):
    """(n,3,32,32) float32 in [0,1]: 70 % a smooth per-class template, 30 % noise."""
    coarse = np.random.default_rng([seed, 7]).uniform(0, 1, (num_classes, 3, 8, 8)).astype(np.float32)
    templates = coarse.repeat(4, axis=2).repeat(4, axis=3)  # 4x4 blocks: low-frequency patterns

    def make(rng, k):
        y = rng.integers(0, num_classes, k)
        x = 0.7 * templates[y] + 0.3 * rng.uniform(0, 1, (k, 3, 32, 32)).astype(np.float32)
        return x.astype(np.float32), y.astype(np.int64)

    parts = _blocks(n, seed, stream, make)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def tokens(n: int, seed: int, stream: int = 0, num_classes: int = 2):
    """(n,150) int64 Keras-style ids (start 1, words >= 4), front-padded with 0.

    Half of each review's words come from 50 words that mark its class; the rest are uniform."""
    markers = np.random.default_rng([seed, 7]).choice(np.arange(4, 2000), (num_classes, 50), replace=False)

    def make(rng, k):
        y = rng.integers(0, num_classes, k)
        x = np.zeros((k, MAXLEN), dtype=np.int64)
        lengths = rng.integers(30, MAXLEN + 1, k)
        for i in range(k):
            words = rng.integers(4, VOCAB, lengths[i])
            signal = rng.random(lengths[i]) < 0.5
            words[signal] = rng.choice(markers[y[i]], signal.sum())
            words[0] = 1
            x[i, MAXLEN - lengths[i]:] = words
        return x, y.astype(np.int64)

    parts = _blocks(n, seed, stream, make)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def make(kind: str, n_train: int, n_test: int, seed: int) -> dict[str, np.ndarray]:
    gen = images if kind == "images" else tokens
    x_train, y_train = gen(n_train, seed)
    x_test, y_test = gen(n_test, seed, stream=TEST_SEED_OFFSET)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
