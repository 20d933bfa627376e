"""The CIFAR-10 CNN in MXNet Gluon (spec: harness.specs.CNN)."""
from __future__ import annotations

import math

import mxnet as mx
from mxnet import gluon
from mxnet.gluon import nn

from harness.specs import CNNArch
from python_models.mxnet.trainer import GLOROT, GluonTrainer, contexts


def conv(cin: int, cout: int) -> nn.Conv2D:
    return nn.Conv2D(cout, 3, padding=1, in_channels=cin, weight_initializer=GLOROT)  # bias zeros


class CNN(gluon.HybridBlock):
    def __init__(self, arch: CNNArch, num_classes: int, dropout: bool = True):
        super().__init__()
        c1, c2, c3, c4 = arch.channels  # 50, 50, 100, 100
        with self.name_scope():
            self.conv1, self.conv2 = conv(3, c1), conv(c1, c2)
            self.conv3, self.conv4 = conv(c2, c3), conv(c3, c4)
            self.fc1 = nn.Dense(arch.dense, in_units=math.prod(arch.flat), weight_initializer=GLOROT)  # flattens C,H,W
            self.fc2 = nn.Dense(num_classes, in_units=arch.dense, weight_initializer=GLOROT)
            self.pool = nn.MaxPool2D(2, 2)
            self.drop1, self.drop2, self.drop3 = (nn.Dropout(p if dropout else 0.0) for p in arch.dropout)

    def hybrid_forward(self, F, x):  # x: (N, 3, 32, 32)
        x = F.relu(self.conv1(x))
        x = self.drop1(F.relu(self.pool(self.conv2(x))))  # (N, 50, 16, 16)
        x = F.relu(self.conv3(x))
        x = self.drop2(F.relu(self.pool(self.conv4(x))))  # (N, 100, 8, 8)
        x = self.drop3(F.relu(self.fc1(x)))  # (N, 6400) -> (N, 512)
        return self.fc2(x)


def build(spec, options):
    ctxs = contexts(options)
    mx.random.seed(options.seed)
    net = CNN(spec.arch, spec.num_classes, options.dropout)
    net.initialize(ctx=ctxs)
    return GluonTrainer(net, spec, options, ctxs)
