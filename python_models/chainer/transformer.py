"""The character-level GPT in Chainer (spec: harness.specs.TRANSFORMER).

Define-by-run Chains: pre-LayerNorm blocks, attention written out as softmax(q k^T / sqrt(head
width)) v with F.matmul over (N, heads) stacks of matrices (Chainer has no fused attention
kernel; its MultiHeadAttention lives in no release), the causal mask by F.where. Chainer 7 has
no GELU function, so the exact form is built from F.erf: x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)).
The output projection is F.linear with the token embedding's own W (tied).
"""
from __future__ import annotations

import math

import chainer
import chainer.functions as F
import chainer.links as L
import numpy as np
from chainer import initializers

from harness.specs import TransformerArch
from python_models.chainer.trainer import ChainerTrainer, configure


def gelu(x):
    """Exact (erf) GELU: x * Phi(x)."""
    return 0.5 * x * (1.0 + F.erf(x * (1.0 / math.sqrt(2.0))))


def layer_norm(ln: L.LayerNormalization, x):
    """L.LayerNormalization normalises (rows, C); x is (N, T, C)."""
    return F.reshape(ln(F.reshape(x, (-1, x.shape[-1]))), x.shape)


class CausalSelfAttention(chainer.Chain):
    def __init__(self, arch: TransformerArch, dropout: float):
        super().__init__()
        self.heads, self.dropout, self.scale = arch.heads, dropout, 1.0 / math.sqrt(arch.head_width)
        with self.init_scope():
            # rows q, k, v, each head after head, as the canonical (3C, C) matrix packs them
            self.qkv = L.Linear(arch.width, 3 * arch.width, initialW=initializers.Normal(arch.init_std))
            self.proj = L.Linear(arch.width, arch.width, initialW=initializers.Normal(arch.residual_std))

    def forward(self, x):  # x: (N, T, C)
        n, t, c = x.shape
        q, k, v = (F.transpose(F.reshape(part, (n, t, self.heads, c // self.heads)), (0, 2, 1, 3))
                   for part in F.split_axis(self.qkv(x, n_batch_axes=2), 3, axis=2))  # 3 x (N, heads, T, C/heads)
        scores = F.matmul(q, k, transb=True) * self.scale  # (N, heads, T query, T key)
        xp = self.xp
        past = xp.broadcast_to(xp.tri(t, dtype=bool), scores.shape)  # key <= query
        scores = F.where(past, scores, xp.full(scores.shape, -np.inf, dtype=scores.dtype))
        y = F.matmul(F.dropout(F.softmax(scores, axis=3), self.dropout), v)  # (N, heads, T, C/heads)
        y = F.reshape(F.transpose(y, (0, 2, 1, 3)), (n, t, c))  # heads side by side again
        return F.dropout(self.proj(y, n_batch_axes=2), self.dropout)


class MLP(chainer.Chain):
    def __init__(self, arch: TransformerArch, dropout: float):
        super().__init__()
        self.dropout = dropout
        with self.init_scope():
            self.fc = L.Linear(arch.width, arch.mlp_width, initialW=initializers.Normal(arch.init_std))
            self.proj = L.Linear(arch.mlp_width, arch.width, initialW=initializers.Normal(arch.residual_std))

    def forward(self, x):
        return F.dropout(self.proj(gelu(self.fc(x, n_batch_axes=2)), n_batch_axes=2), self.dropout)


class Block(chainer.Chain):
    def __init__(self, arch: TransformerArch, dropout: float):
        super().__init__()
        with self.init_scope():
            self.ln1 = L.LayerNormalization(arch.width, eps=arch.ln_eps)
            self.attn = CausalSelfAttention(arch, dropout)
            self.ln2 = L.LayerNormalization(arch.width, eps=arch.ln_eps)
            self.mlp = MLP(arch, dropout)

    def forward(self, x):
        x = x + self.attn(layer_norm(self.ln1, x))  # pre-LayerNorm: the residual stream is never normalised
        return x + self.mlp(layer_norm(self.ln2, x))


class GPT(chainer.Chain):
    def __init__(self, arch: TransformerArch, dropout: float):
        super().__init__()
        with self.init_scope():
            self.tok_emb = L.EmbedID(arch.vocab, arch.width, initialW=initializers.Normal(arch.init_std))
            self.pos_emb = L.EmbedID(arch.context, arch.width, initialW=initializers.Normal(arch.init_std))
            self.blocks = chainer.ChainList(*(Block(arch, dropout) for _ in range(arch.layers)))
            self.ln_f = L.LayerNormalization(arch.width, eps=arch.ln_eps)

    def forward(self, tokens):  # tokens: (N, T) int32 bytes
        n, t = tokens.shape
        positions = self.pos_emb(self.xp.arange(t, dtype=np.int32))  # (T, C)
        x = self.tok_emb(tokens) + F.broadcast_to(positions, (n, t, positions.shape[1]))  # (N, T, C)
        for block in self.blocks:
            x = block(x)
        return F.linear(layer_norm(self.ln_f, x), self.tok_emb.W, n_batch_axes=2)  # (N, T, vocab): tied, no bias


def build(spec, options):
    device = configure(options)
    return ChainerTrainer(GPT(spec.arch, spec.arch.dropout if options.dropout else 0.0), spec, options, device)
