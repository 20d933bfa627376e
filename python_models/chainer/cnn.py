"""The CIFAR-10 CNN in Chainer (spec: harness.specs.CNN)."""
from __future__ import annotations

import chainer
import chainer.functions as F
import chainer.links as L

from harness.specs import CNN_DROPOUT
from python_models.chainer.trainer import GLOROT, ChainerTrainer, setup


def dropout(h, ratio: float):
    return F.dropout(h, ratio) if ratio else h  # F.dropout is the identity outside train mode


def pool(h):
    return F.max_pooling_2d(h, 2, 2, cover_all=False)  # (H, W) -> (H/2, W/2)


class CNN(chainer.Chain):
    def __init__(self, dropout_ratios=CNN_DROPOUT):
        super().__init__()
        self.ratios = dropout_ratios
        with self.init_scope():  # biases start at zero
            self.conv1 = L.Convolution2D(3, 50, 3, pad=1, initialW=GLOROT)
            self.conv2 = L.Convolution2D(50, 50, 3, pad=1, initialW=GLOROT)
            self.conv3 = L.Convolution2D(50, 100, 3, pad=1, initialW=GLOROT)
            self.conv4 = L.Convolution2D(100, 100, 3, pad=1, initialW=GLOROT)
            self.fc1 = L.Linear(6400, 512, initialW=GLOROT)  # flattens (N, 100, 8, 8) in C,H,W order
            self.fc2 = L.Linear(512, 10, initialW=GLOROT)

    def forward(self, x):  # x: (N, 3, 32, 32)
        d1, d2, d3 = self.ratios
        h = F.relu(self.conv1(x))
        h = dropout(F.relu(pool(self.conv2(h))), d1)  # (N, 50, 16, 16)
        h = F.relu(self.conv3(h))
        h = dropout(F.relu(pool(self.conv4(h))), d2)  # (N, 100, 8, 8)
        h = dropout(F.relu(self.fc1(h)), d3)  # (N, 512)
        return self.fc2(h)


def build(spec, options):
    device = setup(options)
    model = CNN(CNN_DROPOUT if options.dropout else (0.0, 0.0, 0.0))
    return ChainerTrainer(model, spec, options, device)
