"""The CIFAR-10 CNN in JAX/Flax NNX (spec: harness.specs.CNN), channels-last."""
from __future__ import annotations

import math
from functools import partial

from flax import nnx

from harness.specs import CNNArch
from python_models.jax.trainer import JaxTrainer, compute_dtype, weight_map

# Glorot-uniform with fan_in = in*kh*kw, fan_out = out*kh*kw: Flax reads a (kh, kw, in, out)
# kernel's receptive field from its leading axes, as PyTorch's xavier_uniform_ does.
GLOROT = nnx.initializers.glorot_uniform()


def fc1_layout(arch: CNNArch):
    """fc1 reads the flattened (8, 8, 100) NHWC map, i.e. rows in H,W,C order; the canonical weight's
    columns are in C,H,W order. Permuting the kernel's rows once is free; transposing every batch is not."""
    (c, h, w), d = arch.flat, arch.dense
    return (lambda a: a.reshape(d, c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, d),  # (512, C*H*W) -> (H*W*C, 512)
            lambda k: k.reshape(h, w, c, d).transpose(3, 2, 0, 1).reshape(d, c * h * w))


class CNN(nnx.Module):
    def __init__(self, arch: CNNArch, num_classes: int, dropout: bool = True, *, dtype, rngs: nnx.Rngs):
        conv = partial(nnx.Conv, kernel_size=(3, 3), padding=((1, 1), (1, 1)), kernel_init=GLOROT,
                       dtype=dtype, rngs=rngs)  # biases: Flax's default zeros
        dense = partial(nnx.Linear, kernel_init=GLOROT, dtype=dtype, rngs=rngs)
        c1, c2, c3, c4 = arch.channels  # 50, 50, 100, 100
        self.conv1, self.conv2 = conv(3, c1), conv(c1, c2)
        self.conv3, self.conv4 = conv(c2, c3), conv(c3, c4)
        self.fc1 = dense(math.prod(arch.flat), arch.dense)  # 100*8*8 = 6400 -> 512
        self.fc2 = dense(arch.dense, num_classes)
        rates = arch.dropout if dropout else (0.0, 0.0, 0.0)
        self.drop1, self.drop2, self.drop3 = (nnx.Dropout(p, rngs=rngs) for p in rates)

    def __call__(self, x):  # x: (N, 32, 32, 3)
        pool = partial(nnx.max_pool, window_shape=(2, 2), strides=(2, 2))
        x = nnx.relu(self.conv1(x))
        x = self.drop1(nnx.relu(pool(self.conv2(x))))  # (N, 16, 16, 50)
        x = nnx.relu(self.conv3(x))
        x = self.drop2(nnx.relu(pool(self.conv4(x))))  # (N, 8, 8, 100)
        x = x.reshape(x.shape[0], -1)  # (N, 6400) in H,W,C order: see fc1_layout
        x = self.drop3(nnx.relu(self.fc1(x)))
        return self.fc2(x)


def build(spec, options):
    model = CNN(spec.arch, spec.num_classes, options.dropout, dtype=compute_dtype(options), rngs=nnx.Rngs(options.seed))
    return JaxTrainer(model, spec, options, weight_map(spec, {"fc1.weight": ("fc1.kernel", fc1_layout(spec.arch))}))
