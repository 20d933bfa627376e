"""The IMDB GRU sentiment model in JAX/Flax NNX (spec: harness.specs.RNN), the GRU run by jax.lax.scan."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from harness.specs import GRUArch
from python_models.jax.trainer import DENSE, SAME, JaxTrainer, compute_dtype

GLOROT = nnx.initializers.glorot_uniform()


def uniform(low, high):
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, low, high)


class GRU(nnx.Module):
    """One GRU layer in the reset-after (cuDNN/PyTorch) form, zero initial state.

    Flax's nnx.GRUCell also applies r after the hidden matmul but has no hidden-side biases (the
    spec has both bias_ih and bias_hh: 300 more parameters), so the layer is written here. Kernels
    are (in, 3H) / (H, 3H) with gate columns in the canonical order (reset, update, new):
        r = s(x W_ir + b_ir + h W_hr + b_hr);  z = s(x W_iz + b_iz + h W_hz + b_hz)
        n = tanh(x W_in + b_in + r * (h W_hn + b_hn));  h' = (1 - z) * n + z * h
    """

    def __init__(self, cin, hidden, *, dtype, rngs: nnx.Rngs):
        self.hidden, self.dtype = hidden, dtype
        # Glorot over the stacked (in, 3H) matrix; orthogonal over the stacked (H, 3H) matrix
        # (orthonormal rows here = orthonormal columns of PyTorch's (3H, H) weight_hh).
        self.kernel_ih = nnx.Param(GLOROT(rngs.params(), (cin, 3 * hidden)))
        self.kernel_hh = nnx.Param(nnx.initializers.orthogonal()(rngs.params(), (hidden, 3 * hidden)))
        self.bias_ih = nnx.Param(jnp.zeros((3 * hidden,)))
        self.bias_hh = nnx.Param(jnp.zeros((3 * hidden,)))

    def __call__(self, x):  # x: (N, T, in) -> the last step's state (N, H)
        dtype = self.dtype or x.dtype
        w_ih, w_hh = self.kernel_ih[...].astype(dtype), self.kernel_hh[...].astype(dtype)
        b_hh = self.bias_hh[...].astype(dtype)
        # The input projections of all steps in one (N*T, in) x (in, 3H) matmul; only the hidden
        # matmul stays inside the recurrence. Time-major for scan: (T, N, 3H).
        gx = jnp.swapaxes(x.astype(dtype) @ w_ih + self.bias_ih[...].astype(dtype), 0, 1)

        def step(h, gx_t):  # h: (N, H), gx_t: (N, 3H)
            xr, xz, xn = jnp.split(gx_t, 3, axis=-1)
            hr, hz, hn = jnp.split(h @ w_hh + b_hh, 3, axis=-1)
            r, z = jax.nn.sigmoid(xr + hr), jax.nn.sigmoid(xz + hz)
            n = jnp.tanh(xn + r * hn)
            return (1 - z) * n + z * h, None

        h0 = jnp.zeros((x.shape[0], self.hidden), dtype)
        return jax.lax.scan(step, h0, gx)[0]


class GRUClassifier(nnx.Module):
    def __init__(self, arch: GRUArch, num_classes: int, *, dtype, rngs: nnx.Rngs):
        # Row 0 (padding) is an ordinary trained row, as in the spec.
        self.embedding = nnx.Embed(arch.vocab, arch.embed, embedding_init=uniform(-0.05, 0.05), dtype=dtype, rngs=rngs)
        self.gru = GRU(arch.embed, arch.hidden, dtype=dtype, rngs=rngs)
        self.fc = nnx.Linear(arch.hidden, num_classes, kernel_init=GLOROT, dtype=dtype, rngs=rngs)

    def __call__(self, tokens):  # tokens: (N, 150) int32
        return self.fc(self.gru(self.embedding(tokens)))


# Canonical key -> (Flax path, layout). The gate order is already canonical: a transpose suffices.
WEIGHTS = {
    "embedding.weight": ("embedding.embedding", SAME),  # (vocab, dim) in both
    "gru.weight_ih": ("gru.kernel_ih", DENSE),  # (3H, in) <-> (in, 3H)
    "gru.weight_hh": ("gru.kernel_hh", DENSE),  # (3H, H) <-> (H, 3H)
    "gru.bias_ih": ("gru.bias_ih", SAME),
    "gru.bias_hh": ("gru.bias_hh", SAME),
    "fc.weight": ("fc.kernel", DENSE),
    "fc.bias": ("fc.bias", SAME),
}


def build(spec, options):
    model = GRUClassifier(spec.arch, spec.num_classes, dtype=compute_dtype(options), rngs=nnx.Rngs(options.seed))
    return JaxTrainer(model, spec, options, WEIGHTS)
