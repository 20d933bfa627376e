"""The CIFAR-10 CNN in MXNet Gluon (spec: harness.specs.CNN)."""
from __future__ import annotations

import mxnet as mx
from mxnet import gluon
from mxnet.gluon import nn

from harness.specs import CNN_DROPOUT
from python_models.mxnet.trainer import GLOROT, GluonTrainer, contexts


def conv(cin: int, cout: int) -> nn.Conv2D:
    return nn.Conv2D(cout, 3, padding=1, in_channels=cin, weight_initializer=GLOROT)  # bias zeros


class CNN(gluon.HybridBlock):
    def __init__(self, dropout=CNN_DROPOUT):
        super().__init__()
        with self.name_scope():
            self.conv1, self.conv2 = conv(3, 50), conv(50, 50)
            self.conv3, self.conv4 = conv(50, 100), conv(100, 100)
            self.fc1 = nn.Dense(512, in_units=6400, weight_initializer=GLOROT)  # flattens C,H,W
            self.fc2 = nn.Dense(10, in_units=512, weight_initializer=GLOROT)
            self.pool = nn.MaxPool2D(2, 2)
            self.drop1, self.drop2, self.drop3 = (nn.Dropout(p) for p in dropout)

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
    net = CNN(CNN_DROPOUT if options.dropout else (0.0, 0.0, 0.0))
    net.initialize(ctx=ctxs)
    return GluonTrainer(net, spec, options, ctxs)
