"""The character-level GPT in PyTensor (spec: harness.specs.TRANSFORMER).

The model is a symbolic graph over shared variables keyed by canonical name (PyTorch layouts:
the weight mapping is the identity, q, k, v packed as one (3C, C) matrix). Every Linear works on
the (N*T, C) rows of the batch, one GEMM each; attention is written out, softmax(q k^T / sqrt(head
width)) v, as two BatchedDot products over the (N * heads) stacked matrices with the causal mask a
`switch` (PyTensor has no fused attention op). LayerNorm and the exact (erf) GELU are built from
primitives (PyTensor has neither as an op); `pytensor.grad` differentiates all of it.
"""
from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytensor.tensor as pt

from harness.specs import TransformerArch
from python_models.pytensor.trainer import PytensorTrainer


def layer_norm(x, weight, bias, eps: float):
    """Over the last axis, biased variance, as torch.nn.LayerNorm."""
    mean = x.mean(axis=-1, keepdims=True)
    var = pt.sqr(x - mean).mean(axis=-1, keepdims=True)
    return (x - mean) / pt.sqrt(var + eps) * weight + bias


def gelu(x):
    """Exact GELU: x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))."""
    return 0.5 * x * (1.0 + pt.erf(x * np.float32(1.0 / math.sqrt(2.0))))


def linear(p, key: str, x):
    """torch.nn.Linear on rows: x (rows, in) @ weight (out, in)^T + bias."""
    return pt.dot(x, p[f"{key}.weight"].T) + p[f"{key}.bias"]


def attention(g, x, key: str, arch: TransformerArch, n: int, t: int):
    """x: (N*T, C) rows of N windows of T positions -> (N*T, C)."""
    c, heads, d = arch.width, arch.heads, arch.head_width
    qkv = linear(g.p, f"{key}.qkv", x)  # (N*T, 3C): q, k, v, each head after head

    def split(i):  # the i-th third as (N*heads, T, C/heads)
        return qkv[:, i * c:(i + 1) * c].reshape((n, t, heads, d)).dimshuffle(0, 2, 1, 3).reshape((n * heads, t, d))

    q, k, v = split(0), split(1), split(2)
    scores = pt.batched_dot(q, k.dimshuffle(0, 2, 1)) * np.float32(1.0 / math.sqrt(d))  # (N*heads, T query, T key)
    past = pt.constant(np.tril(np.ones((t, t), dtype=bool)))  # key <= query
    scores = pt.switch(past, scores, np.float32(-np.inf))
    probs = g.dropout(pt.special.softmax(scores, axis=-1), arch.dropout)
    y = pt.batched_dot(probs, v)  # (N*heads, T, C/heads)
    y = y.reshape((n, heads, t, d)).dimshuffle(0, 2, 1, 3).reshape((n * t, c))  # heads side by side again
    return g.dropout(linear(g.p, f"{key}.proj", y), arch.dropout)


def mlp(g, x, key: str, arch: TransformerArch):
    return g.dropout(linear(g.p, f"{key}.proj", gelu(linear(g.p, f"{key}.fc", x))), arch.dropout)


def forward(g, tokens, arch: TransformerArch):
    """tokens: (N, T) int64 bytes -> (N, T, vocab) logits."""
    p, eps = g.p, arch.ln_eps
    n, t = tokens.type.shape
    # (N*T, C): token rows plus the position of each (row i is position i mod T)
    x = p["tok_emb.weight"][tokens.reshape((n * t,))].reshape((n, t, arch.width)) + p["pos_emb.weight"][:t]
    x = x.reshape((n * t, arch.width))
    for i in range(arch.layers):
        b = f"blocks.{i}"
        # pre-LayerNorm: the residual stream itself is never normalised
        x = x + attention(g, layer_norm(x, p[f"{b}.ln1.weight"], p[f"{b}.ln1.bias"], eps), f"{b}.attn", arch, n, t)
        x = x + mlp(g, layer_norm(x, p[f"{b}.ln2.weight"], p[f"{b}.ln2.bias"], eps), f"{b}.mlp", arch)
    x = layer_norm(x, p["ln_f.weight"], p["ln_f.bias"], eps)
    return pt.dot(x, p["tok_emb.weight"].T).reshape((n, t, arch.vocab))  # tied: the token embedding, no bias


def initial_weights(spec, rng):
    """The spec's families: normal(0, init_std) matrices and embeddings, normal(0, residual_std) for
    attn.proj and mlp.proj, zero biases, LayerNorm weight 1."""
    arch, out = spec.arch, {}
    for w in spec.weights:
        if w.init == "ones":
            out[w.key] = np.ones(w.shape)
        elif w.init == "zeros":
            out[w.key] = np.zeros(w.shape)
        else:
            std = arch.residual_std if w.key.endswith(("attn.proj.weight", "mlp.proj.weight")) else arch.init_std
            out[w.key] = rng.normal(0.0, std, w.shape)
    return out


def build(spec, options):
    init = initial_weights(spec, np.random.default_rng(options.seed))
    return PytensorTrainer(spec, options, partial(forward, arch=spec.arch), init,
                           compute_layout="rows (N*T, C) for every Linear; (N*heads, T, C/heads) for attention")
