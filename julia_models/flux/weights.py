"""Flux's weights <-> the canonical ones (harness.specs: PyTorch layouts), beside the Flux models.

Flux 0.16 holds every canonical tensor as one array with the same indices as PyTorch, except:
  * convolution kernels: Conv is a true convolution over WHCN, so (out, in, kh, kw) becomes the
    flipped (kw, kh, in, out) (handoff.conv_to_julia);
  * embedding tables: Embedding keeps one column per id, (embed, vocab) (the RNN's embedding, the
    transformer's token and position tables);
  * the transformer's attention: Flux.MultiHeadAttention keeps q, k, v as three Dense layers
    (q_proj, k_proj, v_proj), so the canonical packed (3C, C) qkv matrix and (3C,) bias are cut
    into three row blocks, q then k then v; its output Dense is out_proj (canonical attn.proj).
Dense layers are (out, in) in both; a flattened WHCN map is in w, h, c order, PyTorch's C,H,W
flatten order, so fc1 needs no permutation. BatchNorm's γ, β, μ, σ² and the cuDNN-form GRU
(rnn.jl: Wi, Wh, bi, bh stacked (r, z, n)) are kept as PyTorch keeps them. The transformer's
output projection is the token embedding itself (tied): no weight of its own.
"""
from __future__ import annotations

from julia_models import handoff
from julia_models.handoff import Entry

TABLES = ("embedding.weight", "tok_emb.weight", "pos_emb.weight")  # (vocab, embed) -> (embed, vocab)
QKV = ("q_proj", "k_proj", "v_proj")  # MultiHeadAttention's fields, in the canonical packing's order


def plan(spec) -> list[Entry]:
    out = []
    for key, shape in spec.weight_shapes().items():
        prefix, leaf = key.rsplit(".", 1)
        if len(shape) == 4:
            out.append(handoff.conv(key, shape))
        elif key in TABLES:
            out.append(handoff.transposed(key, shape))
        elif prefix.endswith(".attn.qkv"):
            attn = prefix.rsplit(".", 1)[0]
            out.append(handoff.split_rows(tuple(f"{attn}.{p}.{leaf}" for p in QKV), key, shape))
        elif prefix.endswith(".attn.proj"):
            out.append(handoff.renamed(f"{prefix.rsplit('.', 1)[0]}.out_proj.{leaf}", key, shape))
        else:
            out.append(handoff.same(key, shape))
    return out


native_shapes, to_julia, from_julia = handoff.mapping(plan)
