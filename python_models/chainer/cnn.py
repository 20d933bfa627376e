"""The CIFAR-10 CNN in Chainer (spec: harness.specs.CNN)."""
from __future__ import annotations

import math

import chainer
import chainer.functions as F
import chainer.links as L

from harness.specs import CNNArch
from python_models.chainer.trainer import GLOROT, ChainerTrainer, configure


def dropout(h, ratio: float):
    return F.dropout(h, ratio) if ratio else h  # F.dropout is the identity outside train mode


def pool(h):
    return F.max_pooling_2d(h, 2, 2, cover_all=False)  # (H, W) -> (H/2, W/2)


class CNN(chainer.Chain):
    def __init__(self, arch: CNNArch, num_classes: int, dropout: bool = True):
        super().__init__()
        self.ratios = arch.dropout if dropout else (0.0, 0.0, 0.0)
        c1, c2, c3, c4 = arch.channels  # 50, 50, 100, 100
        with self.init_scope():  # biases start at zero
            self.conv1 = L.Convolution2D(3, c1, 3, pad=1, initialW=GLOROT)
            self.conv2 = L.Convolution2D(c1, c2, 3, pad=1, initialW=GLOROT)
            self.conv3 = L.Convolution2D(c2, c3, 3, pad=1, initialW=GLOROT)
            self.conv4 = L.Convolution2D(c3, c4, 3, pad=1, initialW=GLOROT)
            self.fc1 = L.Linear(math.prod(arch.flat), arch.dense, initialW=GLOROT)  # flattens (N, 100, 8, 8), C,H,W
            self.fc2 = L.Linear(arch.dense, num_classes, initialW=GLOROT)

    def forward(self, x):  # x: (N, 3, 32, 32)
        d1, d2, d3 = self.ratios
        h = F.relu(self.conv1(x))
        h = dropout(F.relu(pool(self.conv2(h))), d1)  # (N, 50, 16, 16)
        h = F.relu(self.conv3(h))
        h = dropout(F.relu(pool(self.conv4(h))), d2)  # (N, 100, 8, 8)
        h = dropout(F.relu(self.fc1(h)), d3)  # (N, 512)
        return self.fc2(h)


def build(spec, options):
    device = configure(options)
    model = CNN(spec.arch, spec.num_classes, options.dropout)
    return ChainerTrainer(model, spec, options, device)
