"""Training FLOPs per example, counted analytically from the spec (never measured).

One multiply-add is 2 FLOPs; a training step costs three forward passes (the forward, and a
backward that computes two products per forward product: the gradients of the inputs and of the
weights), the convention of Kaplan et al. (2020), nanoGPT and the PaLM paper's MFU. Only the
matrix products count: convolutions, dense layers, recurrent matmuls, attention; biases, norms,
activations, pooling and the optimiser do not (they are a few percent at most).

  transformer  per token 6 N + 12 layers context width (PaLM, appendix B; nanoGPT's
               estimate_mfu), N the parameters without the positional embedding (the token
               embedding is the tied output projection's matrix, so it counts); per example
               (window) times context tokens.
  cnn          the four 3x3 convolutions at their map sizes, fc1, fc2: 6 x multiply-adds.
  resnet50     every convolution at its output size (at --image-size), fc: 6 x multiply-adds.
  rnn          the GRU's two products per step (3 gates x hidden x (embed + hidden)) over every
               step, fc: 6 x multiply-adds; the embedding lookup is no product.
"""
from __future__ import annotations

import math

TRAIN_FACTOR = 6  # 2 FLOPs per multiply-add x (1 forward + 2 backward)


def _out(size: int, k: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - k) // stride + 1


def cnn_macs(spec) -> int:
    arch = spec.arch
    c, h, w = spec.input_shape
    macs = 0
    for i, cout in enumerate(arch.channels):  # 3x3, pad 1; a 2x2 pool after conv2 and conv4
        macs += h * w * cout * c * 9
        c = cout
        if i % 2 == 1:
            h, w = h // 2, w // 2
    flat = math.prod(arch.flat)
    return macs + flat * arch.dense + arch.dense * spec.num_classes


def resnet50_macs(spec, image_size: int = 32) -> int:
    arch = spec.arch
    size = _out(image_size, 7, 2, 3)  # the stem
    macs = size * size * arch.stem * spec.input_shape[0] * 49
    size = _out(size, 3, 2, 1)  # max-pool
    for _prefix, cin, width, stride, down in arch.blocks():
        out = _out(size, 3, stride, 1)
        cout = width * arch.expansion
        macs += size * size * width * cin  # conv1, 1x1
        macs += out * out * width * width * 9  # conv2, 3x3, stride s (v1.5)
        macs += out * out * cout * width  # conv3, 1x1
        if down:
            macs += out * out * cout * cin  # the shortcut's 1x1, stride s
        size = out
    return macs + arch.stages[-1][0] * arch.expansion * spec.num_classes


def rnn_macs(spec) -> int:
    arch = spec.arch
    return arch.maxlen * 3 * arch.hidden * (arch.embed + arch.hidden) + arch.hidden * spec.num_classes


def transformer_per_token(spec) -> int:
    """6 N + 12 layers context width: FLOPs of one position's training step."""
    arch = spec.arch
    n = spec.counted_params() - arch.context * arch.width  # without the positional embedding
    return TRAIN_FACTOR * n + 12 * arch.layers * arch.context * arch.width


def per_example(spec, image_size: int = 32) -> int:
    """Training FLOPs (forward + backward) of one example of `spec`."""
    if spec.name == "transformer":
        return transformer_per_token(spec) * spec.arch.context
    macs = {"cnn": lambda: cnn_macs(spec), "resnet50": lambda: resnet50_macs(spec, image_size),
            "rnn": lambda: rnn_macs(spec)}[spec.name]()
    return TRAIN_FACTOR * macs


def describe(spec, image_size: int = 32) -> dict:
    """What a record carries: FLOPs per example (and per token), and how they were counted."""
    out = {"per_example": per_example(spec, image_size),
           "counted": "analytically from the spec: 6 x multiply-adds of the matrix products per example"
                      if spec.name != "transformer" else
                      "6 N + 12 layers context width per token (N without the positional embedding), x context"}
    if spec.name == "transformer":
        out["per_token"] = transformer_per_token(spec)
        out["tokens_per_example"] = spec.tokens_per_example
    if spec.name == "resnet50":
        out["image_size"] = image_size
    return out
