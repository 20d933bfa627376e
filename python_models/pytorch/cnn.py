"""The CIFAR-10 CNN in PyTorch (spec: harness.specs.CNN)."""
from __future__ import annotations

import torch
from torch import nn

from harness.specs import CNN_DROPOUT
from python_models.pytorch.trainer import make_trainer


class CNN(nn.Module):
    def __init__(self, dropout=CNN_DROPOUT):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 50, 3, padding=1)
        self.conv2 = nn.Conv2d(50, 50, 3, padding=1)
        self.conv3 = nn.Conv2d(50, 100, 3, padding=1)
        self.conv4 = nn.Conv2d(100, 100, 3, padding=1)
        self.fc1 = nn.Linear(6400, 512)
        self.fc2 = nn.Linear(512, 10)
        self.drop1, self.drop2, self.drop3 = (nn.Dropout(p) for p in dropout)
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
    model = CNN(CNN_DROPOUT if options.dropout else (0.0, 0.0, 0.0))
    return make_trainer(model, spec, options, channels_last=options.device == "cuda")
