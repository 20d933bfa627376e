"""The IMDB GRU sentiment model in Chainer (spec: harness.specs.RNN)."""
from __future__ import annotations

import chainer
import chainer.functions as F
import chainer.links as L
from chainer import initializers

from harness.specs import GRUArch
from python_models.chainer.trainer import GLOROT, ORTHOGONAL, ChainerTrainer, configure


class GRU(chainer.Link):
    """One GRU layer holding the canonical stacked tensors, run by F.n_step_gru (cuDNN on CUDA).

    F.n_step_gru is the function behind L.NStepGRU and follows the spec's formula: gates
    (reset, update, new) and the reset gate applied after the hidden matmul,
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn)). Holding the (300, in) and (300, 100) matrices
    whole lets them be initialised whole, as the spec says (L.NStepGRU keeps six 100-row blocks)."""

    def __init__(self, n_in: int, n_hidden: int):
        super().__init__()
        self.n_hidden = n_hidden
        with self.init_scope():
            self.weight_ih = chainer.Parameter(GLOROT, (3 * n_hidden, n_in))
            self.weight_hh = chainer.Parameter(ORTHOGONAL, (3 * n_hidden, n_hidden))
            self.bias_ih = chainer.Parameter(0.0, (3 * n_hidden,))
            self.bias_hh = chainer.Parameter(0.0, (3 * n_hidden,))

    def forward(self, xs):  # xs: T steps of (N, in), time-major; returns the last state (N, hidden)
        ws = [[*F.split_axis(self.weight_ih, 3, axis=0), *F.split_axis(self.weight_hh, 3, axis=0)]]
        bs = [[*F.split_axis(self.bias_ih, 3, axis=0), *F.split_axis(self.bias_hh, 3, axis=0)]]
        h0 = self.xp.zeros((1, len(xs[0]), self.n_hidden), dtype=self.weight_ih.dtype)
        hy, _ = F.n_step_gru(1, 0.0, h0, ws, bs, xs)
        return hy[0]


class GRUClassifier(chainer.Chain):
    def __init__(self, arch: GRUArch, num_classes: int):
        super().__init__()
        with self.init_scope():
            self.embedding = L.EmbedID(arch.vocab, arch.embed, initialW=initializers.Uniform(0.05))
            self.gru = GRU(arch.embed, arch.hidden)
            self.fc = L.Linear(arch.hidden, num_classes, initialW=GLOROT)

    def forward(self, tokens):  # tokens: (N, 150) int32
        e = self.embedding(tokens)  # (N, 150, 125)
        return self.fc(self.gru(F.separate(e, axis=1)))  # 150 steps of (N, 125)


def build(spec, options):
    device = configure(options)
    return ChainerTrainer(GRUClassifier(spec.arch, spec.num_classes), spec, options, device)
