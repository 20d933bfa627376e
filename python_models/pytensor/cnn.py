"""The CIFAR-10 CNN in PyTensor (spec: harness.specs.CNN)."""
from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytensor.tensor as pt

from harness.specs import CNNArch
from python_models.pytensor.trainer import PytensorTrainer, conv2d, glorot_uniform, max_pool_2x2, relu


def forward(g, x, arch: CNNArch):
    """x: (N, 3, 32, 32) images -> (N, 10) logits; activations are (C, N, H, W) in between."""
    p, (rate1, rate2, rate3) = g.p, arch.dropout
    x = x.dimshuffle(1, 0, 2, 3)
    x = relu(conv2d(x, p["conv1.weight"], pad=1) + p["conv1.bias"][:, None, None, None])
    x = conv2d(x, p["conv2.weight"], pad=1) + p["conv2.bias"][:, None, None, None]
    x = g.dropout(relu(max_pool_2x2(x)), rate1)  # (50, N, 16, 16)
    x = relu(conv2d(x, p["conv3.weight"], pad=1) + p["conv3.bias"][:, None, None, None])
    x = conv2d(x, p["conv4.weight"], pad=1) + p["conv4.bias"][:, None, None, None]
    x = g.dropout(relu(max_pool_2x2(x)), rate2)  # (100, N, 8, 8)
    x = x.dimshuffle(1, 0, 2, 3).reshape((x.type.shape[1], math.prod(arch.flat)))  # (N, 6400) in C,H,W order
    x = g.dropout(relu(pt.dot(x, p["fc1.weight"].T) + p["fc1.bias"]), rate3)
    return pt.dot(x, p["fc2.weight"].T) + p["fc2.bias"]


def build(spec, options):
    rng = np.random.default_rng(options.seed)
    init = {w.key: glorot_uniform(rng, w.shape) if w.init == "glorot_uniform" else np.zeros(w.shape)
            for w in spec.weights}
    return PytensorTrainer(spec, options, partial(forward, arch=spec.arch), init)
