"""The IMDB GRU sentiment model in PyTensor (spec: harness.specs.RNN), the recurrence a `scan`."""
from __future__ import annotations

from functools import partial

import numpy as np
import pytensor
import pytensor.tensor as pt

from harness.specs import GRUArch
from python_models.pytensor.trainer import PytensorTrainer, glorot_uniform, orthogonal


def gru_step(xp, h, w_hh, b_hh, H: int):
    """One step of the reset-after GRU. xp: (N, 3H) input projection, gates (reset, update, new); h: (N, H)."""
    hp = pt.dot(h, w_hh.T) + b_hh  # (N, 3H); the reset gate scales its "new" third after the matmul
    r = pt.sigmoid(xp[:, :H] + hp[:, :H])
    z = pt.sigmoid(xp[:, H:2 * H] + hp[:, H:2 * H])
    n = pt.tanh(xp[:, 2 * H:] + r * hp[:, 2 * H:])
    return (1 - z) * n + z * h


def forward(g, tokens, arch: GRUArch):
    """tokens: (N, 150) int64 -> (N, 2) logits."""
    p = g.p
    emb = p["embedding.weight"][tokens.T]  # (150, N, 125), time-major for scan
    xp = pt.dot(emb, p["gru.weight_ih"].T) + p["gru.bias_ih"]  # (150, N, 3H): all steps' input projections at once
    h0 = pt.zeros((tokens.type.shape[0], arch.hidden), dtype="float32")
    hs, _ = pytensor.scan(partial(gru_step, H=arch.hidden), sequences=xp, outputs_info=h0,
                          non_sequences=[p["gru.weight_hh"], p["gru.bias_hh"]], strict=True)
    return pt.dot(hs[-1], p["fc.weight"].T) + p["fc.bias"]  # the last step's output


def initial_weights(spec, rng):
    shapes = spec.weight_shapes()
    init = {k: np.zeros(s) for k, s in shapes.items()}  # biases
    init["embedding.weight"] = rng.uniform(-0.05, 0.05, shapes["embedding.weight"])
    init["gru.weight_ih"] = glorot_uniform(rng, shapes["gru.weight_ih"])  # over the stacked (300, 125) matrix
    init["gru.weight_hh"] = orthogonal(rng, shapes["gru.weight_hh"])  # over the stacked (300, 100) matrix
    init["fc.weight"] = glorot_uniform(rng, shapes["fc.weight"])
    return init


def build(spec, options):
    init = initial_weights(spec, np.random.default_rng(options.seed))
    return PytensorTrainer(spec, options, partial(forward, arch=spec.arch), init)
