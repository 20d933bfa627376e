"""The character-level GPT in JAX/Flax NNX (spec: harness.specs.TRANSFORMER).

The shape of the Flax/JAX AI stack's miniGPT tutorial: nnx.Embed for tokens and positions,
pre-LayerNorm blocks of nnx.MultiHeadAttention (causal) and an nnx.Linear MLP with exact (erf)
GELU, the output projection tied to the token embedding (nnx.Embed.attend). Flax keeps q, k and v
as three (width, heads, head_width) kernels and the output projection as (heads, head_width,
width); the weight mapping packs and unpacks the canonical (3*width, width) matrix.
"""
from __future__ import annotations

import numpy as np
from flax import nnx

from harness.specs import TransformerArch
from python_models.jax.trainer import SAME, JaxTrainer, compute_dtype, weight_map

# Flax's attention (nnx.dot_product_attention) has two paths, chosen by the dropout rate the
# module is built with: 0 (the equivalence checks' steps) calls jax.nn.dot_product_attention, whose
# default implementation is XLA's on every platform (cuDNN only when asked for, and it has no
# dropout); above 0 (every benchmark run) it computes the weights itself, as Flax's own code.
ATTENTION = ("explicit softmax(QK^T)V: nnx.MultiHeadAttention(is_causal=True). With dropout (training runs, "
             "eval too) Flax's dot_product_attention_weights (einsum, causal mask at finfo.min, softmax, "
             "per-element dropout on the probabilities: broadcast_dropout=False); without dropout (the "
             "equivalence steps) jax.nn.dot_product_attention, implementation=None = XLA's einsum/softmax on CPU "
             "and GPU alike (its cuDNN kernel has no dropout)")


class MLP(nnx.Module):
    def __init__(self, arch: TransformerArch, *, dtype, rngs: nnx.Rngs):
        self.fc = nnx.Linear(arch.width, arch.mlp_width, kernel_init=nnx.initializers.normal(arch.init_std),
                             dtype=dtype, rngs=rngs)  # biases: Flax's default zeros
        self.proj = nnx.Linear(arch.mlp_width, arch.width, kernel_init=nnx.initializers.normal(arch.residual_std),
                               dtype=dtype, rngs=rngs)

    def __call__(self, x):
        return self.proj(nnx.gelu(self.fc(x), approximate=False))  # exact GELU (Flax's default is tanh)


class Block(nnx.Module):
    def __init__(self, arch: TransformerArch, rate: float, *, dtype, rngs: nnx.Rngs):
        norm = dict(epsilon=arch.ln_eps, dtype=dtype, rngs=rngs)
        self.ln1 = nnx.LayerNorm(arch.width, **norm)
        # broadcast_dropout=False: a fresh mask per example and head (Flax's default shares one
        # mask across the batch); deterministic=False: training, nnx.view turns it off for eval.
        self.attn = nnx.MultiHeadAttention(
            num_heads=arch.heads, in_features=arch.width, qkv_features=arch.width, out_features=arch.width,
            kernel_init=nnx.initializers.normal(arch.init_std), out_kernel_init=nnx.initializers.normal(arch.residual_std),
            dropout_rate=rate, broadcast_dropout=False, deterministic=False, decode=False, dtype=dtype, rngs=rngs)
        self.ln2 = nnx.LayerNorm(arch.width, **norm)
        self.mlp = MLP(arch, dtype=dtype, rngs=rngs)
        self.drop = nnx.Dropout(rate, rngs=rngs)  # after the attention projection and after the MLP

    def __call__(self, x):  # x: (N, T, C); pre-LayerNorm: the residual stream itself is never normalised
        x = x + self.drop(self.attn(self.ln1(x), is_causal=True))
        return x + self.drop(self.mlp(self.ln2(x)))


class GPT(nnx.Module):
    ATTENTION = ATTENTION

    def __init__(self, arch: TransformerArch, dropout: bool = True, *, dtype, rngs: nnx.Rngs):
        rate = arch.dropout if dropout else 0.0
        embed = dict(embedding_init=nnx.initializers.normal(arch.init_std), dtype=dtype, rngs=rngs)
        self.tok_emb = nnx.Embed(arch.vocab, arch.width, **embed)  # also the output projection (tied)
        self.pos_emb = nnx.Embed(arch.context, arch.width, **embed)
        self.blocks = nnx.List([Block(arch, rate, dtype=dtype, rngs=rngs) for _ in range(arch.layers)])
        self.ln_f = nnx.LayerNorm(arch.width, epsilon=arch.ln_eps, dtype=dtype, rngs=rngs)

    def __call__(self, tokens):  # tokens: (N, T) int32 bytes
        x = self.tok_emb(tokens) + self.pos_emb(np.arange(tokens.shape[1]))  # (N, T, C)
        for block in self.blocks:
            x = block(x)
        return self.tok_emb.attend(self.ln_f(x))  # (N, T, vocab) = x @ tok_emb^T: tied, no bias


def attention_layouts(arch: TransformerArch):
    """(canonical -> Flax, Flax -> canonical) for the packed q, k, v weight and bias and the
    output projection. Canonical qkv rows: q, k, v, each head after head (head h: rows
    h*head_width ..); Flax: kernel[in, head, j] = W[h*head_width + j, in]."""
    c, h, d = arch.width, arch.heads, arch.head_width
    qkv_weight = (lambda w: tuple(part.T.reshape(c, h, d) for part in np.split(w, 3)),  # (3C, C) -> 3 x (C, H, D)
                  lambda *kernels: np.concatenate([k.reshape(c, c).T for k in kernels]))
    qkv_bias = (lambda b: tuple(part.reshape(h, d) for part in np.split(b, 3)),  # (3C,) -> 3 x (H, D)
                lambda *biases: np.concatenate([b.reshape(c) for b in biases]))
    proj = (lambda w: w.T.reshape(h, d, c), lambda k: k.reshape(c, c).T)  # (C_out, C_in) <-> (H, D, C_out)
    return qkv_weight, qkv_bias, proj


def weights(spec) -> dict:
    qkv_weight, qkv_bias, proj = attention_layouts(spec.arch)
    out = {"tok_emb.weight": ("tok_emb.embedding", SAME), "pos_emb.weight": ("pos_emb.embedding", SAME)}
    for i in range(spec.arch.layers):
        a = f"blocks.{i}.attn"
        out |= {f"{a}.qkv.weight": (tuple(f"{a}.{n}.kernel" for n in ("query", "key", "value")), qkv_weight),
                f"{a}.qkv.bias": (tuple(f"{a}.{n}.bias" for n in ("query", "key", "value")), qkv_bias),
                f"{a}.proj.weight": (f"{a}.out.kernel", proj), f"{a}.proj.bias": (f"{a}.out.bias", SAME)}
    return weight_map(spec, out)  # LayerNorm weight -> scale, Linear weight -> kernel (transposed)


def build(spec, options):
    model = GPT(spec.arch, options.dropout, dtype=compute_dtype(options), rngs=nnx.Rngs(options.seed))
    return JaxTrainer(model, spec, options, weights(spec))
