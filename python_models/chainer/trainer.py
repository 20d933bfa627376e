"""The Chainer training loop shared by the three Chainer models: the harness protocol in Chainer.

Runs in the legacy environment (numpy 1.23, chainer 7.8); on CUDA through CuPy where it is
installed. Layouts need no conversion: Convolution2D kernels are (out, in, kh, kw), Linear
weights (out, in) flattening C,H,W, as in the canonical file.
"""
from __future__ import annotations

import math
import os

import chainer
import chainer.functions as F
import chainer.links as L
import numpy as np
from chainer import initializers, optimizers

from harness.protocol import Trainer, check_weights
from harness.specs import EVAL_BATCH

# Glorot uniform: sqrt(6 / (fan_in + fan_out)), fans counting kh*kw, as PyTorch and Keras do.
GLOROT = initializers.GlorotUniform(scale=1.0)
HE_FAN_OUT = initializers.HeNormal(scale=1.0, fan_option="fan_out")  # std sqrt(2 / (out*kh*kw))
ORTHOGONAL = initializers.Orthogonal(scale=1.0)  # Chainer's default scale is 1.1

# Chainer name -> the last part of the canonical key.
RENAME = {"W": "weight", "b": "bias", "gamma": "weight", "beta": "bias",
          "avg_mean": "running_mean", "avg_var": "running_var"}


def configure(options):
    """The device, with the framework's fast path on CUDA; seeds every generator the model draws from."""
    if options.gpus != 1 or options.precision != "fp32":
        raise ValueError("the Chainer implementations run on one device in fp32 only")
    np.random.seed(options.seed)  # initialisers, and F.dropout's masks on the CPU
    if options.device != "cuda":
        return chainer.get_device("@numpy")
    from chainer.backends import cuda

    if not cuda.available:
        raise ValueError("--device cuda: Chainer needs CuPy (pip install cupy-cuda12x in the legacy env)")
    cuda.cupy.random.seed(options.seed)
    chainer.global_config.use_cudnn = "always"
    chainer.global_config.autotune = True  # cuDNN picks the fastest convolution algorithms
    return chainer.get_device("@cupy:0")


def canonical_arrays(model) -> dict:
    """Canonical key -> (owner link, attribute name): parameters and BatchNorm running statistics."""
    links = dict(model.namedlinks())
    out = {}
    for path, _ in model.namedparams():
        owner, name = path.rsplit("/", 1)
        out[f"{owner.strip('/').replace('/', '.')}.{RENAME.get(name, name)}"] = (links[owner], name)
    for path, link in links.items():
        if isinstance(link, L.BatchNormalization):
            for name in ("avg_mean", "avg_var"):
                out[f"{path.strip('/').replace('/', '.')}.{RENAME[name]}"] = (link, name)
    return out


def make_optimizer(opt):
    if opt.name == "sgd":
        # Chainer: v = m*v - lr*g; w += v. With a constant lr, v = -lr*v' for PyTorch's v' = m*v' + g.
        return optimizers.MomentumSGD(lr=opt.lr, momentum=opt.momentum)
    if opt.name == "adamw":
        # Chainer's AdamW: w = (1 - eta*weight_decay_rate) w - eta*alpha_t*m/(sqrt(v)+eps). With eta 1 and
        # weight_decay_rate = lr*weight_decay it is PyTorch's decoupled decay; the tensors the spec does not
        # decay get weight_decay_rate 0 on their own update rule (ChainerTrainer).
        return optimizers.AdamW(alpha=opt.lr, beta1=opt.beta1, beta2=opt.beta2, eps=opt.eps, eta=1.0,
                                weight_decay_rate=opt.lr * opt.weight_decay)
    return optimizers.Adam(alpha=opt.lr, beta1=opt.beta1, beta2=opt.beta2, eps=opt.eps)


class ClipGradNorm:
    """An optimizer hook: chainer.optimizer_hooks.GradientClipping in torch.nn.utils.clip_grad_norm_'s
    form. One norm over every gradient, every gradient times min(1, max_norm / (norm + eps)); Chainer's
    own hook divides by the norm alone. On CuPy the factor stays on the device (no synchronisation)."""

    name = "ClipGradNorm"
    timing = "pre"  # before the update rules run

    def __init__(self, max_norm: float, eps: float):
        self.max_norm, self.eps = max_norm, eps

    def __call__(self, opt):
        grads = [p.grad for p in opt.target.params(False)]
        xp = chainer.backend.get_array_module(grads[0])
        norm = xp.sqrt(sum(g.ravel().dot(g.ravel()) for g in grads))
        rate = xp.minimum(self.max_norm / (norm + self.eps), 1.0).astype(grads[0].dtype)
        for g in grads:
            g *= rate


class ChainerTrainer(Trainer):
    """Wraps a Chain whose parameters, walked as in `canonical_arrays`, are the spec's weights."""

    def __init__(self, model: chainer.Chain, spec, options, device):
        self.spec, self.options, self.device = spec, options, device
        self.dtype = np.float32  # of weights and images; the tokens are int32
        model.to_device(device)
        device.use()
        self.model = model
        self.arrays = canonical_arrays(model)
        if set(self.arrays) != set(spec.weight_shapes()):
            raise KeyError(f"chainer parameters {sorted(set(self.arrays) ^ set(spec.weight_shapes()))} "
                           "do not match the spec")
        self.opt_spec = spec.optimizer
        self.optimizer = make_optimizer(spec.optimizer)
        self.optimizer.setup(model)
        if spec.optimizer.name == "adamw":  # decay groups: only the spec's matrices and embeddings decay
            decays = {w.key for w in spec.weights if w.decay}
            for key, (link, name) in self.arrays.items():
                if key not in decays:
                    getattr(link, name).update_rule.hyperparam.weight_decay_rate = 0.0
        if spec.optimizer.clip_norm is not None:
            self.optimizer.add_hook(ClipGradNorm(spec.optimizer.clip_norm, spec.optimizer.clip_eps))
        cuda = device.xp is not np
        self.info = {
            "layout": "NCHW",
            "fast_path": {"device": str(device), "cudnn": cuda, "cudnn_autotune": cuda, "data_on_device": True},
            "deviations": [],
            "notes": [],
            # On the CPU Chainer computes with NumPy, whose OpenBLAS runs OPENBLAS_NUM_THREADS (or
            # OMP_NUM_THREADS) threads, by default one per core
            "threads": int(os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
                           or os.cpu_count() or 1),
        }
        if spec.optimizer.name == "sgd":
            self.info["notes"].append("MomentumSGD: Chainer's v = m*v - lr*g; w += v is PyTorch's momentum "
                                      "at a constant lr")
        else:
            self.info["notes"].append(f"{spec.optimizer.name.replace('adamw', 'AdamW').replace('adam', 'Adam')}: "
                                      "eps set to eps*sqrt(1-beta2^t) each step, so Chainer's "
                                      "alpha_t*m/(sqrt(v)+eps) is PyTorch's lr*m_hat/(sqrt(v_hat)+eps)")
        if spec.optimizer.name == "adamw":
            self.info["notes"].append("AdamW: weight_decay_rate = lr*weight_decay with eta 1 (PyTorch's decoupled "
                                      "decay), 0 on biases and LayerNorm; gradients clipped by their global norm "
                                      "first (ClipGradNorm, clip_grad_norm_'s form)")

    def param_count(self) -> int:
        return sum(p.size for p in self.model.params())

    def _input(self, x):
        x = np.asarray(x)
        return self.device.send(x.astype(self.dtype if x.dtype.kind == "f" else np.int32))

    def fit_data(self, x, y) -> None:
        # One copy into (device) memory before the clock; batches are then gathered there.
        self.x, self.y = self._input(x), self.device.send(np.asarray(y, dtype=np.int32))

    def train_epoch(self, batches) -> np.ndarray:
        losses = []
        with chainer.using_config("train", True):  # dropout on, BatchNorm on batch statistics
            for idx in batches:
                idx = self.device.send(idx)
                logits, y = self.model(self.x[idx]), self.y[idx]
                # mean over every prediction: (N, classes) with (N,), or (N, T, vocab) with (N, T) as rows
                loss = F.softmax_cross_entropy(F.reshape(logits, (-1, logits.shape[-1])), y.reshape(-1))
                self.model.cleargrads()
                loss.backward()
                if self.opt_spec.name in ("adam", "adamw"):  # PyTorch's eps is added to sqrt(v_hat); Chainer's to sqrt(v)
                    t = self.optimizer.t + 1
                    self.optimizer.hyperparam.eps = self.opt_spec.eps * math.sqrt(1 - self.opt_spec.beta2 ** t)
                self.optimizer.update()
                losses.append(loss.array)
        if not losses:
            return np.zeros(0, np.float32)
        return chainer.get_device("@numpy").send(self.device.xp.stack(losses))  # waits for the device

    def predict(self, x) -> np.ndarray:
        out = []
        with chainer.using_config("train", False), chainer.no_backprop_mode():
            for i in range(0, len(x), EVAL_BATCH):
                out.append(chainer.get_device("@numpy").send(self.model(self._input(x[i:i + EVAL_BATCH])).array))
        return np.concatenate(out) if out else np.zeros((0, self.spec.num_classes), np.float32)

    def matmul_peak(self, precision: str) -> float | None:
        """F.matmul of two n x n float32 matrices on the run's device (NumPy's BLAS on the CPU, cuBLAS
        through CuPy), waited for. Chainer trains in fp32 only."""
        from harness.peak import CPU_N, GPU_N, best_rate

        if precision != "fp32":
            return None
        cuda = self.device.xp is not np
        n = GPU_N if cuda else CPU_N
        rng = np.random.default_rng(0)
        a, b = (self.device.send(rng.standard_normal((n, n), dtype=np.float32)) for _ in range(2))

        def run():
            F.matmul(a, b)
            if cuda:
                self.device.xp.cuda.Stream.null.synchronize()

        return best_rate(run, 2.0 * n**3)

    def export(self, fmt, path, example) -> dict:
        from python_models.chainer.export import export
        return export(self, fmt, path, example)

    def get_weights(self) -> dict[str, np.ndarray]:
        cpu = chainer.get_device("@numpy")
        return {k: np.array(cpu.send(_array(link, name)), copy=True) for k, (link, name) in self.arrays.items()}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        check_weights(self.spec, weights)
        for k, (link, name) in self.arrays.items():
            target = _array(link, name)
            target[...] = self.device.send(np.asarray(weights[k]).astype(target.dtype))


def _array(link, name):
    value = getattr(link, name)
    return value.array if isinstance(value, chainer.Variable) else value
