"""The IMDB GRU sentiment model in MXNet Gluon (spec: harness.specs.RNN)."""
from __future__ import annotations

import mxnet as mx
from mxnet import gluon
from mxnet.gluon import nn, rnn

from harness.specs import GRUArch
from python_models.mxnet.trainer import GLOROT, GluonTrainer, contexts


class GRUClassifier(gluon.HybridBlock):
    def __init__(self, arch: GRUArch, num_classes: int):
        super().__init__()
        with self.name_scope():
            self.embedding = nn.Embedding(arch.vocab, arch.embed, weight_initializer=mx.init.Uniform(0.05))
            # The fused (cuDNN-form) GRU: gates stacked (reset, update, new), reset applied after the
            # hidden matmul, one (300, in) i2h and one (300, 100) h2h matrix, initialised whole.
            self.gru = rnn.GRU(arch.hidden, layout="NTC", input_size=arch.embed, i2h_weight_initializer=GLOROT,
                               h2h_weight_initializer=mx.init.Orthogonal(scale=1.0, rand_type="normal"))
            self.fc = nn.Dense(num_classes, in_units=arch.hidden, weight_initializer=GLOROT)

    def hybrid_forward(self, F, tokens):  # tokens: (N, 150) int32
        out = self.gru(self.embedding(tokens))  # (N, 150, 100), zero initial state
        return self.fc(F.slice_axis(out, axis=1, begin=-1, end=None))  # the last step, (N, 1, 100)


def build(spec, options):
    ctxs = contexts(options)
    mx.random.seed(options.seed)
    net = GRUClassifier(spec.arch, spec.num_classes)
    net.initialize(ctx=ctxs)
    return GluonTrainer(net, spec, options, ctxs)
