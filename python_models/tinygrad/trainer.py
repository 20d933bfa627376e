"""The tinygrad training loop shared by the models: the harness protocol with a TinyJit step.

tinygrad is lazy: operations build a graph, and `realize()` schedules it into kernels, renders them
as C (clang on CPU) and runs them. `TinyJit`, as tinygrad's documentation recommends for a
training step, captures the kernels of a call and replays them at later calls with only the input
buffers swapped: no graph building, scheduling or compiling per step. Here it captures the first
call (capture_first; tinygrad's default runs one call eagerly first, scheduling the step twice). Compiled kernels are also kept in tinygrad's disk cache (`CACHEDB`, by default
~/.cache/tinygrad/cache.db), so a later process compiles nothing it has compiled before.

Models are plain classes whose attribute names are the canonical keys (`nn.state.get_state_dict`
gives "layer1.0.bn1.running_var" for a list of blocks), and tinygrad is NCHW with PyTorch's
(out, in, kh, kw) and (out, in) layouts, so the canonical weight mapping is the identity.
"""
from __future__ import annotations

import math
import shutil

import numpy as np
from tinygrad import Context, Device, Tensor, TinyJit, dtypes, nn
from tinygrad.helpers import CACHEDB, CACHELEVEL, DEV, NUM_CPU_THREADS, getenv
from tinygrad.nn.state import get_parameters, get_state_dict

from harness.protocol import Trainer, check_weights, setup_record
from harness.specs import EVAL_BATCH

DEVICES = {"cpu": "CPU", "cuda": "CUDA"}  # --device -> tinygrad's device (CUDA: libcuda + NVRTC)


def start(options) -> str:
    """Select the device and seed tinygrad's generator (weights and dropout masks); call first in build."""
    if options.precision != "fp32":
        raise ValueError(f"python/tinygrad trains in fp32 only; --precision {options.precision} would need "
                         "mixed-precision casts and loss scaling that this loop does not do")
    if options.device == "cpu" and shutil.which(getenv("CC", "clang")) is None:
        raise RuntimeError("tinygrad's CPU backend compiles its kernels with clang, which is not installed: "
                           "apt-get install clang (or python3 -m harness setup --frameworks)")
    DEV.value = DEVICES[options.device]
    Tensor.manual_seed(options.seed)
    return Device.DEFAULT


# ---------------------------------------------------------------- initialisers, as the spec names them
# tinygrad's own Tensor.glorot_uniform takes fan_out = shape[0] (not out*kh*kw) and kaiming_normal
# takes fan_in, so the spec's families are written out from Tensor.uniform / Tensor.normal.
def fans(shape) -> tuple[int, int]:
    """(fan_in, fan_out) as PyTorch computes them for an (out, in, *kernel) weight."""
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def glorot_uniform(*shape) -> Tensor:
    fan_in, fan_out = fans(shape)
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return Tensor.uniform(*shape, low=-bound, high=bound)


def he_normal_fan_out(*shape) -> Tensor:
    return Tensor.normal(*shape, mean=0.0, std=math.sqrt(2.0 / fans(shape)[1]))


def conv(cin: int, cout: int, k: int, stride: int = 1, padding: int = 0, bias: bool = True, init=glorot_uniform):
    """nn.Conv2d with the spec's initialiser (zero bias); padding is symmetric, as PyTorch's."""
    layer = nn.Conv2d(cin, cout, k, stride=stride, padding=padding, bias=bias)
    layer.weight = init(cout, cin, k, k)
    if bias:
        layer.bias = Tensor.zeros(cout)
    return layer


def linear(fin: int, fout: int) -> nn.Linear:
    """nn.Linear, Glorot-uniform weight (out, in) and zero bias."""
    layer = nn.Linear(fin, fout)
    layer.weight, layer.bias = glorot_uniform(fout, fin), Tensor.zeros(fout)
    return layer


def make_optimizer(params: list[Tensor], opt, decayed: list[Tensor] | None = None):
    if opt.name == "sgd":
        # tinygrad's SGD (classic=False): b = m*b + g; w -= lr*b, PyTorch's momentum form.
        return nn.optim.SGD(params, lr=opt.lr, momentum=opt.momentum)
    if opt.name == "adamw":
        # tinygrad's AdamW (LAMB with adam=True): w -= lr * (m_hat / (sqrt(v_hat) + eps) + wd * w),
        # PyTorch's decoupled form. Two groups, as the spec's Weight.decay says: matrices and
        # embeddings decay, biases and LayerNorm do not.
        ids = {id(t) for t in decayed or []}
        groups = [[t for t in params if (id(t) in ids) == d] for d in (True, False)]
        return nn.optim.OptimizerGroup(*(nn.optim.AdamW(g, lr=opt.lr, b1=opt.beta1, b2=opt.beta2, eps=opt.eps,
                                                        weight_decay=wd)
                                         for g, wd in zip(groups, (opt.weight_decay, 0.0)) if g))
    # m_hat / (sqrt(v_hat) + eps), eps outside the root, as torch.optim.Adam.
    return nn.optim.Adam(params, lr=opt.lr, b1=opt.beta1, b2=opt.beta2, eps=opt.eps)


def as_input(a) -> np.ndarray:
    """Images as float32, token ids as int32 (tinygrad's default int; ids < 30,000)."""
    a = np.asarray(a)
    return np.ascontiguousarray(a, dtype=np.int32 if a.dtype.kind in "iu" else np.float32)


def capture_first(jit):
    """A TinyJit that captures on its first call (and after reset()) instead of its second: its
    call counter starts at 1 (tinygrad 0.14's _TinyJit.cnt: 0 eager, 1 capture, 2+ replay)."""
    reset = jit.reset

    def reset_to_capture():
        reset()
        jit.cnt = 1

    jit.cnt, jit.reset = 1, reset_to_capture
    return jit


class TinygradTrainer(Trainer):
    """Trains a model object (a callable from a batch to logits) whose state-dict keys are canonical."""

    def __init__(self, model, spec, options, deviations: tuple[str, ...] = (), fast_path: dict | None = None):
        self.model, self.spec = model, spec
        state = {k: v for k, v in get_state_dict(model).items() if not k.endswith("num_batches_tracked")}
        if set(state) != set(spec.weight_shapes()):
            raise ValueError(f"the tinygrad {spec.name} model's state keys differ from the spec's: "
                             f"{sorted(set(state) ^ set(spec.weight_shapes()))[:5]}")
        self.state = state  # canonical key -> the model's Tensor (updated in place by every step)
        # get_parameters lists BatchNorm's running statistics too: the optimiser keeps those as
        # buffers and realizes them with each step; only is_param tensors get updates.
        decays = {w.key for w in spec.weights if w.decay}
        self.optimizer = make_optimizer(get_parameters(model), spec.optimizer,
                                        [t for k, t in state.items() if k in decays])
        self.clip = spec.optimizer.clip_norm  # global gradient-norm clipping, clip_grad_norm_'s form; None: off
        # Everything a step reads is realized here (the optimiser's moments and counters too, and the
        # dropout generator's seed and counter, which tinygrad creates on the first draw), so each
        # TinyJit captures on its first call: tinygrad's default runs the first call eagerly and
        # captures the second, scheduling the whole step twice (the unrolled GRU's scheduling took
        # 2 x ~85 s per process on this 2-core VM). A state tensor first created inside the capture
        # would be re-created by every replay (a dropout counter reset to its start every step).
        Tensor.realize(*state.values(), *get_parameters(self.optimizer))
        Tensor.rand(1).realize()
        self.device = Device.DEFAULT
        self._step = capture_first(TinyJit(self._train_step))
        self._forward = capture_first(TinyJit(self._eval_forward))
        renderer = Device[self.device].renderer
        self.info = {
            "layout": "NCHW",  # tinygrad's convolution layout, and the canonical one
            "fast_path": {"tinyjit": "train step and eval forward (captured on the 1st call, replayed after)",
                          "device": self.device, "renderer": type(renderer).__name__,
                          "compiler": type(renderer.compiler).__name__,
                          "kernel_cache": CACHEDB if CACHELEVEL.value > 0 else "off",
                          "data_on_device": True, "batch_gather": "inside the jitted step",
                          "winograd": "WINO=1: 3x3 stride-1 convolutions as Winograd F(4x4,3x3), tinygrad's option "
                                      "(3.4x faster cnn steps on CPU than its direct convolution)",
                          "compile_flag": "ignored: the step is always TinyJit-captured", **(fast_path or {})},
            "deviations": list(deviations),
            "setup": setup_record(options, devices=[self.device]),
            # the CPU renderer spreads a kernel's global dimension over NUM_CPU_THREADS threads
            "threads": NUM_CPU_THREADS.value if self.device == "CPU" else None,
        }

    def param_count(self) -> int:
        return sum(p.numel() for p in get_parameters(self.model) if p.is_param)

    def _train_step(self, x: Tensor, y: Tensor, idx: Tensor) -> Tensor:
        # TRAINING: dropout on, BatchNorm on batch statistics (and updating its running ones)
        with Context(TRAINING=1, WINO=1):
            self.optimizer.zero_grad()
            # the mean over every prediction: (N, classes) with (N,), or (N, T, vocab) with (N, T)
            loss = self.model(x[idx]).sparse_categorical_crossentropy(y[idx]).backward()
            if self.clip is not None:
                self._clip_global_norm()
            # One realize for the loss and the update: realized after optimizer.step(), the lazy loss
            # would be computed from the updated weights.
            Tensor.realize(loss, *self.optimizer.schedule_step())
        return loss

    def _clip_global_norm(self) -> None:
        """torch.nn.utils.clip_grad_norm_'s form, in the captured graph: one norm over every gradient,
        each multiplied by min(1, clip_norm / (norm + clip_eps))."""
        params = self.optimizer.params
        norm = Tensor.stack(*[t.grad.square().sum() for t in params]).sum().sqrt()
        scale = (self.clip / (norm + self.spec.optimizer.clip_eps)).minimum(1.0)
        for t in params:
            t.grad = t.grad * scale

    def _eval_forward(self, x: Tensor) -> Tensor:
        with Context(TRAINING=0, WINO=1):  # eval mode: no dropout, BatchNorm on its running statistics
            return self.model(x).realize()

    def fit_data(self, x, y) -> None:
        # One copy into device memory before the clock; each step gathers its batch there. x and y
        # are arguments of the jitted step (not captured constants), so new data needs no new capture.
        x, y = Tensor(as_input(x)).realize(), Tensor(np.asarray(y, dtype=np.int32)).realize()
        if getattr(self, "x", None) is not None and (self.x.shape, self.y.shape) != (x.shape, y.shape):
            capture_first(self._step).reset()  # the captured step is specific to the input shapes
        self.x, self.y = x, y

    def train_epoch(self, batches) -> np.ndarray:
        losses = []
        for row in batches:
            loss = self._step(self.x, self.y, Tensor(np.asarray(row, dtype=np.int32)))
            losses.append(loss.clone().realize())  # the jit reuses its output buffer at the next step
        return np.array([v.item() for v in losses], dtype=np.float32)  # .item() waits for the device

    def predict(self, x) -> np.ndarray:
        # The last partial batch is zero-padded to EVAL_BATCH so one captured forward serves all.
        out = []
        for i in range(0, len(x), EVAL_BATCH):
            xb = np.asarray(x[i:i + EVAL_BATCH])
            n = len(xb)
            if n < EVAL_BATCH:
                xb = np.concatenate([xb, np.zeros((EVAL_BATCH - n, *xb.shape[1:]), xb.dtype)])
            out.append(self._forward(Tensor(as_input(xb))).numpy()[:n].copy())
        return np.concatenate(out) if out else np.zeros((0, self.spec.num_classes), np.float32)

    def get_weights(self) -> dict[str, np.ndarray]:
        return {k: np.ascontiguousarray(t.numpy(), dtype=np.float32) for k, t in self.state.items()}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        check_weights(self.spec, weights)
        for key, t in self.state.items():
            value = np.asarray(weights[key], dtype=np.float32)
            if value.shape != t.shape:
                raise ValueError(f"{key}: shape {value.shape}, the model's is {t.shape}")
            # assign writes into the tensor's own buffer, the one the captured step reads
            t.assign(Tensor(np.ascontiguousarray(value), device=t.device, dtype=dtypes.float32))
        Tensor.realize(*self.state.values())

    def peak_device_memory(self) -> int | None:
        return None  # CPU: the harness records the process's peak RSS

    def matmul_peak(self, precision: str) -> float | None:
        """A realized tinygrad matmul of two n x n float32 tensors on the run's device, synchronised
        (tinygrad trains in fp32 only): the kernel tinygrad generates and compiles for it."""
        from harness.peak import CPU_N, GPU_N, best_rate

        if precision != "fp32":
            return None
        n = CPU_N if self.device == "CPU" else GPU_N
        a, b = Tensor.randn(n, n).realize(), Tensor.randn(n, n).realize()

        def run():
            (a @ b).realize()
            Device[self.device].synchronize()

        return best_rate(run, 2.0 * n**3)
