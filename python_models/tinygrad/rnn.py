"""The IMDB GRU sentiment model in tinygrad (spec: harness.specs.RNN), the recurrence unrolled.

tinygrad has no recurrent layer (nn has an LSTMCell only) and no loop construct: the GRU is
written here, and its 150 steps are unrolled into the graph that TinyJit captures once, as a fixed
sequence of kernels replayed every step.
"""
from __future__ import annotations

import numpy as np
from tinygrad import Context, Tensor, nn

from python_models.tinygrad.trainer import TinygradTrainer, glorot_uniform, linear, start

DEVIATIONS = (
    ("no fused GRU kernel (tinygrad has no recurrent layer): the reset-after GRU is written from tensor ops, "
     "its 150 steps unrolled into the captured TinyJit graph (no loop construct), the input projection of "
     "all steps hoisted into one matmul"),
    ("weight_hh's orthogonal initialisation is drawn with numpy's QR (seeded by --seed): tinygrad has no "
     "orthogonal initialiser"),
)


def orthogonal(rows: int, cols: int, seed: int) -> Tensor:
    """A (rows, cols) matrix with orthonormal columns (rows >= cols), as torch.nn.init.orthogonal_."""
    q, r = np.linalg.qr(np.random.default_rng([seed, 7]).normal(size=(rows, cols)))
    return Tensor((q * np.sign(np.diag(r))).astype(np.float32))


class GRU:
    """One GRU layer, reset-after (cuDNN/PyTorch) form, zero initial state; gates stacked (reset, update, new):
        r = s(W_ir x + b_ir + W_hr h + b_hr);  z = s(W_iz x + b_iz + W_hz h + b_hz)
        n = tanh(W_in x + b_in + r * (W_hn h + b_hn));  h' = (1 - z) * n + z * h
    """

    def __init__(self, cin: int, hidden: int, seed: int):
        self.hidden = hidden
        self.weight_ih = glorot_uniform(3 * hidden, cin)  # Glorot over the stacked matrix: fan_in 125, fan_out 300
        self.weight_hh = orthogonal(3 * hidden, hidden, seed)  # orthonormal columns of the stacked (300, 100)
        self.bias_ih, self.bias_hh = Tensor.zeros(3 * hidden), Tensor.zeros(3 * hidden)

    def __call__(self, x: Tensor) -> Tensor:  # x: (N, T, in) -> the last step's state (N, H)
        # The input projections of all steps in one (N*T, in) x (in, 3H) matmul; only the hidden
        # matmul stays inside the recurrence.
        # .contiguous() marks what the backward pass reads: without it tinygrad fuses the forward
        # recurrence into the backward kernels and recomputes it there (measured: 2.5x slower at 50 steps).
        gx = x.linear(self.weight_ih.T, self.bias_ih).contiguous()  # (N, T, 3H)
        h = Tensor.zeros(x.shape[0], self.hidden)
        for t in range(x.shape[1]):
            xr, xz, xn = gx[:, t].chunk(3, dim=1)
            hr, hz, hn = h.linear(self.weight_hh.T, self.bias_hh).chunk(3, dim=1)
            r, z = (xr + hr).sigmoid().contiguous(), (xz + hz).sigmoid().contiguous()
            n = (xn + r * hn).tanh().contiguous()
            h = ((1 - z) * n + z * h).contiguous()
        return h


class GRUClassifier:
    def __init__(self, arch, num_classes: int, seed: int):
        self.embedding = nn.Embedding(arch.vocab, arch.embed)
        # Row 0 (padding) is an ordinary trained row, as in the spec.
        self.embedding.weight = Tensor.uniform(arch.vocab, arch.embed, low=-0.05, high=0.05)
        self.gru = GRU(arch.embed, arch.hidden, seed)
        self.fc = linear(arch.hidden, num_classes)

    def __call__(self, tokens: Tensor) -> Tensor:  # tokens: (N, 150) int32
        # USE_ATOMICS: the embedding's gradient as one scatter-add kernel; without it tinygrad
        # reduces a one-hot (N*T, 30000) matrix, 36 GFLOP per step.
        with Context(USE_ATOMICS=1):
            x = self.embedding(tokens)  # (N, T, 125)
        return self.fc(self.gru(x))


def build(spec, options):
    start(options)
    return TinygradTrainer(GRUClassifier(spec.arch, spec.num_classes, options.seed), spec, options, DEVIATIONS,
                           {"embedding_backward": "USE_ATOMICS=1: atomic scatter-add (float additions in any order)"})
