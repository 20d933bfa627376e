"""The character-level GPT in Keras 3 (spec: harness.specs.TRANSFORMER), the functional API on any backend.

The shape of keras.io's "Text generation with a miniature GPT": token and position embeddings,
pre-LayerNorm blocks of layers.MultiHeadAttention (use_causal_mask) and a Dense MLP with exact
(erf) GELU. The output projection is the token embedding itself, called in reverse (keras_hub's
ReversibleEmbedding), so the two share one matrix. MultiHeadAttention keeps q, k, v as three
(width, heads, head_width) kernels; weights.py packs them into the canonical (3*width, width) matrix.
"""
from __future__ import annotations

import keras
from keras import layers, ops

from harness.specs import TransformerArch
from python_models.keras.trainer import KerasTrainer, configure


def attention_path() -> str:
    """What MultiHeadAttention runs on this backend (Keras 3.15's _compute_attention): with dropout
    above 0 its own einsum/softmax, else keras.ops.dot_product_attention(is_causal=True)."""
    fused = {"torch": "torch.nn.functional.scaled_dot_product_attention(is_causal=True), PyTorch's fused kernel "
                      "(flash attention for CPU on a CPU)",
             "jax": "jax.nn.dot_product_attention(implementation='xla'): XLA's einsum/softmax, explicit on CPU "
                    "(cuDNN's kernel only on a GPU where Keras finds it usable)",
             "tensorflow": "Keras' _dot_product_attention_xla: explicit einsum/softmax TensorFlow ops"}
    return ("layers.MultiHeadAttention(use_causal_mask=True). With dropout (training runs, and their eval): explicit "
            "softmax(QK^T)V (einsum, masked Softmax adding -1e9, Dropout on the probabilities). Without dropout (the "
            f"equivalence steps): {fused[keras.backend.backend()]}")


def normal(std: float):
    # One initializer per layer: an unseeded Keras initializer draws the same values at every call.
    return keras.initializers.RandomNormal(0.0, std)


def exact_gelu(x):
    return keras.activations.gelu(x, approximate=False)  # x * Phi(x)


class TiedEmbedding(layers.Embedding):
    """Token embedding whose matrix is also the output projection: called with reverse=True it maps
    (N, T, width) to (N, T, vocab) logits, x @ embeddings^T (no bias)."""

    def call(self, inputs, reverse=False):
        if not reverse:
            return super().call(inputs)
        return ops.matmul(inputs, ops.transpose(ops.cast(self.embeddings, self.compute_dtype)))

    def compute_output_spec(self, inputs, reverse=False):
        shape = (*inputs.shape[:-1], self.input_dim) if reverse else (*inputs.shape, self.output_dim)
        return keras.KerasTensor(shape, dtype=self.compute_dtype)


class PositionEmbedding(layers.Embedding):
    """Learned positions: the first T rows for a (N, T) window, added to every example."""

    def call(self, tokens):
        return ops.cast(self.embeddings[: ops.shape(tokens)[1]], self.compute_dtype)  # (T, width)

    def compute_output_shape(self, input_shape):
        return (input_shape[1], self.output_dim)


class CausalSelfAttention(layers.MultiHeadAttention):
    """Keras' MultiHeadAttention with its output projection drawn from its own initializer (the spec
    scales the projections that write into the residual stream); Keras uses one for all four."""

    def __init__(self, output_initializer, **kwargs):
        super().__init__(**kwargs)
        self.output_initializer = output_initializer

    def _make_output_dense(self, query_shape, common_kwargs, name=None):
        return super()._make_output_dense(query_shape, {**common_kwargs, "kernel_initializer": self.output_initializer},
                                          name)


def gpt(arch: TransformerArch, dropout: bool = True) -> keras.Model:
    rate = arch.dropout if dropout else 0.0
    tokens = keras.Input((arch.context,), dtype="int32")  # (N, T) bytes
    tok_emb = TiedEmbedding(arch.vocab, arch.width, embeddings_initializer=normal(arch.init_std), name="tok_emb")
    pos_emb = PositionEmbedding(arch.context, arch.width, embeddings_initializer=normal(arch.init_std), name="pos_emb")
    x = tok_emb(tokens) + pos_emb(tokens)  # (N, T, C)
    for i in range(arch.layers):
        b = f"blocks_{i}"  # layers named by their canonical prefix, "." written "_"
        h = layers.LayerNormalization(epsilon=arch.ln_eps, name=f"{b}_ln1")(x)
        h = CausalSelfAttention(normal(arch.residual_std), num_heads=arch.heads, key_dim=arch.head_width,
                                dropout=rate, kernel_initializer=normal(arch.init_std), bias_initializer="zeros",
                                name=f"{b}_attn")(h, h, use_causal_mask=True)
        x = x + layers.Dropout(rate)(h)  # pre-LayerNorm: the residual stream itself is never normalised
        h = layers.LayerNormalization(epsilon=arch.ln_eps, name=f"{b}_ln2")(x)
        h = layers.Dense(arch.mlp_width, activation=exact_gelu, kernel_initializer=normal(arch.init_std),
                         name=f"{b}_mlp_fc")(h)
        h = layers.Dense(arch.width, kernel_initializer=normal(arch.residual_std), name=f"{b}_mlp_proj")(h)
        x = x + layers.Dropout(rate)(h)
    x = layers.LayerNormalization(epsilon=arch.ln_eps, name="ln_f")(x)
    logits = tok_emb(x, reverse=True)  # (N, T, vocab): tied
    return keras.Model(tokens, logits, name="transformer")


def build(spec, options):
    configure(options)
    model = gpt(spec.arch, options.dropout)
    return KerasTrainer(model, spec, options, prefixes={n: n for n in ("tok_emb", "pos_emb", "ln_f")},
                        attention=attention_path())
