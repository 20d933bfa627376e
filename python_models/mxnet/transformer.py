"""The character-level GPT in MXNet Gluon (spec: harness.specs.TRANSFORMER).

Pre-LayerNorm blocks of HybridBlocks, hybridized into one static graph like the other Gluon
models. Attention is written out, softmax(q k^T / sqrt(head width)) v, with `F.batch_dot` over
(N * heads) stacked matrices, as Gluon's tutorials (and GluonNLP's DotProductCell) write it: MXNet
1.9 has no fused causal attention kernel with PyTorch's q, k, v packing (its
contrib.interleaved_matmul_selfatt_* ops expect q, k, v interleaved per head). GELU is
`nn.GELU`, MXNet's exact erf form. The output projection is a Dense sharing the token
embedding's ParameterDict (Gluon's weight tying): one Parameter, trained once.
"""
from __future__ import annotations

import math

import mxnet as mx
from mxnet import gluon
from mxnet.gluon import nn

from harness.specs import TransformerArch
from python_models.mxnet.trainer import GluonTrainer, contexts

MASKED = -1e9  # added to the scores of future positions: exp(-1e9 - max) is exactly 0 in float32


class CausalSelfAttention(gluon.HybridBlock):
    def __init__(self, arch: TransformerArch, dropout: float):
        super().__init__()
        self.heads, self.scale = arch.heads, 1.0 / math.sqrt(arch.head_width)
        with self.name_scope():
            # (N, T, C) -> (N, T, 3C): rows q, k, v, each head after head, as the canonical file packs them
            self.qkv = nn.Dense(3 * arch.width, flatten=False, in_units=arch.width,
                                weight_initializer=mx.init.Normal(arch.init_std))
            self.proj = nn.Dense(arch.width, flatten=False, in_units=arch.width,
                                 weight_initializer=mx.init.Normal(arch.residual_std))
            self.attn_drop, self.drop = nn.Dropout(dropout), nn.Dropout(dropout)

    def _split_heads(self, x):  # (N, T, C) -> (N * heads, T, C / heads)
        return x.reshape((0, 0, self.heads, -1)).transpose((0, 2, 1, 3)).reshape((-3, 0, 0))

    def hybrid_forward(self, F, x):  # x: (N, T, C)
        q, k, v = (self._split_heads(part) for part in F.split(self.qkv(x), num_outputs=3, axis=2))
        scores = F.batch_dot(q, k, transpose_b=True) * self.scale  # (N * heads, T query, T key)
        positions = F.contrib.arange_like(x, axis=1)  # (T,)
        future = F.broadcast_greater(positions.reshape((1, -1)), positions.reshape((-1, 1)))  # key > query
        scores = F.broadcast_add(scores, (future * MASKED).expand_dims(0))
        y = F.batch_dot(self.attn_drop(F.softmax(scores, axis=-1)), v)  # (N * heads, T, C / heads)
        y = y.reshape((-4, -1, self.heads, 0, 0)).transpose((0, 2, 1, 3)).reshape((0, 0, -3))  # heads side by side
        return self.drop(self.proj(y))


class MLP(gluon.HybridBlock):
    def __init__(self, arch: TransformerArch, dropout: float):
        super().__init__()
        with self.name_scope():
            self.fc = nn.Dense(arch.mlp_width, flatten=False, in_units=arch.width,
                               weight_initializer=mx.init.Normal(arch.init_std))
            self.gelu = nn.GELU()  # LeakyReLU(act_type="gelu"): 0.5 x (1 + erf(x / sqrt 2)), exact
            self.proj = nn.Dense(arch.width, flatten=False, in_units=arch.mlp_width,
                                 weight_initializer=mx.init.Normal(arch.residual_std))
            self.drop = nn.Dropout(dropout)

    def hybrid_forward(self, F, x):
        return self.drop(self.proj(self.gelu(self.fc(x))))


class Block(gluon.HybridBlock):
    def __init__(self, arch: TransformerArch, dropout: float):
        super().__init__()
        with self.name_scope():
            self.ln1 = nn.LayerNorm(epsilon=arch.ln_eps, in_channels=arch.width)
            self.attn = CausalSelfAttention(arch, dropout)
            self.ln2 = nn.LayerNorm(epsilon=arch.ln_eps, in_channels=arch.width)
            self.mlp = MLP(arch, dropout)

    def hybrid_forward(self, F, x):
        x = x + self.attn(self.ln1(x))  # pre-LayerNorm: the residual stream itself is never normalised
        return x + self.mlp(self.ln2(x))


class GPT(gluon.HybridBlock):
    def __init__(self, arch: TransformerArch, dropout: float):
        super().__init__()
        with self.name_scope():
            self.tok_emb = nn.Embedding(arch.vocab, arch.width, weight_initializer=mx.init.Normal(arch.init_std))
            self.pos_emb = nn.Embedding(arch.context, arch.width, weight_initializer=mx.init.Normal(arch.init_std))
            self.blocks = nn.HybridSequential()
            for _ in range(arch.layers):
                self.blocks.add(Block(arch, dropout))
            self.ln_f = nn.LayerNorm(epsilon=arch.ln_eps, in_channels=arch.width)
            # tied: the (vocab, C) Dense weight IS tok_emb.weight (same ParameterDict), no bias
            self.head = nn.Dense(arch.vocab, flatten=False, use_bias=False, in_units=arch.width,
                                 params=self.tok_emb.params)

    def hybrid_forward(self, F, tokens):  # tokens: (N, T) int32 bytes
        positions = self.pos_emb(F.contrib.arange_like(tokens, axis=1))  # (T, C)
        x = F.broadcast_add(self.tok_emb(tokens), positions.expand_dims(0))  # (N, T, C)
        return self.head(self.ln_f(self.blocks(x)))  # (N, T, vocab)


def build(spec, options):
    ctxs = contexts(options)
    mx.random.seed(options.seed)
    net = GPT(spec.arch, spec.arch.dropout if options.dropout else 0.0)
    net.initialize(ctx=ctxs)
    return GluonTrainer(net, spec, options, ctxs)
