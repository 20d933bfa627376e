"""The CIFAR-10 CNN in tinygrad (spec: harness.specs.CNN), NCHW as PyTorch."""
from __future__ import annotations

from tinygrad import Tensor

from python_models.tinygrad.trainer import TinygradTrainer, conv, linear, start


class CNN:
    def __init__(self, arch, num_classes, dropout):
        c1, c2, c3, c4 = arch.channels
        self.conv1, self.conv2 = conv(3, c1, 3, padding=1), conv(c1, c2, 3, padding=1)
        self.conv3, self.conv4 = conv(c2, c3, 3, padding=1), conv(c3, c4, 3, padding=1)
        self.fc1 = linear(arch.flat[0] * arch.flat[1] * arch.flat[2], arch.dense)
        self.fc2 = linear(arch.dense, num_classes)
        self.dropout = dropout  # Tensor.dropout acts only under Context(TRAINING=1), i.e. in the train step

    def __call__(self, x: Tensor) -> Tensor:  # x: (N, 3, 32, 32)
        d1, d2, d3 = self.dropout
        x = self.conv1(x).relu()
        x = self.conv2(x).max_pool2d(2).relu().dropout(d1)  # (N, 50, 16, 16)
        x = self.conv3(x).relu()
        x = self.conv4(x).max_pool2d(2).relu().dropout(d2)  # (N, 100, 8, 8)
        x = self.fc1(x.flatten(1)).relu().dropout(d3)  # flattened in C,H,W order, as the canonical fc1
        return self.fc2(x)


def build(spec, options):
    start(options)
    rates = spec.arch.dropout if options.dropout else (0.0,) * len(spec.arch.dropout)
    return TinygradTrainer(CNN(spec.arch, spec.num_classes, rates), spec, options)
