"""ResNet-50 v1.5 in Chainer, written from the spec (L.ResNet50Layers is v1, stride on the 1x1)."""
from __future__ import annotations

import chainer
import chainer.functions as F
import chainer.links as L

from harness.specs import ResNetArch
from python_models.chainer.trainer import GLOROT, HE_FAN_OUT, ChainerTrainer, configure


def conv(cin: int, cout: int, k: int, stride: int = 1, pad: int = 0) -> L.Convolution2D:
    return L.Convolution2D(cin, cout, k, stride, pad, nobias=True, initialW=HE_FAN_OUT)  # symmetric pad


def bn(c: int, arch: ResNetArch) -> L.BatchNormalization:
    # Chainer's decay is the weight of the old running value: 1 - PyTorch's 0.1. Its running
    # variance is the unbiased batch variance, as in PyTorch.
    return L.BatchNormalization(c, decay=1 - arch.bn_momentum, eps=arch.bn_eps)


class Bottleneck(chainer.Chain):
    def __init__(self, cin: int, width: int, stride: int, downsample: bool, arch: ResNetArch):
        super().__init__()
        cout = width * arch.expansion
        self.has_downsample = downsample
        with self.init_scope():
            self.conv1, self.bn1 = conv(cin, width, 1), bn(width, arch)
            self.conv2, self.bn2 = conv(width, width, 3, stride, 1), bn(width, arch)  # v1.5: stride here
            self.conv3, self.bn3 = conv(width, cout, 1), bn(cout, arch)
            if downsample:
                self.downsample = chainer.Sequential(conv(cin, cout, 1, stride), bn(cout, arch))  # named 0, 1

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (self.downsample(x) if self.has_downsample else x))


class ResNet50(chainer.Chain):
    def __init__(self, arch: ResNetArch, num_classes: int):
        super().__init__()
        stages: dict[str, list] = {}
        for prefix, cin, width, stride, down in arch.blocks():
            stages.setdefault(prefix.split(".")[0], []).append(Bottleneck(cin, width, stride, down, arch))
        with self.init_scope():
            self.conv1, self.bn1 = conv(3, arch.stem, 7, 2, 3), bn(arch.stem, arch)
            for name, blocks in stages.items():  # layer1..layer4, children named 0..n-1
                # ChainList, not Sequential: Chainer 7's Sequential names its third and later
                # links out of order (insert() always places a new link second in _children).
                setattr(self, name, chainer.ChainList(*blocks))
            features = arch.stages[-1][0] * arch.expansion  # 512 * 4 = 2048
            self.fc = L.Linear(features, num_classes, initialW=GLOROT)

    def forward(self, x):  # x: (N, 3, S, S)
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pooling_2d(x, 3, 2, pad=1, cover_all=False)  # (N, 64, S/4, S/4)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in stage:
                x = block(x)  # after layer4: (N, 2048, S/32, S/32)
        return self.fc(F.mean(x, axis=(2, 3)))  # global average pool


def build(spec, options):
    device = configure(options)
    return ChainerTrainer(ResNet50(spec.arch, spec.num_classes), spec, options, device)
