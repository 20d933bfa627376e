"""The IMDB GRU sentiment model in Keras 3 (spec: harness.specs.RNN)."""
from __future__ import annotations

import keras
from keras import layers

from harness.specs import GRUArch
from python_models.keras.trainer import KerasTrainer, configure


def gru_classifier(arch: GRUArch, num_classes: int) -> keras.Model:
    tokens = keras.Input((arch.maxlen,), dtype="int32")  # (N, 150) ids, padded with 0 at the front
    x = layers.Embedding(arch.vocab, arch.embed, name="embedding",
                         embeddings_initializer=keras.initializers.RandomUniform(-0.05, 0.05))(tokens)
    # reset_after=True is the cuDNN/PyTorch formulation (reset gate applied after the recurrent
    # matmul, separate input and recurrent biases); no masking, so every step of the padding is
    # read, as PyTorch does. The initialisers are Keras' GRU defaults, which the spec adopts:
    # Glorot-uniform over the (125, 300) kernel, orthogonal over the (100, 300) recurrent kernel.
    x = layers.GRU(arch.hidden, reset_after=True, name="gru",
                   kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                   bias_initializer="zeros")(x)  # (N, 100): the last step's output, zero initial state
    logits = layers.Dense(num_classes, kernel_initializer="glorot_uniform", bias_initializer="zeros", name="fc")(x)
    return keras.Model(tokens, logits, name="rnn")


def build(spec, options):
    configure(options)
    model = gru_classifier(spec.arch, spec.num_classes)
    return KerasTrainer(model, spec, options)  # Adam in PyTorch's form: optimizers.Adam
