"""The CIFAR-10 CNN in Keras 3 (spec: harness.specs.CNN), the functional API on any backend."""
from __future__ import annotations

import keras
from keras import layers

from harness.specs import CNN_DROPOUT
from python_models.keras.trainer import KerasTrainer, setup


def conv3x3(filters: int, name: str, activation=None):
    # Stride 1, kernel 3: "same" pads 1 on every side, as the spec's pad 1.
    return layers.Conv2D(filters, 3, padding="same", activation=activation, name=name,
                         kernel_initializer="glorot_uniform", bias_initializer="zeros")


def dense(units: int, name: str, activation=None):
    return layers.Dense(units, activation=activation, name=name,
                        kernel_initializer="glorot_uniform", bias_initializer="zeros")


def cnn(dropout=CNN_DROPOUT) -> keras.Model:
    inputs = keras.Input((32, 32, 3))  # channels_last: (N, H, W, C)
    x = conv3x3(50, "conv1", "relu")(inputs)
    x = conv3x3(50, "conv2")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.ReLU()(x)
    x = layers.Dropout(dropout[0])(x)  # (N, 16, 16, 50)
    x = conv3x3(100, "conv3", "relu")(x)
    x = conv3x3(100, "conv4")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.ReLU()(x)
    x = layers.Dropout(dropout[1])(x)  # (N, 8, 8, 100)
    x = layers.Flatten()(x)  # (N, 6400) in H,W,C order: fc1's rows are reordered in the weight mapping
    x = dense(512, "fc1", "relu")(x)
    x = layers.Dropout(dropout[2])(x)
    outputs = dense(10, "fc2")(x)  # logits
    return keras.Model(inputs, outputs, name="cnn")


def build(spec, options):
    setup(options)
    model = cnn(CNN_DROPOUT if options.dropout else (0.0, 0.0, 0.0))
    return KerasTrainer(model, spec, options, flattened={"fc1": (100, 8, 8)})
