"""The CIFAR-10 CNN in raw TensorFlow 2 (spec: harness.specs.CNN), channels-last."""
from __future__ import annotations

import math

import tensorflow as tf

from harness.specs import CNNArch
from python_models.tensorflow.trainer import CONV, DENSE, SAME, Layout, build_trainer, dropout


def fc1_hwc(arch: CNNArch) -> Layout:
    """The spec's flatten is in C,H,W order; ours flattens NHWC activations in H,W,C order. Rather
    than transposing the activations every step, fc1's 6400 input rows are permuted once, in the
    mapping: canonical (512, 100*8*8) [c,h,w] <-> kernel (8*8*100, 512) [h,w,c]."""
    (c, h, w), d = arch.flat, arch.dense
    return Layout(
        lambda a: a.reshape(d, c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, d),
        lambda a: a.reshape(h, w, c, d).transpose(3, 2, 0, 1).reshape(d, c * h * w),
    )


class CNN(tf.Module):
    def __init__(self, arch: CNNArch, num_classes: int, dropout: bool = True):
        super().__init__()
        self.arch, self.rates = arch, arch.dropout if dropout else (0.0, 0.0, 0.0)
        c1, c2, c3, c4 = arch.channels  # 50, 50, 100, 100
        flat = math.prod(arch.flat)  # 100*8*8 = 6400

        def var(*shape):  # values come from the spec's initialisers via set_weights
            return tf.Variable(tf.zeros(shape))

        self.conv1_w, self.conv1_b = var(3, 3, 3, c1), var(c1)  # kernels (kh, kw, in, out)
        self.conv2_w, self.conv2_b = var(3, 3, c1, c2), var(c2)
        self.conv3_w, self.conv3_b = var(3, 3, c2, c3), var(c3)
        self.conv4_w, self.conv4_b = var(3, 3, c3, c4), var(c4)
        self.fc1_w, self.fc1_b = var(flat, arch.dense), var(arch.dense)  # rows in H,W,C order (see fc1_hwc)
        self.fc2_w, self.fc2_b = var(arch.dense, num_classes), var(num_classes)

    def weight_map(self):
        return {
            "conv1.weight": (self.conv1_w, CONV), "conv1.bias": (self.conv1_b, SAME),
            "conv2.weight": (self.conv2_w, CONV), "conv2.bias": (self.conv2_b, SAME),
            "conv3.weight": (self.conv3_w, CONV), "conv3.bias": (self.conv3_b, SAME),
            "conv4.weight": (self.conv4_w, CONV), "conv4.bias": (self.conv4_b, SAME),
            "fc1.weight": (self.fc1_w, fc1_hwc(self.arch)), "fc1.bias": (self.fc1_b, SAME),
            "fc2.weight": (self.fc2_w, DENSE), "fc2.bias": (self.fc2_b, SAME),
        }

    def __call__(self, x, training=False, seed=None):  # x: (N, 32, 32, 3)
        def conv(x, w, b):  # 3x3, stride 1: 'SAME' pads 1 on every side, as the spec's pad 1
            return tf.nn.bias_add(tf.nn.conv2d(x, w, 1, "SAME"), b)

        r1, r2, r3 = self.rates if training else (0.0, 0.0, 0.0)
        x = tf.nn.relu(conv(x, self.conv1_w, self.conv1_b))
        x = tf.nn.relu(tf.nn.max_pool2d(conv(x, self.conv2_w, self.conv2_b), 2, 2, "VALID"))  # (N, 16, 16, 50)
        x = dropout(x, r1, seed, 1)
        x = tf.nn.relu(conv(x, self.conv3_w, self.conv3_b))
        x = tf.nn.relu(tf.nn.max_pool2d(conv(x, self.conv4_w, self.conv4_b), 2, 2, "VALID"))  # (N, 8, 8, 100)
        x = dropout(x, r2, seed, 2)
        x = tf.reshape(x, [-1, math.prod(self.arch.flat)])  # (N, 6400) in H,W,C order
        x = dropout(tf.nn.relu(tf.matmul(x, self.fc1_w) + self.fc1_b), r3, seed, 3)
        return tf.matmul(x, self.fc2_w) + self.fc2_b  # (N, 10) logits


def build(spec, options):
    return build_trainer(lambda: CNN(spec.arch, spec.num_classes, options.dropout), spec, options)
