"""The spec's eval-mode forward passes written out in numpy (float64), from canonical weights.

An oracle that shares no code with any implementation: the reference (PyTorch) is checked against
it, so the reference's own rows in the equivalence tests compare with something other than
themselves. Written from harness/specs.py's words (layers, padding, pooling, the GRU's
reset-after form), not from python_models/. ResNet-50 has none (too slow in numpy for CI).
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def conv3x3_same(x, w, b):
    """x (N, C, H, W), w (O, C, 3, 3): stride 1, zero padding 1 (the spec's "same")."""
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = sliding_window_view(padded, (3, 3), axis=(2, 3))  # (N, C, H, W, 3, 3)
    return np.einsum("nchwij,ocij->nohw", windows, w, optimize=True) + b[None, :, None, None]


def max_pool2(x):
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


def relu(x):
    return np.maximum(x, 0)


def cnn_logits(weights: dict, x: np.ndarray) -> np.ndarray:
    """conv(50) relu, conv(50) pool relu, conv(100) relu, conv(100) pool relu, flatten C,H,W,
    dense 512 relu, dense 10; dropout is the identity at test time."""
    w = {k: np.asarray(v, np.float64) for k, v in weights.items()}
    h = relu(conv3x3_same(np.asarray(x, np.float64), w["conv1.weight"], w["conv1.bias"]))
    h = relu(max_pool2(conv3x3_same(h, w["conv2.weight"], w["conv2.bias"])))
    h = relu(conv3x3_same(h, w["conv3.weight"], w["conv3.bias"]))
    h = relu(max_pool2(conv3x3_same(h, w["conv4.weight"], w["conv4.bias"])))
    h = relu(h.reshape(len(h), -1) @ w["fc1.weight"].T + w["fc1.bias"])
    return h @ w["fc2.weight"].T + w["fc2.bias"]


def sigmoid(a):
    return 1 / (1 + np.exp(-a))


def rnn_logits(weights: dict, tokens: np.ndarray) -> np.ndarray:
    """embedding, GRU (gates stacked reset, update, new; reset applied after the recurrent matmul),
    the last step's state, dense 2."""
    w = {k: np.asarray(v, np.float64) for k, v in weights.items()}
    e = w["embedding.weight"][tokens]  # (N, T, E)
    hidden = w["gru.weight_hh"].shape[1]
    gx = e @ w["gru.weight_ih"].T + w["gru.bias_ih"]  # (N, T, 3H)
    h = np.zeros((len(tokens), hidden))
    for t in range(tokens.shape[1]):
        xr, xz, xn = np.split(gx[:, t], 3, axis=1)
        hr, hz, hn = np.split(h @ w["gru.weight_hh"].T + w["gru.bias_hh"], 3, axis=1)
        r, z = sigmoid(xr + hr), sigmoid(xz + hz)
        h = (1 - z) * np.tanh(xn + r * hn) + z * h
    return h @ w["fc.weight"].T + w["fc.bias"]


ORACLES = {"cnn": cnn_logits, "rnn": rnn_logits}
