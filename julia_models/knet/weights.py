"""Knet's weights <-> the canonical ones (harness.specs: PyTorch layouts), beside the Knet models.

Knet 1.4.10 holds
  * convolution kernels flipped, (kw, kh, in, out): conv4 (mode=0) is a true convolution;
  * per-channel vectors that broadcast over WHCN as (1, 1, C, 1): convolution biases and
    BatchNorm's running statistics (a BNMoments' mean and var);
  * a BatchNorm's γ and β in one Param of length 2C, [γ; β] (bnparams);
  * the GRU (Knet.RNN, rnnType=:gru) as cuDNN's flat weights, one (1, 1, n) Param;
  * embedding tables as (embed, vocab), one column per id (the RNN's embedding, the transformer's
    token and position tables); dense layers as (out, in), the transformer's packed q, k, v
    matrix (3C, C) and its (3C,) bias included, as PyTorch packs them (transformer.jl slices it);
  * no output projection for the transformer: its logits are the token table's transpose times
    the last LayerNorm's output (tied).
"""
from __future__ import annotations

import numpy as np

from julia_models import handoff
from julia_models.handoff import Entry, c32, fortran32

TABLES = ("embedding.weight", "tok_emb.weight", "pos_emb.weight")  # (vocab, embed) -> (embed, vocab)


def channel4(key: str, c: int) -> Entry:
    """A per-channel vector (C,) kept as a (1, 1, C, 1) array that broadcasts over WHCN."""
    return Entry(key, (key,), lambda v: fortran32(np.asarray(v).reshape(1, 1, c, 1)),
                 lambda a: (c32(np.asarray(a).reshape(c)),), (1, 1, c, 1))


def bnparams(prefix: str, c: int) -> Entry:
    """BatchNorm's scale and shift as Knet's bnparams vector [γ; β] of length 2C."""
    return Entry(f"{prefix}.params", (f"{prefix}.weight", f"{prefix}.bias"),
                 lambda g, b: fortran32(np.concatenate([g, b])),
                 lambda a: (c32(a[:c]), c32(a[c:])), (2 * c,))


def gru_pack(w_ih, w_hh, b_ih, b_hh) -> np.ndarray:
    """cuDNN's flat GRU weights as Knet's RNN holds them, (1, 1, n).

    Knet's rnnparam(r, 1, id, 1) views the input matrix of gate id (reset, update, new) as an
    (in, H) column-major block: that is the gate's (H, in) block of weight_ih in row-major order.
    The hidden matrices follow, then the biases: bW for the three gates, then bR."""
    flat = np.concatenate([np.asarray(w_ih).ravel(), np.asarray(w_hh).ravel(), b_ih, b_hh])
    return fortran32(flat.reshape(1, 1, -1))


def gru(prefix: str, shapes: dict) -> Entry:
    names = tuple(f"{prefix}.{k}" for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    sizes = [int(np.prod(shapes[k])) for k in names]

    def unpack(a):
        flat, out, start = np.asarray(a, dtype=np.float32).reshape(-1), [], 0
        for name, size in zip(names, sizes):
            out.append(c32(flat[start:start + size].reshape(shapes[name])))
            start += size
        return tuple(out)

    return Entry(f"{prefix}.w", names, gru_pack, unpack, (1, 1, sum(sizes)))


def plan(spec) -> list[Entry]:
    shapes = spec.weight_shapes()
    bn = set(handoff.batchnorm_prefixes(shapes))
    out, done = [], set()
    for key, shape in shapes.items():
        if key in done:
            continue
        prefix, leaf = key.rsplit(".", 1)
        if prefix in bn:
            c = shape[0]
            out += [bnparams(prefix, c), channel4(f"{prefix}.running_mean", c), channel4(f"{prefix}.running_var", c)]
            done.update(f"{prefix}.{s}" for s in ("weight", "bias", "running_mean", "running_var"))
        elif prefix == "gru":
            entry = gru(prefix, shapes)
            out.append(entry)
            done.update(entry.keys)
        elif len(shape) == 4:
            out.append(handoff.conv(key, shape))
        elif key in TABLES:
            out.append(handoff.transposed(key, shape))
        elif leaf == "bias" and len(shapes.get(f"{prefix}.weight", ())) == 4:
            out.append(channel4(key, shape[0]))   # a convolution's bias
        else:
            out.append(handoff.same(key, shape))
    return out


native_shapes, to_julia, from_julia = handoff.mapping(plan)
