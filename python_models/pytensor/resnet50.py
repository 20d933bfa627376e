"""ResNet-50 v1.5 in PyTensor, written from the spec (harness.specs.RESNET50).

Activations are (C, N, H, W) between the input and the head (see trainer.py); every convolution
pads symmetrically and explicitly, and BatchNorm takes the spec's eps and momentum (trainer.Graph)."""
from __future__ import annotations

from functools import partial

import numpy as np
import pytensor.tensor as pt

from harness.specs import ResNetArch
from python_models.pytensor.trainer import (PytensorTrainer, conv2d, glorot_uniform, he_normal_fan_out,
                                            max_pool_3x3_s2_p1, relu)


def bottleneck(g, bn, x, prefix: str, stride: int, downsample: bool):
    p = g.p
    out = relu(bn(conv2d(x, p[f"{prefix}.conv1.weight"]), f"{prefix}.bn1"))
    out = relu(bn(conv2d(out, p[f"{prefix}.conv2.weight"], stride, pad=1), f"{prefix}.bn2"))  # v1.5
    out = bn(conv2d(out, p[f"{prefix}.conv3.weight"]), f"{prefix}.bn3")
    if downsample:
        x = bn(conv2d(x, p[f"{prefix}.downsample.0.weight"], stride), f"{prefix}.downsample.1")
    return relu(out + x)


def forward(g, x, arch: ResNetArch):
    """x: (N, 3, S, S) images -> (N, 10) logits."""
    bn = partial(g.batch_norm, eps=arch.bn_eps, momentum=arch.bn_momentum)  # bn(x, canonical key)
    x = x.dimshuffle(1, 0, 2, 3)  # (3, N, S, S)
    x = relu(bn(conv2d(x, g.p["conv1.weight"], stride=2, pad=3), "bn1"))  # (64, N, S/2, S/2)
    x = max_pool_3x3_s2_p1(x)  # (64, N, S/4, S/4)
    for prefix, _cin, _width, stride, down in arch.blocks():
        x = bottleneck(g, bn, x, prefix, stride, down)  # ends (2048, N, S/32, S/32)
    features = x.mean(axis=(2, 3))  # global average pool: (2048, N)
    return pt.dot(features.T, g.p["fc.weight"].T) + g.p["fc.bias"]


def initial_weights(spec, rng):
    fill = {"he_normal_fan_out": lambda s: he_normal_fan_out(rng, s), "glorot_uniform": lambda s: glorot_uniform(rng, s),
            "ones": np.ones, "zeros": np.zeros}
    return {w.key: fill[w.init](w.shape) for w in spec.weights}


# FAST_RUN's rewrites take ~3x the CPU time on this graph (its elemwise fusion pass is quadratic
# in PyTensor 2.27, sped up only in later releases: pymc-devs/pytensor#1615) and buy no speed here,
# where the GEMMs dominate: same C linker, the fast_compile rewrite set.
MODE = ("cvm", "fast_compile")


def build(spec, options):
    size = options.image_size
    init = initial_weights(spec, np.random.default_rng(options.seed))
    return PytensorTrainer(spec, options, partial(forward, arch=spec.arch), init, input_shape=(3, size, size), mode=MODE)
