"""ResNet-50 v1.5 in JAX/Flax NNX (spec: harness.specs.RESNET50), channels-last, written from the spec."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from harness.specs import ResNetArch
from python_models.jax.trainer import JaxTrainer, compute_dtype, weight_map

# PyTorch's kaiming_normal_(mode="fan_out"): an untruncated normal, std sqrt(2 / (out*kh*kw)).
# (nnx.initializers.he_normal would truncate it and use fan_in.)
HE_FAN_OUT = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")


class BatchNorm(nnx.BatchNorm):
    """nnx.BatchNorm with PyTorch's running variance.

    Both normalise a training batch with its biased variance, but PyTorch averages the unbiased
    variance (times n/(n-1), n = N*H*W) into running_var, where Flax averages the biased one; eval
    outputs read running_var, so the PyTorch form is kept. The variance is taken two-pass,
    mean((x - mean)^2), as PyTorch does (Flax's default is E[x^2] - E[x]^2)."""

    def __call__(self, x):  # x: (N, H, W, C)
        if self.use_running_average:
            mean, var = self.mean[...], self.var[...]
        else:
            axes = tuple(range(x.ndim - 1))
            n = x.size // x.shape[-1]
            x32 = x.astype(jnp.float32)  # statistics in float32 whatever the compute dtype
            mean = x32.mean(axes)
            var = jnp.square(x32 - mean).mean(axes)
            m = self.momentum  # Flax's decay, 1 - PyTorch's momentum
            self.mean[...] = m * self.mean[...] + (1 - m) * mean
            self.var[...] = m * self.var[...] + (1 - m) * var * (n / (n - 1))
        scale = self.scale[...] * jax.lax.rsqrt(var + self.epsilon)
        return ((x - mean) * scale + self.bias[...]).astype(self.dtype or x.dtype)


class Layers:
    """Conv/BN factories sharing the architecture's BatchNorm constants, one dtype and one RNG stream."""

    def __init__(self, arch: ResNetArch, dtype, rngs):
        self.arch, self.dtype, self.rngs = arch, dtype, rngs

    def conv(self, cin, cout, k, stride=1, pad=0):
        # Explicit symmetric padding: 'SAME' with stride 2 pads (0, 1) on even inputs, PyTorch (1, 1).
        return nnx.Conv(cin, cout, (k, k), strides=stride, padding=((pad, pad), (pad, pad)), use_bias=False,
                        kernel_init=HE_FAN_OUT, dtype=self.dtype, rngs=self.rngs)

    def bn(self, c):
        return BatchNorm(c, momentum=1 - self.arch.bn_momentum, epsilon=self.arch.bn_eps,  # Flax's decay: 1 - PyTorch's
                         dtype=self.dtype, rngs=self.rngs)


class Bottleneck(nnx.Module):
    def __init__(self, cin, width, stride, downsample, make: Layers):
        cout = width * make.arch.expansion
        self.conv1, self.bn1 = make.conv(cin, width, 1), make.bn(width)
        self.conv2, self.bn2 = make.conv(width, width, 3, stride, pad=1), make.bn(width)  # v1.5: stride here
        self.conv3, self.bn3 = make.conv(width, cout, 1), make.bn(cout)
        # nnx.List's items are named 0, 1: the canonical "downsample.0" (conv) and "downsample.1" (BN).
        self.downsample = nnx.List([make.conv(cin, cout, 1, stride), make.bn(cout)]) if downsample else None

    def __call__(self, x):
        out = nnx.relu(self.bn1(self.conv1(x)))
        out = nnx.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample[1](self.downsample[0](x))
        return nnx.relu(out + shortcut)


class ResNet50(nnx.Module):
    def __init__(self, arch: ResNetArch, num_classes: int, *, dtype, rngs: nnx.Rngs):
        make = Layers(arch, dtype, rngs)
        self.conv1, self.bn1 = make.conv(3, arch.stem, 7, 2, pad=3), make.bn(arch.stem)
        stages: dict[str, list] = {}
        for prefix, cin, width, stride, down in arch.blocks():
            stages.setdefault(prefix.split(".")[0], []).append(Bottleneck(cin, width, stride, down, make))
        for name, blocks in stages.items():  # layer1..layer4, blocks named 0, 1, ... as the canonical keys
            setattr(self, name, nnx.List(blocks))
        features = arch.stages[-1][0] * arch.expansion  # 512 * 4 = 2048
        self.fc = nnx.Linear(features, num_classes, kernel_init=nnx.initializers.glorot_uniform(),
                             dtype=dtype, rngs=rngs)

    def __call__(self, x):  # x: (N, S, S, 3)
        x = nnx.relu(self.bn1(self.conv1(x)))
        x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))  # pads with -inf, as PyTorch
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in stage:
                x = block(x)  # after layer4: (N, S/32, S/32, 2048)
        return self.fc(x.mean(axis=(1, 2)))


def build(spec, options):
    model = ResNet50(spec.arch, spec.num_classes, dtype=compute_dtype(options), rngs=nnx.Rngs(options.seed))
    return JaxTrainer(model, spec, options, weight_map(spec))
