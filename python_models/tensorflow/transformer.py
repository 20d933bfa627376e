"""The character-level GPT in raw TensorFlow 2 (spec: harness.specs.TRANSFORMER).

A tf.Module of plain variables, called inside the trainer's tf.function step: pre-LayerNorm
blocks, causal self-attention written out as softmax(q k^T / sqrt(d) + mask) v (TensorFlow has
no fused attention op outside Keras; XLA fuses it under --compile), exact (erf) GELU, the output
projection tied to the token embedding. q, k, v stay packed as one (width, 3*width) kernel, so
the canonical (3*width, width) matrix maps by a transpose alone. AdamW with the spec's decay
groups and global-norm clipping live in the shared trainer (trainer.py).
"""
from __future__ import annotations

import tensorflow as tf

from harness.specs import TransformerArch
from python_models.tensorflow.trainer import DENSE, SAME, build_trainer, dropout

ATTENTION = ("explicit softmax(QK^T)V: tf.matmul, a -inf causal mask (tf.linalg.band_part), tf.nn.softmax, "
             "stateless dropout on the probabilities; TensorFlow has no fused attention kernel")


def layer_norm(x, gain, bias, eps: float):
    """LayerNorm over the last axis: (x - mean) / sqrt(biased variance + eps) * gain + bias."""
    mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
    return (x - mean) * tf.math.rsqrt(var + eps) * gain + bias


class Block(tf.Module):
    """x = x + drop(proj(attn(ln1(x)))); x = x + drop(mlp.proj(gelu(mlp.fc(ln2(x)))))."""

    def __init__(self, arch: TransformerArch, index: int):
        super().__init__()
        self.arch, self.index = arch, index
        c, hidden = arch.width, arch.mlp_width

        def var(*shape):  # values come from the spec's initialisers via set_weights
            return tf.Variable(tf.zeros(shape))

        self.ln1_g, self.ln1_b = var(c), var(c)
        self.qkv_w, self.qkv_b = var(c, 3 * c), var(3 * c)  # x @ qkv_w: columns q | k | v, head after head
        self.proj_w, self.proj_b = var(c, c), var(c)
        self.ln2_g, self.ln2_b = var(c), var(c)
        self.fc_w, self.fc_b = var(c, hidden), var(hidden)
        self.mlp_proj_w, self.mlp_proj_b = var(hidden, c), var(c)

    def weight_map(self):
        b = f"blocks.{self.index}"
        return {
            f"{b}.ln1.weight": (self.ln1_g, SAME), f"{b}.ln1.bias": (self.ln1_b, SAME),
            f"{b}.attn.qkv.weight": (self.qkv_w, DENSE), f"{b}.attn.qkv.bias": (self.qkv_b, SAME),
            f"{b}.attn.proj.weight": (self.proj_w, DENSE), f"{b}.attn.proj.bias": (self.proj_b, SAME),
            f"{b}.ln2.weight": (self.ln2_g, SAME), f"{b}.ln2.bias": (self.ln2_b, SAME),
            f"{b}.mlp.fc.weight": (self.fc_w, DENSE), f"{b}.mlp.fc.bias": (self.fc_b, SAME),
            f"{b}.mlp.proj.weight": (self.mlp_proj_w, DENSE), f"{b}.mlp.proj.bias": (self.mlp_proj_b, SAME),
        }

    def attention(self, x, rate: float, seed):  # x: (N, T, C)
        arch = self.arch
        n, t = tf.shape(x)[0], tf.shape(x)[1]

        def heads(part):  # (N, T, C) -> (N, heads, T, head_width)
            return tf.transpose(tf.reshape(part, [n, t, arch.heads, arch.head_width]), [0, 2, 1, 3])

        q, k, v = (heads(p) for p in tf.split(tf.matmul(x, self.qkv_w) + self.qkv_b, 3, axis=-1))
        scores = tf.matmul(q, k, transpose_b=True) / tf.sqrt(float(arch.head_width))  # (N, heads, T, T)
        causal = tf.cast(tf.linalg.band_part(tf.ones([t, t]), -1, 0), tf.bool)  # row i sees columns <= i
        probs = tf.nn.softmax(tf.where(causal, scores, float("-inf")), axis=-1)
        probs = dropout(probs, rate, seed, 3 * self.index + 1)
        y = tf.reshape(tf.transpose(tf.matmul(probs, v), [0, 2, 1, 3]), [n, t, arch.width])  # heads side by side
        return tf.matmul(y, self.proj_w) + self.proj_b

    def __call__(self, x, rate: float, seed):
        eps = self.arch.ln_eps
        h = self.attention(layer_norm(x, self.ln1_g, self.ln1_b, eps), rate, seed)
        x = x + dropout(h, rate, seed, 3 * self.index + 2)  # pre-LayerNorm: the residual stream is never normalised
        h = tf.nn.gelu(tf.matmul(layer_norm(x, self.ln2_g, self.ln2_b, eps), self.fc_w) + self.fc_b,
                       approximate=False)  # exact GELU: x * Phi(x)
        return x + dropout(tf.matmul(h, self.mlp_proj_w) + self.mlp_proj_b, rate, seed, 3 * self.index + 3)


class GPT(tf.Module):
    ATTENTION = ATTENTION

    def __init__(self, arch: TransformerArch, dropout: bool = True):
        super().__init__()
        self.arch, self.rate = arch, arch.dropout if dropout else 0.0
        self.tok_emb = tf.Variable(tf.zeros((arch.vocab, arch.width)))  # also the output projection (tied)
        self.pos_emb = tf.Variable(tf.zeros((arch.context, arch.width)))
        self.blocks = [Block(arch, i) for i in range(arch.layers)]
        self.ln_f_g, self.ln_f_b = tf.Variable(tf.zeros(arch.width)), tf.Variable(tf.zeros(arch.width))

    def weight_map(self):
        out = {"tok_emb.weight": (self.tok_emb, SAME), "pos_emb.weight": (self.pos_emb, SAME)}
        for block in self.blocks:
            out.update(block.weight_map())
        return out | {"ln_f.weight": (self.ln_f_g, SAME), "ln_f.bias": (self.ln_f_b, SAME)}

    def __call__(self, tokens, training=False, seed=None):  # tokens: (N, T) int64 bytes
        rate = self.rate if training else 0.0
        x = tf.gather(self.tok_emb, tokens) + self.pos_emb[: tf.shape(tokens)[1]]  # (N, T, C)
        for block in self.blocks:
            x = block(x, rate, seed)
        x = layer_norm(x, self.ln_f_g, self.ln_f_b, self.arch.ln_eps)
        return tf.matmul(x, self.tok_emb, transpose_b=True)  # (N, T, vocab): tied, no bias


def build(spec, options):
    return build_trainer(lambda: GPT(spec.arch, options.dropout), spec, options)
