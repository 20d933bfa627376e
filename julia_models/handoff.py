"""The Python side of the hand-off to Julia: every layout and index change between the harness and Julia.

Julia is column-major and 1-based. juliacall hands numpy memory to Julia without copying, and a
Julia array sees that memory with its dimensions reversed: the C-order (N, 3, 32, 32) images ARE
a column-major (32, 32, 3, N) array, Flux's and Knet's WHCN order. So the images need no copy:
their transposed view is what Julia gets. This module is the one place that

  * reverses dimensions (images, token matrices, epoch plans, logits),
  * shifts labels, token ids and batch indices from 0-based to 1-based (OFFSET; DLRosetta.jl's
    OFFSET takes it off again for the data digest),
  * gives every array the canonical column-major strides Julia's DLRosetta.host_array expects,
  * and holds the machinery each framework's weight mapping (flux/weights.py, knet/weights.py)
    is written in: a plan of Entry rows, canonical (PyTorch layouts) <-> what the Julia model holds.

Every array handed to Julia is Fortran-contiguous with exactly the shape Julia will see, and a
read-only source (the harness's memory-mapped data) stays read-only.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

OFFSET = 1  # Julia's first index


# --------------------------------------------------------------------------- data
def fortran_view(a: np.ndarray) -> np.ndarray:
    """`a` (Fortran-contiguous) as a view with canonical column-major strides, same memory.

    numpy calls an array contiguous whatever the stride of a size-1 axis (x[None] gives that axis
    stride 0); Julia's strides are taken literally, so they are made canonical here. A read-only
    source gives a read-only view."""
    if not a.flags.f_contiguous:
        raise ValueError(f"expected a Fortran-contiguous array, got strides {a.strides} for shape {a.shape}")
    canonical = np.cumprod((a.itemsize,) + a.shape[:-1]).tolist() if a.ndim else []
    if list(a.strides) == canonical:
        return a
    view = np.lib.stride_tricks.as_strided(a, shape=a.shape, strides=canonical, writeable=a.flags.writeable)
    return view


def images(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) C-order -> the (W, H, C, N) column-major view Julia sees (no copy)."""
    return fortran_view(np.ascontiguousarray(x).T)


def tokens(x: np.ndarray) -> np.ndarray:
    """(N, T) token ids, 0 = padding -> (T, N) column-major 1-based ids (embedding column id+1)."""
    return fortran_view((np.asarray(x, dtype=np.int64) + OFFSET).T)


def inputs(x: np.ndarray, spec) -> np.ndarray:
    """The model's inputs as Julia takes them: WHCN images, or (T, N) 1-based token ids."""
    return images(x) if len(spec.input_shape) == 3 else tokens(x)


def labels(y: np.ndarray) -> np.ndarray:
    """Class labels 0..K-1 -> 1..K (Flux's onehotbatch(y, 1:K), Knet's nll); a next-token model's
    (N, T) targets -> the (T, N) column-major view, 1-based, one column per window (like tokens)."""
    return fortran_view((np.asarray(y, dtype=np.int64) + OFFSET).T)


def epoch_plan(index: np.ndarray) -> np.ndarray:
    """(steps, B) 0-based rows of the harness's plan -> (B, steps) 1-based: column j is step j."""
    return fortran_view((np.asarray(index, dtype=np.int64) + OFFSET).T)


def logits(a) -> np.ndarray:
    """Julia's (classes, N) logits -> (N, classes) float32, C-order; a next-token model's
    (vocab, T, N) -> (N, T, vocab)."""
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32).T)


def harness_bytes(held: np.ndarray) -> bytes:
    """What Julia's DLRosetta.data_digest hashes, computed in numpy: the array Julia holds, in
    memory (column-major) order, integers shifted back to 0-based. Equal to the harness's bytes
    exactly when the hand-off kept every value and its order."""
    a = np.asarray(held)
    if a.dtype.kind in "iu":
        a = a.astype(np.int64) - OFFSET
    return a.tobytes(order="F")


# --------------------------------------------------------------------------- weights
@dataclass(frozen=True)
class Entry:
    """One array the Julia model holds, and the canonical weights it holds; or several Julia
    arrays that together hold canonical weights (`native` and `shape` tuples of keys and shapes,
    e.g. Flux's q, k, v projections holding the canonical packed qkv matrix)."""

    native: str | tuple[str, ...]  # the Julia model's key (or keys)
    keys: tuple[str, ...]  # the canonical keys (harness.specs) it holds, in order
    pack: Callable  # canonical arrays -> the Julia array (Fortran order, float32, `shape`), or a tuple of them
    unpack: Callable  # the Julia array(s) -> the canonical arrays (C order)
    shape: tuple  # the shape Julia holds it in, or a tuple of shapes (one per native key)

    def parts(self) -> list[tuple[str, tuple[int, ...]]]:
        """(native key, shape) of every Julia array of this entry."""
        if isinstance(self.native, str):
            return [(self.native, tuple(self.shape))]
        return [(n, tuple(s)) for n, s in zip(self.native, self.shape)]


def fortran32(a) -> np.ndarray:
    return np.asfortranarray(a, dtype=np.float32)


def c32(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def same(key: str, shape) -> Entry:
    """Dense (out, in), vectors: the same indices in PyTorch and Julia."""
    return Entry(key, (key,), fortran32, lambda a: (c32(a),), tuple(shape))


def transposed(key: str, shape) -> Entry:
    """A matrix Julia keeps transposed, e.g. the embedding table (embed, vocab): one column per id."""
    return Entry(key, (key,), lambda w: fortran32(np.asarray(w).T), lambda a: (c32(np.asarray(a).T),),
                 tuple(shape)[::-1])


def renamed(native: str, key: str, shape) -> Entry:
    """A tensor with the same indices, under another name in the Julia model (e.g. Flux's out_proj)."""
    return Entry(native, (key,), fortran32, lambda a: (c32(a),), tuple(shape))


def split_rows(natives: tuple[str, ...], key: str, shape) -> Entry:
    """One canonical tensor whose rows the Julia model keeps as len(natives) equal arrays, in order
    (a packed (3C, C) q, k, v matrix or (3C,) bias as three (C, C) or (C,) ones)."""
    n = len(natives)
    part = (shape[0] // n, *shape[1:])
    return Entry(tuple(natives), (key,), lambda w: tuple(fortran32(p) for p in np.split(np.asarray(w), n)),
                 lambda *a: (c32(np.concatenate([np.asarray(x) for x in a])),), (part,) * n)


def conv_to_julia(w) -> np.ndarray:
    """(out, in, kh, kw) cross-correlation kernel -> (kw, kh, in, out) true-convolution kernel.

    Flux's Conv and Knet's conv4 (mode=0) are true convolutions, NNlib's default, while PyTorch's
    are cross-correlations: the kernel is flipped in both spatial axes."""
    return fortran32(np.asarray(w)[:, :, ::-1, ::-1].T)


def conv_from_julia(a) -> np.ndarray:
    return c32(np.asarray(a).T[:, :, ::-1, ::-1])


def conv(key: str, shape) -> Entry:
    return Entry(key, (key,), conv_to_julia, lambda a: (conv_from_julia(a),), tuple(shape)[::-1])


def batchnorm_prefixes(shapes: dict) -> list[str]:
    """The BatchNorm layers of a weight table: prefixes that have running statistics."""
    return [k.rsplit(".", 1)[0] for k in shapes if k.endswith(".running_mean")]


def mapping(plan: Callable) -> tuple[Callable, Callable, Callable]:
    """A framework's weight mapping from its plan(spec) -> [Entry]: (native_shapes, to_julia, from_julia)."""

    def native_shapes(spec) -> dict[str, tuple[int, ...]]:
        """The Julia model's weight keys and the shapes Julia holds them in."""
        return {key: shape for e in plan(spec) for key, shape in e.parts()}

    def to_julia(spec, weights: dict) -> dict[str, np.ndarray]:
        """Canonical weights -> {native key: Fortran-ordered float32 array in Julia's shape}."""
        missing = set(spec.weight_shapes()) - set(weights)
        if missing:
            raise KeyError(f"canonical weights lack {sorted(missing)[:5]}")
        out = {}
        for e in plan(spec):
            packed = e.pack(*(weights[k] for k in e.keys))
            out.update(zip([key for key, _ in e.parts()], [packed] if isinstance(e.native, str) else packed))
        return out

    def from_julia(spec, native: dict) -> dict[str, np.ndarray]:
        """{native key: array in Julia's shape} -> canonical weights (PyTorch layouts, C order)."""
        out = {}
        for e in plan(spec):
            arrays = []
            for key, shape in e.parts():
                a = np.asarray(native[key])
                if a.shape != shape:
                    raise ValueError(f"weight {key!r} has shape {a.shape}; expected {shape}")
                arrays.append(a)
            out.update(zip(e.keys, e.unpack(*arrays)))
        return {k: out[k] for k in spec.weight_shapes()}

    return native_shapes, to_julia, from_julia
