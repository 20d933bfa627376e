"""The CIFAR-10 CNN in Keras 3 (spec: harness.specs.CNN), the functional API on any backend."""
from __future__ import annotations

import keras
from keras import layers

from harness.specs import CNNArch
from python_models.keras.trainer import KerasTrainer, configure


def conv3x3(filters: int, name: str, activation=None):
    # Stride 1, kernel 3: "same" pads 1 on every side, as the spec's pad 1.
    return layers.Conv2D(filters, 3, padding="same", activation=activation, name=name,
                         kernel_initializer="glorot_uniform", bias_initializer="zeros")


def dense(units: int, name: str, activation=None):
    return layers.Dense(units, activation=activation, name=name,
                        kernel_initializer="glorot_uniform", bias_initializer="zeros")


def cnn(arch: CNNArch, num_classes: int, dropout: bool = True) -> keras.Model:
    c1, c2, c3, c4 = arch.channels  # 50, 50, 100, 100
    rate1, rate2, rate3 = arch.dropout if dropout else (0.0, 0.0, 0.0)
    inputs = keras.Input((32, 32, 3))  # channels_last: (N, H, W, C)
    x = conv3x3(c1, "conv1", "relu")(inputs)
    x = conv3x3(c2, "conv2")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.ReLU()(x)
    x = layers.Dropout(rate1)(x)  # (N, 16, 16, 50)
    x = conv3x3(c3, "conv3", "relu")(x)
    x = conv3x3(c4, "conv4")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.ReLU()(x)
    x = layers.Dropout(rate2)(x)  # (N, 8, 8, 100)
    x = layers.Flatten()(x)  # (N, 6400) in H,W,C order: fc1's rows are reordered in the weight mapping
    x = dense(arch.dense, "fc1", "relu")(x)
    x = layers.Dropout(rate3)(x)
    outputs = dense(num_classes, "fc2")(x)  # logits
    return keras.Model(inputs, outputs, name="cnn")


def build(spec, options):
    configure(options)
    model = cnn(spec.arch, spec.num_classes, options.dropout)
    return KerasTrainer(model, spec, options, flattened={"fc1": spec.arch.flat})
