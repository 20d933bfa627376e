"""Flux's weights <-> the canonical ones (harness.specs: PyTorch layouts), beside the Flux models.

Flux 0.16 holds every canonical tensor as one array with the same indices as PyTorch, except:
  * convolution kernels: Conv is a true convolution over WHCN, so (out, in, kh, kw) becomes the
    flipped (kw, kh, in, out) (handoff.conv_to_julia);
  * the embedding table: Embedding keeps one column per id, (embed, vocab).
Dense layers are (out, in) in both; a flattened WHCN map is in w, h, c order, PyTorch's C,H,W
flatten order, so fc1 needs no permutation. BatchNorm's γ, β, μ, σ² and the cuDNN-form GRU
(rnn.jl: Wi, Wh, bi, bh stacked (r, z, n)) are kept as PyTorch keeps them.
"""
from __future__ import annotations

from julia_models import handoff
from julia_models.handoff import Entry


def plan(spec) -> list[Entry]:
    out = []
    for key, shape in spec.weight_shapes().items():
        if len(shape) == 4:
            out.append(handoff.conv(key, shape))
        elif key == "embedding.weight":
            out.append(handoff.transposed(key, shape))
        else:
            out.append(handoff.same(key, shape))
    return out


native_shapes, to_julia, from_julia = handoff.mapping(plan)
