"""The CIFAR-10 CNN in PyTorch (spec: harness.specs.CNN)."""
from __future__ import annotations

import math

import torch
from torch import nn

from harness.specs import CNNArch
from python_models.pytorch.trainer import make_trainer


class CNN(nn.Module):
    def __init__(self, arch: CNNArch, num_classes: int, dropout: bool = True):
        super().__init__()
        c1, c2, c3, c4 = arch.channels  # 50, 50, 100, 100
        self.conv1 = nn.Conv2d(3, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.conv3 = nn.Conv2d(c2, c3, 3, padding=1)
        self.conv4 = nn.Conv2d(c3, c4, 3, padding=1)
        self.fc1 = nn.Linear(math.prod(arch.flat), arch.dense)  # 100*8*8 = 6400 -> 512
        self.fc2 = nn.Linear(arch.dense, num_classes)
        self.drop1, self.drop2, self.drop3 = (nn.Dropout(p if dropout else 0.0) for p in arch.dropout)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):  # x: (N, 3, 32, 32)
        x = torch.relu(self.conv1(x))
        x = self.drop1(torch.relu(nn.functional.max_pool2d(self.conv2(x), 2)))  # (N, 50, 16, 16)
        x = torch.relu(self.conv3(x))
        x = self.drop2(torch.relu(nn.functional.max_pool2d(self.conv4(x), 2)))  # (N, 100, 8, 8)
        x = torch.flatten(x, 1)  # (N, 6400) in C,H,W order
        x = self.drop3(torch.relu(self.fc1(x)))
        return self.fc2(x)


def build(spec, options):
    torch.manual_seed(options.seed)
    model = CNN(spec.arch, spec.num_classes, dropout=options.dropout)
    return make_trainer(model, spec, options, channels_last=options.device == "cuda")
