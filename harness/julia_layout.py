"""The Python side of the Julia bridge: every layout and index change between the harness and Julia.

Julia is column-major and 1-based. juliacall hands numpy memory to Julia without copying, and a
Julia array sees that memory with its dimensions reversed: the C-order (N, 3, 32, 32) images ARE
a column-major (32, 32, 3, N) array, Flux's and Knet's WHCN order. So the images need no copy:
their `.T` view is what Julia gets. This module is the one place that

  * reverses dimensions (images, token matrices, epoch plans, logits),
  * shifts labels, token ids and batch indices from 0-based to 1-based (OFFSET),
  * converts the canonical weights (harness.specs, PyTorch layouts) to the arrays the Julia
    models hold ("native" keys and shapes, for Flux and for Knet), and back.

Every array handed to Julia is Fortran-contiguous with exactly the shape Julia will see.
Convolutions: Flux's Conv and Knet's conv4 (mode=0) are true convolutions, NNlib's default,
while PyTorch's are cross-correlations; a kernel (out, in, kh, kw) becomes the flipped kernel
(kw, kh, in, out) in Julia. A flattened WHCN feature map is in w, h, c order (w fastest), the
same order as PyTorch's C,H,W flatten, so dense layers need no permutation: (out, in) in both.
"""
from __future__ import annotations

import numpy as np

OFFSET = 1  # Julia's first index
FRAMEWORKS = ("flux", "knet")


# --------------------------------------------------------------------------- data
def images(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) C-order -> the (W, H, C, N) column-major view Julia sees (no copy)."""
    return np.ascontiguousarray(x).T


def tokens(x: np.ndarray) -> np.ndarray:
    """(N, T) token ids, 0 = padding -> (T, N) column-major 1-based ids (embedding column id+1)."""
    return (np.asarray(x, dtype=np.int64) + OFFSET).T


def inputs(x: np.ndarray, spec) -> np.ndarray:
    """The model's inputs as Julia takes them: WHCN images, or (T, N) 1-based token ids."""
    return images(x) if len(spec.input_shape) == 3 else tokens(x)


def labels(y: np.ndarray) -> np.ndarray:
    """Class labels 0..K-1 -> 1..K (Flux's onehotbatch(y, 1:K), Knet's nll)."""
    return np.asarray(y, dtype=np.int64) + OFFSET


def epoch_plan(index: np.ndarray) -> np.ndarray:
    """(steps, B) 0-based rows of the harness's plan -> (B, steps) 1-based: column j is step j."""
    return (np.asarray(index, dtype=np.int64) + OFFSET).T


def logits(a) -> np.ndarray:
    """Julia's (classes, N) logits -> (N, classes) float32, C-order."""
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32).T)


def raw(x: np.ndarray) -> np.ndarray:
    """The bytes the harness handed over, C order, as a flat view (a copy only if x is strided)."""
    return np.ascontiguousarray(x).reshape(-1)


# --------------------------------------------------------------------------- weights
def _fortran(a) -> np.ndarray:
    return np.asfortranarray(a, dtype=np.float32)


def _c(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def conv_to_julia(w):
    """(out, in, kh, kw) cross-correlation kernel -> (kw, kh, in, out) true-convolution kernel."""
    return _fortran(np.asarray(w)[:, :, ::-1, ::-1].T)


def conv_from_julia(a):
    return _c(np.asarray(a).T[:, :, ::-1, ::-1])


def _same(a):
    return _fortran(a)


def _same_back(a):
    return _c(a)


def _transposed(a):
    return _fortran(np.asarray(a).T)


def _transposed_back(a):
    return _c(np.asarray(a).T)


def _channel4(c: int):
    """Knet keeps per-channel vectors as (1, 1, C, 1) arrays that broadcast over WHCN."""
    return (lambda v: _fortran(np.asarray(v).reshape(1, 1, c, 1)),
            lambda a: _c(np.asarray(a).reshape(c)))


def _plan(framework: str, spec):
    """[(native key, canonical keys, to_julia(*arrays), from_julia(array) -> arrays, native shape)]."""
    if framework not in FRAMEWORKS:
        raise ValueError(f"unknown Julia framework {framework!r}; choices: {', '.join(FRAMEWORKS)}")
    shapes = spec.weight_shapes()
    plan, done = [], set()
    for key, shape in shapes.items():
        if key in done:
            continue
        prefix, leaf = key.rsplit(".", 1)
        is_bn = f"{prefix}.running_mean" in shapes
        if framework == "knet" and is_bn:
            c = shape[0]
            to4, from4 = _channel4(c)
            plan.append((f"{prefix}.params", (f"{prefix}.weight", f"{prefix}.bias"),
                         lambda g, b: _fortran(np.concatenate([g, b])),   # bnparams: [γ; β]
                         lambda a, c=c: (_c(a[:c]), _c(a[c:])), (2 * c,)))
            for stat in ("running_mean", "running_var"):
                plan.append((f"{prefix}.{stat}", (f"{prefix}.{stat}",), to4, lambda a, f=from4: (f(a),), (1, 1, c, 1)))
            done.update(f"{prefix}.{s}" for s in ("weight", "bias", "running_mean", "running_var"))
        elif framework == "knet" and prefix == "gru":
            names = tuple(f"gru.{k}" for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
            sizes = [int(np.prod(shapes[k])) for k in names]
            plan.append(("gru.w", names, _knet_gru_pack,
                         lambda a, sizes=sizes, names=names: _knet_gru_unpack(a, sizes, [shapes[k] for k in names]),
                         (1, 1, sum(sizes))))
            done.update(names)
        elif len(shape) == 4:
            plan.append((key, (key,), conv_to_julia, lambda a: (conv_from_julia(a),), shape[::-1]))
        elif key == "embedding.weight":
            plan.append((key, (key,), _transposed, lambda a: (_transposed_back(a),), shape[::-1]))
        elif framework == "knet" and leaf == "bias" and len(shapes.get(f"{prefix}.weight", ())) == 4:
            to4, from4 = _channel4(shape[0])
            plan.append((key, (key,), to4, lambda a, f=from4: (f(a),), (1, 1, shape[0], 1)))
        else:  # dense (out, in), vectors, Flux's BatchNorm and GRU arrays: same indices in both
            plan.append((key, (key,), _same, lambda a: (_same_back(a),), shape))
    return plan


def _knet_gru_pack(w_ih, w_hh, b_ih, b_hh):
    """cuDNN's flat GRU weights as Knet's RNN holds them, (1, 1, n).

    Knet's rnnparam(r, 1, id, 1) views the input matrix of gate id (reset, update, new) as an
    (in, H) column-major block: that is the gate's (H, in) block of weight_ih in row-major order.
    The hidden matrices follow, then the biases: bW for the three gates, then bR."""
    flat = np.concatenate([np.asarray(w_ih).ravel(), np.asarray(w_hh).ravel(), b_ih, b_hh])
    return _fortran(flat.reshape(1, 1, -1))


def _knet_gru_unpack(a, sizes, shapes):
    flat = np.asarray(a, dtype=np.float32).reshape(-1)
    out, start = [], 0
    for size, shape in zip(sizes, shapes):
        out.append(_c(flat[start:start + size].reshape(shape)))
        start += size
    return tuple(out)


def native_shapes(framework: str, spec) -> dict[str, tuple[int, ...]]:
    """The Julia model's weight keys and the shapes Julia holds them in."""
    return {native: tuple(shape) for native, _, _, _, shape in _plan(framework, spec)}


def to_julia(framework: str, spec, weights: dict) -> dict[str, np.ndarray]:
    """Canonical weights -> {native key: Fortran-ordered float32 array in Julia's shape}."""
    missing = set(spec.weight_shapes()) - set(weights)
    if missing:
        raise KeyError(f"canonical weights lack {sorted(missing)[:5]}")
    return {native: pack(*(weights[k] for k in keys)) for native, keys, pack, _, _ in _plan(framework, spec)}


def from_julia(framework: str, spec, native: dict) -> dict[str, np.ndarray]:
    """{native key: array in Julia's shape} -> canonical weights (PyTorch layouts, C order)."""
    out = {}
    for key, keys, _, unpack, shape in _plan(framework, spec):
        a = np.asarray(native[key])
        if a.shape != tuple(shape):
            raise ValueError(f"{framework} weight {key!r} has shape {a.shape}; expected {tuple(shape)}")
        out.update(zip(keys, unpack(a)))
    return {k: out[k] for k in spec.weight_shapes()}
