"""ResNet-50 v1.5 in raw TensorFlow 2 (spec: harness.specs.RESNET50), channels-last."""
from __future__ import annotations

import tensorflow as tf

from harness.specs import ResNetArch
from python_models.tensorflow.trainer import CONV, DENSE, SAME, build_trainer, conv2d


class Conv(tf.Module):
    """A bias-free convolution; every padding is explicit and symmetric (pad = k // 2)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1):
        super().__init__()
        self.w = tf.Variable(tf.zeros((k, k, cin, cout)))  # (kh, kw, in, out); set from canonical weights
        self.stride, self.pad = stride, k // 2

    def __call__(self, x):
        return conv2d(x, self.w, self.stride, self.pad)


class BatchNorm(tf.Module):
    """PyTorch's BatchNorm2d: biased batch variance to normalise, unbiased for the running update.

    FusedBatchNormV3 does exactly that in training mode; with exponential_avg_factor = 0.1 it returns
    the updated running statistics, running = 0.9 * running + 0.1 * batch."""

    def __init__(self, c: int, arch: ResNetArch):
        super().__init__()
        self.eps, self.momentum = arch.bn_eps, arch.bn_momentum
        self.gamma, self.beta = tf.Variable(tf.ones(c)), tf.Variable(tf.zeros(c))
        self.mean = tf.Variable(tf.zeros(c), trainable=False)
        self.var = tf.Variable(tf.ones(c), trainable=False)

    def __call__(self, x, training):
        y, mean, var, *_ = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=self.gamma, offset=self.beta, mean=self.mean.read_value(), variance=self.var.read_value(),
            epsilon=self.eps, exponential_avg_factor=self.momentum, data_format="NHWC", is_training=training)
        if training:
            self.mean.assign(mean)
            self.var.assign(var)
        return y

    def weight_map(self, key):
        return {f"{key}.weight": (self.gamma, SAME), f"{key}.bias": (self.beta, SAME),
                f"{key}.running_mean": (self.mean, SAME), f"{key}.running_var": (self.var, SAME)}


class Bottleneck(tf.Module):
    def __init__(self, cin: int, width: int, stride: int, downsample: bool, arch: ResNetArch):
        super().__init__()
        cout = width * arch.expansion
        self.conv1, self.bn1 = Conv(cin, width, 1), BatchNorm(width, arch)
        self.conv2, self.bn2 = Conv(width, width, 3, stride), BatchNorm(width, arch)  # v1.5: stride on the 3x3
        self.conv3, self.bn3 = Conv(width, cout, 1), BatchNorm(cout, arch)
        self.down = (Conv(cin, cout, 1, stride), BatchNorm(cout, arch)) if downsample else None

    def __call__(self, x, training):
        out = tf.nn.relu(self.bn1(self.conv1(x), training))
        out = tf.nn.relu(self.bn2(self.conv2(out), training))
        out = self.bn3(self.conv3(out), training)
        shortcut = x if self.down is None else self.down[1](self.down[0](x), training)
        return tf.nn.relu(out + shortcut)

    def weight_map(self, key):
        out = {}
        for i, (conv, bn) in enumerate([(self.conv1, self.bn1), (self.conv2, self.bn2), (self.conv3, self.bn3)], 1):
            out[f"{key}.conv{i}.weight"] = (conv.w, CONV)
            out.update(bn.weight_map(f"{key}.bn{i}"))
        if self.down is not None:
            out[f"{key}.downsample.0.weight"] = (self.down[0].w, CONV)
            out.update(self.down[1].weight_map(f"{key}.downsample.1"))
        return out


class ResNet50(tf.Module):
    FAST_PATH = {"fused_batch_norm": True}

    def __init__(self, arch: ResNetArch, num_classes: int):
        super().__init__()
        self.conv1, self.bn1 = Conv(3, arch.stem, 7, 2), BatchNorm(arch.stem, arch)
        self.blocks = {prefix: Bottleneck(cin, width, stride, down, arch)
                       for prefix, cin, width, stride, down in arch.blocks()}  # "layer1.0" .. "layer4.2"
        features = arch.stages[-1][0] * arch.expansion  # 512 * 4 = 2048
        self.fc_w = tf.Variable(tf.zeros((features, num_classes)))
        self.fc_b = tf.Variable(tf.zeros(num_classes))

    def __call__(self, x, training=False, seed=None):  # x: (N, S, S, 3); no dropout, seed unused
        x = tf.nn.relu(self.bn1(self.conv1(x), training))
        # 3x3/2 max-pool with pad 1 on every side; the padding never wins a max, as in PyTorch.
        x = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], constant_values=float("-inf"))
        x = tf.nn.max_pool2d(x, 3, 2, "VALID")
        for block in self.blocks.values():
            x = block(x, training)  # (N, S/32, S/32, 2048) after the last
        return tf.matmul(tf.reduce_mean(x, axis=[1, 2]), self.fc_w) + self.fc_b

    def weight_map(self):
        out = {"conv1.weight": (self.conv1.w, CONV), **self.bn1.weight_map("bn1")}
        for prefix, block in self.blocks.items():
            out.update(block.weight_map(prefix))
        out["fc.weight"], out["fc.bias"] = (self.fc_w, DENSE), (self.fc_b, SAME)
        return out


def build(spec, options):
    return build_trainer(lambda: ResNet50(spec.arch, spec.num_classes), spec, options)
