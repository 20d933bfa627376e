"""Canonical weights (PyTorch's layouts) to and from Keras 3 layers, layer by layer.

Keras kernels are (kh, kw, in, out) and dense kernels (in, out); Keras' GRU stacks its gates
(update, reset, new) where the canonical file stacks (reset, update, new), and keeps its two
biases as the rows of one (2, 3H) matrix. A dense layer fed by a Flatten of a channels-last map
reads its rows in H,W,C order; the canonical file's are in C,H,W order. MultiHeadAttention keeps
q, k, v as three (width, heads, head_width) kernels and its output projection as (heads,
head_width, width); the canonical file packs q, k, v as the rows of one (3*width, width) matrix.
"""
from __future__ import annotations

import keras
import numpy as np


def _conv_to_canonical(k):  # (kh, kw, in, out) -> (out, in, kh, kw)
    return k.transpose(3, 2, 0, 1)


def _conv_to_keras(w):
    return w.transpose(2, 3, 1, 0)


def _gates_keras_to_canonical(m):  # columns stacked (update, reset, new) -> (reset, update, new)
    z, r, n = np.split(m, 3, axis=-1)
    return np.concatenate([r, z, n], axis=-1)


def _gates_canonical_to_keras(m):
    r, z, n = np.split(m, 3, axis=-1)
    return np.concatenate([z, r, n], axis=-1)


def _chw_rows(kernel, chw):  # dense kernel rows in H,W,C order (channels_last flatten) -> C,H,W
    c, h, w = chw
    return kernel.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(c * h * w, -1)


def _hwc_rows(kernel, chw):
    c, h, w = chw
    return kernel.reshape(c, h, w, -1).transpose(1, 2, 0, 3).reshape(c * h * w, -1)


def _heads_to_canonical(kernel):  # (in, heads, head_width) -> (heads*head_width, in): PyTorch's (out, in)
    return kernel.reshape(kernel.shape[0], -1).T


def _attention_parts(layer):
    """MultiHeadAttention's q, k, v projections (EinsumDense layers), in the canonical order."""
    return layer.query_dense, layer.key_dense, layer.value_dense


def canonical_prefix(layer, prefixes: dict | None = None) -> str:
    # Layers are named by their canonical key prefix with "." written "_" (the torch backend
    # refuses dots in names): "layer1_0_downsample_0" holds "layer1.0.downsample.0.weight".
    # `prefixes` names the exceptions whose canonical prefix has an underscore of its own ("tok_emb").
    return (prefixes or {}).get(layer.name) or layer.name.replace("_", ".")


def layer_variables(layer, prefix: str) -> dict[str, list]:
    """Canonical key -> the Keras variables that hold it (several for a packed q, k, v tensor):
    what AdamW's decay groups are made of."""
    if isinstance(layer, keras.layers.MultiHeadAttention):
        parts, out = _attention_parts(layer), layer.output_dense
        return {f"{prefix}.qkv.weight": [p.kernel for p in parts], f"{prefix}.qkv.bias": [p.bias for p in parts],
                f"{prefix}.proj.weight": [out.kernel], f"{prefix}.proj.bias": [out.bias]}
    if isinstance(layer, keras.layers.LayerNormalization):
        return {f"{prefix}.weight": [layer.gamma], f"{prefix}.bias": [layer.beta]}
    if isinstance(layer, keras.layers.Embedding):
        return {f"{prefix}.weight": [layer.embeddings]}
    if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D)):
        return {f"{prefix}.weight": [layer.kernel]} | ({f"{prefix}.bias": [layer.bias]} if layer.use_bias else {})
    assert not layer.trainable_weights, f"no canonical variables for layer {prefix} ({type(layer).__name__})"
    return {}


def layer_weights(layer, flattened: dict, prefix: str | None = None) -> dict[str, np.ndarray]:
    """One layer's canonical tensors."""
    n, get = prefix or canonical_prefix(layer), keras.ops.convert_to_numpy
    if isinstance(layer, keras.layers.Conv2D):
        out = {f"{n}.weight": _conv_to_canonical(get(layer.kernel))}
        return out | ({f"{n}.bias": get(layer.bias)} if layer.use_bias else {})
    if isinstance(layer, keras.layers.Dense):
        kernel = get(layer.kernel)  # (in, out)
        if n in flattened:
            kernel = _chw_rows(kernel, flattened[n])
        return {f"{n}.weight": kernel.T, f"{n}.bias": get(layer.bias)}
    if isinstance(layer, keras.layers.BatchNormalization):
        return {f"{n}.weight": get(layer.gamma), f"{n}.bias": get(layer.beta),
                f"{n}.running_mean": get(layer.moving_mean), f"{n}.running_var": get(layer.moving_variance)}
    if isinstance(layer, keras.layers.Embedding):
        return {f"{n}.weight": get(layer.embeddings)}
    if isinstance(layer, keras.layers.LayerNormalization):
        return {f"{n}.weight": get(layer.gamma), f"{n}.bias": get(layer.beta)}
    if isinstance(layer, keras.layers.MultiHeadAttention):
        parts, out = _attention_parts(layer), layer.output_dense
        kernel = get(out.kernel)  # (heads, head_width, width): rows of PyTorch's (width, width) input axis
        return {f"{n}.qkv.weight": np.concatenate([_heads_to_canonical(get(p.kernel)) for p in parts]),
                f"{n}.qkv.bias": np.concatenate([get(p.bias).reshape(-1) for p in parts]),
                f"{n}.proj.weight": kernel.reshape(-1, kernel.shape[-1]).T, f"{n}.proj.bias": get(out.bias)}
    if isinstance(layer, keras.layers.GRU):
        cell = layer.cell  # kernel (in, 3H), recurrent_kernel (H, 3H), bias (2, 3H) = [input; recurrent]
        bias = _gates_keras_to_canonical(get(cell.bias))
        return {f"{n}.weight_ih": _gates_keras_to_canonical(get(cell.kernel)).T,
                f"{n}.weight_hh": _gates_keras_to_canonical(get(cell.recurrent_kernel)).T,
                f"{n}.bias_ih": bias[0], f"{n}.bias_hh": bias[1]}
    assert not layer.weights, f"no canonical mapping for layer {n} ({type(layer).__name__})"
    return {}


def load_layer(layer, w: dict, flattened: dict, prefix: str | None = None) -> None:
    n = prefix or canonical_prefix(layer)
    if isinstance(layer, keras.layers.Conv2D):
        layer.kernel.assign(_conv_to_keras(w[f"{n}.weight"]))
        if layer.use_bias:
            layer.bias.assign(w[f"{n}.bias"])
    elif isinstance(layer, keras.layers.Dense):
        kernel = w[f"{n}.weight"].T
        layer.kernel.assign(_hwc_rows(kernel, flattened[n]) if n in flattened else kernel)
        layer.bias.assign(w[f"{n}.bias"])
    elif isinstance(layer, keras.layers.BatchNormalization):
        layer.gamma.assign(w[f"{n}.weight"])
        layer.beta.assign(w[f"{n}.bias"])
        layer.moving_mean.assign(w[f"{n}.running_mean"])
        layer.moving_variance.assign(w[f"{n}.running_var"])
    elif isinstance(layer, keras.layers.Embedding):
        layer.embeddings.assign(w[f"{n}.weight"])
    elif isinstance(layer, keras.layers.LayerNormalization):
        layer.gamma.assign(w[f"{n}.weight"])
        layer.beta.assign(w[f"{n}.bias"])
    elif isinstance(layer, keras.layers.MultiHeadAttention):
        parts, out = _attention_parts(layer), layer.output_dense
        for p, weight, bias in zip(parts, np.split(w[f"{n}.qkv.weight"], 3), np.split(w[f"{n}.qkv.bias"], 3)):
            p.kernel.assign(weight.T.reshape(p.kernel.shape))  # (C, C) rows head after head -> (C, heads, head_width)
            p.bias.assign(bias.reshape(p.bias.shape))
        out.kernel.assign(w[f"{n}.proj.weight"].T.reshape(out.kernel.shape))
        out.bias.assign(w[f"{n}.proj.bias"])
    elif isinstance(layer, keras.layers.GRU):
        cell = layer.cell
        cell.kernel.assign(_gates_canonical_to_keras(w[f"{n}.weight_ih"].T))
        cell.recurrent_kernel.assign(_gates_canonical_to_keras(w[f"{n}.weight_hh"].T))
        cell.bias.assign(_gates_canonical_to_keras(np.stack([w[f"{n}.bias_ih"], w[f"{n}.bias_hh"]])))
