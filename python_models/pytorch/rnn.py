"""The IMDB GRU sentiment model in PyTorch (spec: harness.specs.RNN)."""
from __future__ import annotations

import torch
from torch import nn

from harness.specs import GRUArch
from python_models.pytorch.trainer import make_trainer

# nn.GRU names its single layer's tensors *_l0; the canonical file drops the suffix.
RENAME = {f"gru.{k}_l0": f"gru.{k}" for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}


class GRUClassifier(nn.Module):
    def __init__(self, arch: GRUArch, num_classes: int):
        super().__init__()
        self.embedding = nn.Embedding(arch.vocab, arch.embed)
        self.gru = nn.GRU(arch.embed, arch.hidden, batch_first=True)  # reset gate after the hidden matmul, as cuDNN
        self.fc = nn.Linear(arch.hidden, num_classes)
        nn.init.uniform_(self.embedding.weight, -0.05, 0.05)
        nn.init.xavier_uniform_(self.gru.weight_ih_l0)  # over the stacked (300, 125) matrix, as Keras
        nn.init.orthogonal_(self.gru.weight_hh_l0)  # over the stacked (300, 100) matrix
        nn.init.zeros_(self.gru.bias_ih_l0)
        nn.init.zeros_(self.gru.bias_hh_l0)
        nn.init.xavier_uniform_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, tokens):  # tokens: (N, 150) int64
        _, h = self.gru(self.embedding(tokens))  # h: (1, N, 100), the last step's output
        return self.fc(h[0])


def build(spec, options):
    torch.manual_seed(options.seed)
    return make_trainer(GRUClassifier(spec.arch, spec.num_classes), spec, options, rename=RENAME)
