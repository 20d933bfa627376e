"""ResNet-50 v1.5 in PyTorch, written from the spec (torchvision cannot load beside torch 2.13)."""
from __future__ import annotations

import torch
from torch import nn

from harness.specs import ResNetArch
from python_models.pytorch.trainer import make_trainer


def bn(c: int, arch: ResNetArch) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=arch.bn_eps, momentum=arch.bn_momentum)


class Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, stride: int, downsample: bool, arch: ResNetArch):
        super().__init__()
        cout = width * arch.expansion
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), bn(width, arch)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, padding=1, bias=False), bn(width, arch)  # v1.5
        self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), bn(cout, arch)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), bn(cout, arch))
                           if downsample else None)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet50(nn.Module):
    def __init__(self, arch: ResNetArch, num_classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, arch.stem, 7, 2, padding=3, bias=False)
        self.bn1 = bn(arch.stem, arch)
        stages: dict[str, list] = {}
        for prefix, cin, width, stride, down in arch.blocks():
            stages.setdefault(prefix.split(".")[0], []).append(Bottleneck(cin, width, stride, down, arch))
        for name, blocks in stages.items():  # layer1..layer4
            setattr(self, name, nn.Sequential(*blocks))
        self.fc = nn.Linear(arch.stages[-1][0] * arch.expansion, num_classes)  # 512 * 4 = 2048 features
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        nn.init.xavier_uniform_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x):  # x: (N, 3, S, S)
        x = torch.relu(self.bn1(self.conv1(x)))
        x = nn.functional.max_pool2d(x, 3, 2, padding=1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (N, 2048, S/32, S/32)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def build(spec, options):
    torch.manual_seed(options.seed)
    return make_trainer(ResNet50(spec.arch, spec.num_classes), spec, options, channels_last=options.device == "cuda")
