"""ResNet-50 v1.5 in MXNet Gluon, written from the spec (the model zoo's resnet50_v1 strides the 1x1)."""
from __future__ import annotations

import mxnet as mx
from mxnet import gluon
from mxnet.gluon import nn

from harness.specs import ResNetArch
from python_models.mxnet.trainer import GLOROT, HE_FAN_OUT, GluonTrainer, contexts


def conv(cin: int, cout: int, k: int, stride: int = 1, pad: int = 0) -> nn.Conv2D:
    # Explicit symmetric padding; Gluon pads both sides by `padding`.
    return nn.Conv2D(cout, k, stride, pad, in_channels=cin, use_bias=False, weight_initializer=HE_FAN_OUT)


def bn(c: int, arch: ResNetArch) -> nn.BatchNorm:
    # Gluon's momentum is the weight of the old running value: 1 - PyTorch's 0.1.
    return nn.BatchNorm(momentum=1 - arch.bn_momentum, epsilon=arch.bn_eps, in_channels=c)


class Bottleneck(gluon.HybridBlock):
    def __init__(self, cin: int, width: int, stride: int, downsample: bool, arch: ResNetArch):
        super().__init__()
        cout = width * arch.expansion
        with self.name_scope():
            self.conv1, self.bn1 = conv(cin, width, 1), bn(width, arch)
            self.conv2, self.bn2 = conv(width, width, 3, stride, 1), bn(width, arch)  # v1.5: stride here
            self.conv3, self.bn3 = conv(width, cout, 1), bn(cout, arch)
            self.downsample = None
            if downsample:
                self.downsample = nn.HybridSequential()
                self.downsample.add(conv(cin, cout, 1, stride), bn(cout, arch))

    def hybrid_forward(self, F, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet50(gluon.HybridBlock):
    def __init__(self, arch: ResNetArch, num_classes: int):
        super().__init__()
        with self.name_scope():
            self.conv1, self.bn1 = conv(3, arch.stem, 7, 2, 3), bn(arch.stem, arch)
            self.pool = nn.MaxPool2D(3, 2, 1)
            for prefix, cin, width, stride, down in arch.blocks():
                stage, _ = prefix.split(".")  # layer1..layer4, each a Sequential indexed 0..n-1
                if not hasattr(self, stage):
                    setattr(self, stage, nn.HybridSequential())
                getattr(self, stage).add(Bottleneck(cin, width, stride, down, arch))
            self.gap = nn.GlobalAvgPool2D()
            features = arch.stages[-1][0] * arch.expansion  # 512 * 4 = 2048
            self.fc = nn.Dense(num_classes, in_units=features, weight_initializer=GLOROT)

    def hybrid_forward(self, F, x):  # x: (N, 3, S, S)
        x = self.pool(F.relu(self.bn1(self.conv1(x))))  # (N, 64, S/4, S/4)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (N, 2048, S/32, S/32)
        return self.fc(self.gap(x))  # Dense flattens (N, 2048, 1, 1)


def build(spec, options):
    ctxs = contexts(options)
    mx.random.seed(options.seed)
    net = ResNet50(spec.arch, spec.num_classes)
    net.initialize(ctx=ctxs)
    return GluonTrainer(net, spec, options, ctxs)
