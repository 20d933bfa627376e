"""The PyTensor side of the harness protocol, shared by the three PyTensor models.

Parameters live in shared variables keyed by their canonical names (PyTorch layouts, so the
weight mapping is the identity); one compiled `pytensor.function` runs a whole training step:
gather the batch from the shared data set, forward, `pytensor.grad`, and the optimiser and
BatchNorm updates. Compilation happens at the first call (the first epoch or the first predict),
as with any graph compiler; PyTensor caches the compiled C code in its compiledir (~/.pytensor).

Images are computed channel-major, (C, N, H, W): PyTensor 2.27 keeps only the abstract
convolution, whose CPU implementation is a Python loop over images and channels (the C CorrMM
ops were dropped with the nnet module: pymc-devs/pytensor#305), so convolution is written here
as in CorrMM, im2col + one GEMM, and in C,N,H,W order that GEMM needs no transpose on either side.
"""
from __future__ import annotations

import os

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.tensor.random.utils import RandomStream

from harness.protocol import Trainer, check_weights
from harness.specs import EVAL_BATCH

pytensor.config.floatX = "float32"  # the harness's images are float32; keep Python constants there too
# The C backend (cvm linker): fused C elemwise loops, GEMMs through NumPy's BLAS. Measured here
# against mode="NUMBA" on the CNN: NUMBA took 3x the CPU time per step and ~70x the compile time;
# the legacy environment (numpy 1.23) has no JAX for mode="JAX".
MODE = "FAST_RUN"


# ----------------------------------------------------------------------------- layers
def relu(x):
    return pt.switch(x > 0, x, 0.0)  # gradient 0 at 0, as PyTorch (maximum(x, 0) passes it at ties)


def pad_hw(x, pad: int):
    """Symmetric zero padding of H and W of (C, N, H, W). Here and below every shape is static."""
    c, n, h, w = x.type.shape
    out = pt.zeros((c, n, h + 2 * pad, w + 2 * pad), dtype=x.dtype)
    return pt.set_subtensor(out[:, :, pad:pad + h, pad:pad + w], x)


def taps(x, k: int, stride: int):
    """The k*k strided views of x (C, N, H, W) under a k x k window: each (C, N, Ho, Wo)."""
    h, w = x.type.shape[2:]
    ho, wo = (h - k) // stride + 1, (w - k) // stride + 1
    return [x[:, :, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
            for i in range(k) for j in range(k)]


def conv2d(x, w, stride: int = 1, pad: int = 0):
    """x: (C, N, H, W), w: (O, C, kh, kw) shared -> (O, N, Ho, Wo); cross-correlation as PyTorch.

    im2col as CorrMM did it: (C*kh*kw, N*Ho*Wo) columns, then one GEMM with the (O, C*kh*kw) kernel."""
    o, c, k, _ = w.type.shape
    x = pad_hw(x, pad) if pad else x
    views = taps(x, k, stride)
    n, (ho, wo) = x.type.shape[1], views[0].type.shape[2:]
    cols = views[0] if k == 1 else pt.stack(views, axis=1)  # (C, k*k, N, Ho, Wo)
    out = pt.dot(w.reshape((o, c * k * k)), cols.reshape((c * k * k, n * ho * wo)))
    return out.reshape((o, n, ho, wo))


def max_pool_2x2(x):
    """2x2 window, stride 2 on (C, N, H, W) with even H, W: a reshape and a max."""
    c, n, h, w = x.type.shape
    return x.reshape((c, n, h // 2, 2, w // 2, 2)).max(axis=(3, 5))


def max_pool_3x3_s2_p1(x):
    """3x3 window, stride 2, padding 1 (ResNet's stem): the max of nine strided views.

    The input follows a ReLU (>= 0), so zero padding gives the same maxima as PyTorch's -inf padding."""
    return pt.stack(taps(pad_hw(x, 1), 3, 2), axis=0).max(axis=0)


class Graph:
    """What differs between the training graph and the eval graph: dropout and BatchNorm."""

    def __init__(self, params: dict, train: bool, seed: int = 0, dropout: bool = True):
        self.p, self.train, self.dropout_on = params, train, dropout
        self.updates: list = []  # BatchNorm running averages, applied with the optimiser step
        self.rng = RandomStream(seed)

    def dropout(self, x, rate: float):
        if not (self.train and self.dropout_on and rate > 0):
            return x
        keep = self.rng.uniform(0.0, 1.0, size=x.type.shape, dtype="float32") >= rate
        return pt.switch(keep, x / (1.0 - rate), 0.0)  # inverted dropout, as PyTorch

    def batch_norm(self, x, key: str, eps: float, momentum: float):
        """x: (C, N, H, W). Train: batch statistics (biased variance) normalise, and the running
        averages take the unbiased variance with `momentum` in PyTorch's convention
        (running = (1 - momentum) * running + momentum * batch)."""
        gamma, beta = self.p[f"{key}.weight"], self.p[f"{key}.bias"]
        mean, var = self.p[f"{key}.running_mean"], self.p[f"{key}.running_var"]
        if self.train:
            bmean = x.mean(axis=(1, 2, 3))
            bvar = pt.sqr(x - bmean[:, None, None, None]).mean(axis=(1, 2, 3))
            count = int(np.prod(x.type.shape[1:]))  # values per channel
            self.updates += [(mean, (1 - momentum) * mean + momentum * bmean),
                             (var, (1 - momentum) * var + momentum * bvar * (count / (count - 1)))]
            mean, var = bmean, bvar
        scale = gamma / pt.sqrt(var + eps)
        return x * scale[:, None, None, None] + (beta - mean * scale)[:, None, None, None]


# ----------------------------------------------------------------------------- initialisers
def glorot_uniform(rng, shape):
    receptive = int(np.prod(shape[2:]))  # 1 for dense layers
    limit = np.sqrt(6.0 / ((shape[0] + shape[1]) * receptive))
    return rng.uniform(-limit, limit, shape)


def he_normal_fan_out(rng, shape):
    return rng.normal(0.0, np.sqrt(2.0 / (shape[0] * int(np.prod(shape[2:])))), shape)


def orthogonal(rng, shape):
    q, r = np.linalg.qr(rng.normal(size=shape))  # (rows, cols) with rows >= cols: orthonormal columns
    return q * np.sign(np.diag(r))


# ----------------------------------------------------------------------------- optimisers
def sgd_momentum(params, grads, opt):
    """PyTorch's form: v = m*v + g; w -= lr*v."""
    updates = []
    for w, g in zip(params, grads):
        v = pytensor.shared(np.zeros_like(w.get_value()), name=f"{w.name}.momentum", shape=w.type.shape)
        v_new = opt.momentum * v + g
        updates += [(v, v_new), (w, w - opt.lr * v_new)]
    return updates


def adam(params, grads, opt, decays=frozenset()):
    """PyTorch's Adam: w -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps). AdamW (opt.name "adamw")
    first decays the tensors named in `decays`, w *= 1 - lr*weight_decay, both terms from the same w
    (decoupled decay)."""
    t = pytensor.shared(np.float32(0), name=f"{opt.name}.step")
    t_new = t + 1
    step_size = opt.lr / (1 - opt.beta1 ** t_new)
    bc2_sqrt = pt.sqrt(1 - opt.beta2 ** t_new)
    updates = [(t, t_new)]
    for w, g in zip(params, grads):
        m = pytensor.shared(np.zeros_like(w.get_value()), name=f"{w.name}.exp_avg", shape=w.type.shape)
        v = pytensor.shared(np.zeros_like(w.get_value()), name=f"{w.name}.exp_avg_sq", shape=w.type.shape)
        m_new = opt.beta1 * m + (1 - opt.beta1) * g
        v_new = opt.beta2 * v + (1 - opt.beta2) * pt.sqr(g)
        kept = 1 - opt.lr * opt.weight_decay if w.name in decays else 1.0
        updates += [(m, m_new), (v, v_new),
                    (w, w * kept - step_size * m_new / (pt.sqrt(v_new) / bc2_sqrt + opt.eps))]
    return updates


OPTIMIZERS = {"sgd": sgd_momentum, "adam": adam, "adamw": adam}


def clip_global_norm(grads, max_norm: float, eps: float):
    """torch.nn.utils.clip_grad_norm_'s form, in the graph: one norm over every gradient, every
    gradient times min(1, max_norm / (norm + eps))."""
    norm = pt.sqrt(pt.add(*[pt.sqr(g).sum() for g in grads]))
    scale = pt.minimum(max_norm / (norm + eps), 1.0)
    return [g * scale for g in grads]


# ----------------------------------------------------------------------------- the trainer
class PytensorTrainer(Trainer):
    """`forward(graph, x) -> logits (N, classes)` builds the model from `graph.p`, the shared
    variables keyed by canonical name; `init` holds their initial values (canonical layouts).

    Each function is compiled for one static batch size (training: the harness's batch; eval:
    up to EVAL_BATCH rows, the last chunk zero-padded), so every shape is a constant to the
    rewriter and the C code (symbolic shapes made ResNet-50's graph rewrite for well over 10 minutes)."""

    def __init__(self, spec, options, forward, init: dict[str, np.ndarray], input_shape=None,
                 mode: str | tuple[str, str] | None = None, compute_layout: str | None = None):
        """`mode`: a predefined mode's name (default MODE) or a (linker, rewrite set) pair;
        `compute_layout`: how the model computes, in words (info["fast_path"])."""
        self.spec, self.options, self.forward = spec, options, forward
        if isinstance(mode, tuple):
            linker, rewrites = mode
            self.mode = pytensor.compile.mode.Mode(linker=linker, optimizer=rewrites)
            mode_name = f"Mode(linker={linker!r}, optimizer={rewrites!r})"
        else:
            self.mode, mode_name = pytensor.compile.mode.get_mode(mode or MODE), mode or MODE
        shapes = spec.weight_shapes()
        self.p = {k: pytensor.shared(np.asarray(init[k], np.float32).reshape(shapes[k]), name=k, shape=shapes[k])
                  for k in shapes}
        self.trainable = [self.p[w.key] for w in spec.weights if w.trainable]
        self.input_shape, self.dtype = tuple(input_shape or spec.input_shape), spec.input_dtype
        self.data_x = pytensor.shared(np.zeros((0, *self.input_shape), self.dtype), name="x_train",
                                      shape=(None, *self.input_shape))
        # class labels (N,) or the transformer's next-byte targets (N, T) (spec.target_shape)
        self.data_y = pytensor.shared(np.zeros((0, *spec.target_shape), np.int64), name="y_train",
                                      shape=(None, *spec.target_shape))
        self._train_fns: dict[int, object] = {}  # batch size -> compiled step
        self._predict_fns: dict[int, object] = {}
        image = len(self.input_shape) == 3
        self.info = {
            "layout": "NCHW",
            "fast_path": {"mode": mode_name, "linker": "cvm (C virtual machine, C thunks)",
                          "compute_layout": compute_layout or ("CNHW" if image else "time-major (scan over 150 steps)"),
                          "conv": "im2col + GEMM written in PyTensor (2.27 has no C convolution op)" if image else None,
                          "blas": pytensor.config.blas__ldflags or "NumPy's BLAS (none found to link the C GEMM)",
                          "static_batch_shapes": True, "data_on_device": True,
                          "compile": "at first call (first epoch / first predict); C code cached in "
                                     + str(pytensor.config.compiledir)},
            "deviations": [],
            # PyTensor's GEMMs call NumPy's OpenBLAS here (no BLAS linked: blas__ldflags is empty),
            # which runs OPENBLAS_NUM_THREADS (or OMP_NUM_THREADS) threads, by default one per core
            "threads": int(os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
                           or os.cpu_count() or 1),
        }

    def param_count(self) -> int:
        return sum(int(w.get_value(borrow=True).size) for w in self.trainable)

    def fit_data(self, x, y) -> None:
        self.data_x.set_value(np.array(x, dtype=self.dtype))  # one copy out of the memory map
        self.data_y.set_value(np.array(y, dtype=np.int64))

    def _compile_train(self, batch: int):
        g = Graph(self.p, train=True, seed=self.options.seed, dropout=self.options.dropout)
        idx = pt.lvector("idx")  # one row of the harness's epoch plan
        rows = pt.specify_shape(idx, (batch,))
        x = pt.specify_shape(self.data_x[rows], (batch, *self.input_shape))  # gathered in the graph
        logits = self.forward(g, x)  # (batch, classes), or (batch, T, vocab) for a next-token model
        count = batch * int(np.prod(self.spec.target_shape))  # predictions: the loss is their mean
        flat = logits.reshape((count, self.spec.num_classes))
        loss = -pt.special.log_softmax(flat, axis=1)[pt.arange(count), self.data_y[rows].reshape((count,))].mean()
        grads = pytensor.grad(loss, self.trainable)
        opt = self.spec.optimizer
        if opt.clip_norm is not None:
            grads = clip_global_norm(grads, opt.clip_norm, opt.clip_eps)
        extra = {"decays": frozenset(w.key for w in self.spec.weights if w.decay)} if opt.name == "adamw" else {}
        updates = OPTIMIZERS[opt.name](self.trainable, grads, opt, **extra) + g.updates
        return pytensor.function([idx], loss, updates=updates, mode=self.mode, name="train_step")

    def train_epoch(self, batches) -> np.ndarray:
        losses = []
        for idx in batches:
            if len(idx) not in self._train_fns:
                self._train_fns[len(idx)] = self._compile_train(len(idx))
            losses.append(self._train_fns[len(idx)](idx))  # returns once the step has run
        return np.array(losses, dtype=np.float32)

    def predict(self, x) -> np.ndarray:
        n = len(x)
        if n == 0:
            return np.zeros((0, self.spec.num_classes), np.float32)
        batch = min(n, EVAL_BATCH)
        if batch not in self._predict_fns:
            xb = pt.tensor("x", dtype=self.dtype, shape=(batch, *self.input_shape))
            self._predict_fns[batch] = pytensor.function([xb], self.forward(Graph(self.p, train=False), xb),
                                                         mode=self.mode, name="predict")
        out = []
        for i in range(0, n, batch):
            chunk = np.asarray(x[i:i + batch], dtype=self.dtype)
            rows = len(chunk)
            if rows < batch:  # eval mode has no batch statistics: padding rows change nothing else
                chunk = np.concatenate([chunk, np.zeros((batch - rows, *chunk.shape[1:]), chunk.dtype)])
            out.append(self._predict_fns[batch](chunk)[:rows])
        return np.concatenate(out).astype(np.float32)

    def matmul_peak(self, precision: str) -> float | None:
        """A compiled pytensor.function of pt.dot on two n x n float32 shared matrices (PyTensor trains
        in fp32 only): the C Dot22 of the run's mode, through the BLAS it calls."""
        from harness.peak import CPU_N, best_rate

        if precision != "fp32":
            return None
        rng = np.random.default_rng(0)
        a, b = (pytensor.shared(rng.standard_normal((CPU_N, CPU_N), dtype=np.float32), shape=(CPU_N, CPU_N))
                for _ in range(2))
        product = pytensor.function([], pt.dot(a, b), mode=self.mode, name="matmul_peak")
        return best_rate(product, 2.0 * CPU_N**3)  # returns once the product is in host memory

    def get_weights(self) -> dict[str, np.ndarray]:
        return {k: v.get_value().copy() for k, v in self.p.items()}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        check_weights(self.spec, weights)
        for k, v in weights.items():
            self.p[k].set_value(np.asarray(v).astype(np.float32))
