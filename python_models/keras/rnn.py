"""The IMDB GRU sentiment model in Keras 3 (spec: harness.specs.RNN)."""
from __future__ import annotations

import keras
from keras import layers

from harness.specs import EMBED, HIDDEN, MAXLEN, VOCAB
from python_models.keras.trainer import KerasTrainer, setup


def gru_classifier() -> keras.Model:
    tokens = keras.Input((MAXLEN,), dtype="int32")  # (N, 150) ids, padded with 0 at the front
    x = layers.Embedding(VOCAB, EMBED, name="embedding",
                         embeddings_initializer=keras.initializers.RandomUniform(-0.05, 0.05))(tokens)
    # reset_after=True is the cuDNN/PyTorch formulation (reset gate applied after the recurrent
    # matmul, separate input and recurrent biases); no masking, so every step of the padding is
    # read, as PyTorch does. The initialisers are Keras' GRU defaults, which the spec adopts:
    # Glorot-uniform over the (125, 300) kernel, orthogonal over the (100, 300) recurrent kernel.
    x = layers.GRU(HIDDEN, reset_after=True, name="gru",
                   kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                   bias_initializer="zeros")(x)  # (N, 100): the last step's output, zero initial state
    logits = layers.Dense(2, kernel_initializer="glorot_uniform", bias_initializer="zeros", name="fc")(x)
    return keras.Model(tokens, logits, name="rnn")


def build(spec, options):
    setup(options)
    return KerasTrainer(gru_classifier(), spec, options)  # Adam in PyTorch's form: optimizers.Adam
