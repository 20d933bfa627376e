"""ResNet-50 v1.5 in tinygrad (spec: harness.specs.RESNET50), NCHW, written from the spec.

tinygrad's nn.BatchNorm already is PyTorch's: it normalises a training batch with the biased
variance, averages the unbiased one (times n/(n-1), n = N*H*W) into running_var with
running = (1 - momentum) * running + momentum * batch, and counts num_batches_tracked (not a
canonical weight). Its running statistics are buffers (is_param False), not parameters.
"""
from __future__ import annotations

from tinygrad import Tensor, nn

from python_models.tinygrad.trainer import TinygradTrainer, conv, he_normal_fan_out, linear, start


def batchnorm(arch, c: int) -> nn.BatchNorm:
    return nn.BatchNorm(c, eps=arch.bn_eps, momentum=arch.bn_momentum)


def layer(cin: int, cout: int, k: int, stride: int = 1, padding: int = 0):
    """A convolution without bias, He-normal (fan-out) initialised."""
    return conv(cin, cout, k, stride, padding, bias=False, init=he_normal_fan_out)


class Bottleneck:
    def __init__(self, arch, cin: int, width: int, stride: int, downsample: bool):
        cout = width * arch.expansion
        bn = lambda c: batchnorm(arch, c)
        self.conv1, self.bn1 = layer(cin, width, 1), bn(width)
        self.conv2, self.bn2 = layer(width, width, 3, stride, 1), bn(width)  # v1.5: the stride is on the 3x3
        self.conv3, self.bn3 = layer(width, cout, 1), bn(cout)
        # A list: its items are named 0 (conv) and 1 (BN) in the state dict, as the canonical "downsample.0/1".
        self.downsample = [layer(cin, cout, 1, stride), bn(cout)] if downsample else None

    def __call__(self, x: Tensor) -> Tensor:
        out = self.bn1(self.conv1(x)).relu()
        out = self.bn2(self.conv2(out)).relu()
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample[1](self.downsample[0](x))
        return (out + shortcut).relu()


class ResNet50:
    def __init__(self, arch, num_classes: int):
        self.conv1, self.bn1 = layer(3, arch.stem, 7, stride=2, padding=3), batchnorm(arch, arch.stem)
        stages: dict[str, list] = {}
        for prefix, cin, width, stride, down in arch.blocks():
            stages.setdefault(prefix.split(".")[0], []).append(Bottleneck(arch, cin, width, stride, down))
        self.stages = list(stages)
        for name, blocks in stages.items():  # layer1..layer4, blocks named 0, 1, ... as the canonical keys
            setattr(self, name, blocks)
        self.fc = linear(arch.stages[-1][0] * arch.expansion, num_classes)

    def __call__(self, x: Tensor) -> Tensor:  # x: (N, 3, S, S)
        x = self.bn1(self.conv1(x)).relu()
        x = x.max_pool2d(3, stride=2, padding=1)  # pads with -inf, as PyTorch
        for name in self.stages:
            for block in getattr(self, name):
                x = block(x)  # after layer4: (N, 2048, S/32, S/32)
        return self.fc(x.mean(axis=(2, 3)))


def build(spec, options):
    start(options)
    return TinygradTrainer(ResNet50(spec.arch, spec.num_classes), spec, options)
