"""ResNet-50 v1.5 in Keras 3 (spec: harness.specs.RESNET50), written from the spec.

keras.applications.ResNet50 is a different model (convolution biases, stride on the 1x1
convolution, BatchNorm eps 1.001e-5), so the network is built here layer by layer.
"""
from __future__ import annotations

import keras
from keras import layers, ops

from harness.specs import ResNetArch
from python_models.keras.trainer import KerasTrainer, configure

def he_fan_out():
    """He-normal over fan-out, std = sqrt(2 / (out*kh*kw)), untruncated, as PyTorch's kaiming_normal_
    (fan_out); Keras' "he_normal" would be a truncated normal over fan-in. One initializer per
    layer, made after configure() seeded Keras: an unseeded initializer object draws its seed once, at
    creation, and gives every kernel of one shape the same values."""
    return keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal")


def conv(x, filters: int, kernel: int, stride: int, name: str):
    """A bias-free convolution with symmetric padding kernel//2 (0 for 1x1).

    Stride 2 pads explicitly and convolves "valid": TF's "same" would pad asymmetrically
    (0 before, 1 after) and shift every window against the spec's."""
    pad = kernel // 2
    if pad and stride > 1:
        x = layers.ZeroPadding2D(pad)(x)
    padding = "same" if pad and stride == 1 else "valid"
    return layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=False,
                         kernel_initializer=he_fan_out(), name=name.replace(".", "_"))(x)


class TorchBatchNorm(layers.BatchNormalization):
    """BatchNorm as the spec (PyTorch) keeps it.

    Keras averages the biased batch variance v, the one it normalises with, into its running
    variance; PyTorch the unbiased v * n / (n - 1), n values per channel (batch * H * W). This
    layer adds the difference, (1 - momentum) * v / (n - 1), after Keras' own update."""

    def _moments(self, inputs, mask):
        mean, variance = super()._moments(inputs, mask)
        self._batch_variance = variance  # (C,), float32 even under a bf16 policy
        return mean, variance

    def call(self, inputs, training=None, mask=None):
        outputs = super().call(inputs, training=training, mask=mask)
        if training and self.trainable:
            v = self._batch_variance
            n = ops.cast(ops.size(inputs), v.dtype) / ops.cast(ops.size(v), v.dtype)
            self.moving_variance.assign_add((1.0 - self.momentum) * v / (n - 1.0))
        return outputs


def batch_norm(x, name: str, arch: ResNetArch):
    # Keras' momentum is the weight of the old running value: 1 - PyTorch's 0.1.
    return TorchBatchNorm(epsilon=arch.bn_eps, momentum=1.0 - arch.bn_momentum,
                          name=name.replace(".", "_"))(x)  # the torch backend refuses dots


def bottleneck(x, prefix: str, width: int, stride: int, downsample: bool, arch: ResNetArch):
    cout = width * arch.expansion
    out = layers.ReLU()(batch_norm(conv(x, width, 1, 1, f"{prefix}.conv1"), f"{prefix}.bn1", arch))
    out = layers.ReLU()(batch_norm(conv(out, width, 3, stride, f"{prefix}.conv2"), f"{prefix}.bn2", arch))  # v1.5
    out = batch_norm(conv(out, cout, 1, 1, f"{prefix}.conv3"), f"{prefix}.bn3", arch)
    if downsample:
        x = conv(x, cout, 1, stride, f"{prefix}.downsample.0")
        x = batch_norm(x, f"{prefix}.downsample.1", arch)
    return layers.ReLU()(layers.Add()([out, x]))


def resnet50(arch: ResNetArch, image_size: int, num_classes: int) -> keras.Model:
    inputs = keras.Input((image_size, image_size, 3))  # channels_last: (N, S, S, 3)
    x = layers.ReLU()(batch_norm(conv(inputs, arch.stem, 7, 2, "conv1"), "bn1", arch))  # (N, S/2, S/2, 64)
    # Max-pool 3x3/2 pad 1: PyTorch pads with -inf; after the ReLU every value is >= 0, so zero
    # padding selects the same maxima.
    x = layers.MaxPooling2D(3, strides=2, padding="valid")(layers.ZeroPadding2D(1)(x))  # (N, S/4, S/4, 64)
    for prefix, _cin, width, stride, down in arch.blocks():
        x = bottleneck(x, prefix, width, stride, down, arch)  # ends at (N, S/32, S/32, 2048)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(num_classes, kernel_initializer="glorot_uniform", bias_initializer="zeros",
                           name="fc")(x)
    return keras.Model(inputs, outputs, name="resnet50")


def build(spec, options):
    configure(options)
    return KerasTrainer(resnet50(spec.arch, options.image_size, spec.num_classes), spec, options)
