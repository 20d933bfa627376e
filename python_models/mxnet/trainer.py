"""The MXNet Gluon training loop shared by the three Gluon models: the harness protocol in MXNet.

Runs in the legacy environment (numpy 1.23, mxnet 1.9). Layouts need no conversion: Gluon's
Conv2D kernels are (out, in, kh, kw), Dense weights (out, in) flattening C,H,W, and the fused
GRU stacks its gates (reset, update, new) like the canonical file.
"""
from __future__ import annotations

import math
import os

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon, nd
from mxnet.gluon import nn

from harness.protocol import Trainer, check_weights, setup_record
from harness.specs import EVAL_BATCH
HYBRIDIZE = {"static_alloc": True, "static_shape": True}

# Glorot uniform: sqrt(6 / (fan_in + fan_out)), fans counting kh*kw, as PyTorch and Keras do.
GLOROT = mx.init.Xavier(rnd_type="uniform", factor_type="avg", magnitude=3)
# He normal, fan-out: std sqrt(2 / (out*kh*kw)).
HE_FAN_OUT = mx.init.MSRAPrelu(factor_type="out", slope=0.0)

# Gluon parameter name -> the last part of the canonical key.
RENAME = {"gamma": "weight", "beta": "bias", "l0_i2h_weight": "weight_ih", "l0_h2h_weight": "weight_hh",
          "l0_i2h_bias": "bias_ih", "l0_h2h_bias": "bias_hh"}


def named_blocks(block, prefix=""):
    """(dotted path, block) for every block; attribute names and Sequential indices, as PyTorch names them."""
    yield prefix, block
    for name, child in block._children.items():
        yield from named_blocks(child, f"{prefix}.{name}" if prefix else name)


def canonical_params(net) -> dict:
    """Canonical key -> gluon Parameter. A Parameter shared by two blocks (the transformer's output
    projection is the token embedding's weight) keeps its first name."""
    out, seen = {}, set()
    for path, block in named_blocks(net):
        for name, p in block._reg_params.items():
            if id(p) not in seen:
                seen.add(id(p))
                out[f"{path}.{RENAME.get(name, name)}"] = p
    return out


def contexts(options) -> list:
    """One context per replica: --gpus N data parallel is Gluon over N contexts (see GluonTrainer);
    `--device cpu --gpus N` uses mx.cpu(0..N-1), to test the data-parallel path."""
    if options.precision != "fp32":
        raise ValueError("the MXNet implementations run in fp32 only")
    if options.device == "cuda":
        found = mx.context.num_gpus()
        if found == 0:
            raise ValueError("--device cuda: this MXNet build sees no GPU (install mxnet-cu* in the legacy env)")
        if found < options.gpus:
            raise ValueError(f"--gpus {options.gpus}: MXNet sees {found} GPU(s)")
        return [mx.gpu(i) for i in range(options.gpus)]
    return [mx.cpu(i) for i in range(options.gpus)]


@mx.optimizer.register
class AdamW(mx.optimizer.Optimizer):
    """PyTorch's AdamW (harness.specs.Optimizer) on MXNet's fused contrib.adamw_update kernel, which
    computes w -= eta * (lr * m / (sqrt(v) + epsilon) + wd * w) with no bias correction. Per step t,
    lr is lr*sqrt(1-beta2^t)/(1-beta1^t) and epsilon eps*sqrt(1-beta2^t), which make it PyTorch's
    lr*m_hat/(sqrt(v_hat)+eps); eta = 1 and wd = lr * weight_decay make the decay PyTorch's decoupled
    w *= 1 - lr*weight_decay. Each Parameter's wd_mult (1 or 0) says whether the spec decays it."""

    def __init__(self, beta1: float, beta2: float, epsilon: float, **kwargs):
        super().__init__(**kwargs)
        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon

    def create_state(self, index, weight):
        return (nd.zeros(weight.shape, weight.context, dtype=weight.dtype),  # m
                nd.zeros(weight.shape, weight.context, dtype=weight.dtype))  # v

    def update(self, index, weight, grad, state):
        self._update_count(index)
        t = self._index_update_count[index]
        lr, wd = self._get_lr(index), self._get_wd(index)
        fix1, fix2 = 1 - self.beta1 ** t, 1 - self.beta2 ** t
        rescale = nd.full((1,), self.rescale_grad, ctx=weight.context)  # the kernel takes it as an array
        nd.contrib.adamw_update(weight, grad, *state, rescale, lr=lr * math.sqrt(fix2) / fix1, eta=1.0, wd=lr * wd,
                                beta1=self.beta1, beta2=self.beta2, epsilon=self.epsilon * math.sqrt(fix2),
                                clip_gradient=-1, out=weight)


def make_optimizer(opt, lr_scale: float = 1):
    lr = opt.lr * lr_scale  # weak scaling: lr x replicas
    if opt.name == "adamw":  # the kernel's betas are float32, as adam_update's (below)
        b1, b2 = float(np.float32(opt.beta1)), float(np.float32(opt.beta2))
        return AdamW(learning_rate=lr, beta1=b1, beta2=b2, epsilon=opt.eps, wd=opt.weight_decay)
    if opt.name == "sgd":
        # MXNet: s = m*s + lr*g; w -= s. With a constant lr, s = lr*v for PyTorch's v = m*v + g; w -= lr*v.
        return mx.optimizer.SGD(learning_rate=lr, momentum=opt.momentum)
    # adam_update takes beta1/beta2 as float32 (1 - float32(0.999) is 1.3e-5 off 0.001); the Python side
    # gets the same float32 values, so its bias correction (1 - beta^t) matches what the kernel applies.
    b1, b2 = float(np.float32(opt.beta1)), float(np.float32(opt.beta2))
    return mx.optimizer.Adam(learning_rate=lr, beta1=b1, beta2=b2, epsilon=opt.eps)


class GluonTrainer(Trainer):
    """Wraps a HybridBlock whose parameters, walked as in `canonical_params`, are the spec's weights.

    Several contexts (--gpus N): the net is initialised on all of them (one copy of every
    parameter each); each row of `batches` is one global batch of the harness's epoch order,
    gathered on the first context and cut by gluon.utils.split_and_load, context r getting the
    r-th slice. Each context's loss is its slice mean x slice/global rows, so the losses add up
    to the global batch's mean; gluon.Trainer's kvstore 'device' sums the gradients over the
    contexts and every context applies the same update to its copy. Weak scaling (default):
    global batch = spec batch x N, lr x N; strong: global batch = spec batch."""

    def __init__(self, net: gluon.HybridBlock, spec, options, ctxs: list):
        self.spec, self.options, self.ctxs = spec, options, ctxs
        self.ctx = ctxs[0]  # the training arrays, evaluation and the canonical weights live here
        self.dtype = "float32"  # of weights and images; the tokens are int32
        self.net = net
        self.params = canonical_params(net)
        if set(self.params) != set(spec.weight_shapes()):
            raise KeyError(f"gluon parameters {sorted(set(self.params) ^ set(spec.weight_shapes()))} "
                           "do not match the spec")
        net.hybridize(**HYBRIDIZE)  # the fast path: one cached, statically planned graph per mode
        self.loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
        self.loss_fn.hybridize(**HYBRIDIZE)
        self.opt_spec = spec.optimizer
        decays = {w.key for w in spec.weights if w.decay}
        for key, p in self.params.items():  # AdamW's groups: matrices and embeddings decay, the rest not
            p.wd_mult = 1.0 if key in decays else 0.0
        self.trainable = [p for p in self.params.values() if p.grad_req != "null"]
        lr_scale = len(ctxs) if options.scaling == "weak" else 1
        self.optimizer = make_optimizer(spec.optimizer, lr_scale)
        # kvstore 'device' (Gluon's default, named here): gradients summed over the contexts on the
        # devices; with update_on_kvstore=False every context then runs the same optimiser update.
        self.trainer = gluon.Trainer(net.collect_params(), self.optimizer, kvstore="device",
                                     update_on_kvstore=False)
        if len(ctxs) > 1:
            # Creates the kvstore now, which broadcasts the first context's parameters to the others
            # (the gradients are still zeros). Left to the first step(), that broadcast would race
            # the forward pass's unordered running-statistic writes (see _running_vars) and could
            # reset every context's BatchNorm statistics to their pre-step values.
            self.trainer.allreduce_grads()
        self.steps = 0
        self.bns = [b for _, b in named_blocks(net) if isinstance(b, nn.BatchNorm)]
        # MXNet's CPU BatchNorm blends the biased batch variance into running_var; PyTorch and cuDNN
        # the unbiased one (n/(n-1)). Corrected after each step on CPU; see _unbias_running_var.
        self.unbias = bool(self.bns) and self.ctx.device_type == "cpu"
        self._bn_positions = None
        features = mx.runtime.Features()
        self.info = {
            "layout": "NCHW",
            "fast_path": {"hybridize": True, **HYBRIDIZE, "mkldnn": features.is_enabled("MKLDNN"),
                          "cudnn": self.ctx.device_type == "gpu" and features.is_enabled("CUDNN"),
                          "cudnn_autotune": self.ctx.device_type == "gpu", "data_on_device": True},
            "deviations": [],
            "notes": [],
            "setup": setup_record(options, "one process" if len(ctxs) == 1 else "gluon multi-context, kvstore 'device'",
                                  [str(c) for c in ctxs]),
            # MXNet's operators and its OpenBLAS run OMP_NUM_THREADS threads, by default one per core
            "threads": int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1),
        }
        if len(ctxs) > 1:
            self.info["fast_path"]["multi_context"] = {
                "kvstore": "device", "lr_scale": lr_scale,
                "batchnorm": "per-context batch and running statistics; weights report the first context's"}
        if spec.optimizer.name == "sgd":
            self.info["notes"].append("SGD: MXNet's s = m*s + lr*g; w -= s is PyTorch's momentum at a constant lr")
        elif spec.optimizer.name == "adamw":
            self.info["notes"].append("AdamW: contrib.adamw_update with the bias corrections folded into lr and "
                                      "epsilon each step, wd = lr * weight_decay on the spec's decayed tensors "
                                      "(Parameter.wd_mult 0 on biases and LayerNorm); gradients clipped by their "
                                      "global norm first, as torch.nn.utils.clip_grad_norm_")
            self.info["deviations"].append(
                f"AdamW: MXNet's kernel takes beta1, beta2 as float32, so 1-beta2 = {1 - self.optimizer.beta2:.10g} "
                f"(PyTorch: {1 - spec.optimizer.beta2:g}); the bias correction uses the same value")
        else:
            self.info["notes"].append("Adam: epsilon set to eps*sqrt(1-beta2^t) each step, so MXNet's "
                                      "lr_t*m/(sqrt(v)+epsilon) is PyTorch's lr*m_hat/(sqrt(v_hat)+eps)")
            self.info["deviations"].append(
                "Adam: MXNet's kernel takes beta2 as float32, so 1-beta2 = 0.00099998713 (PyTorch: 0.001); "
                "the bias correction uses the same value, i.e. exact Adam with beta2 = float32(0.999)")
        if self.unbias:
            self.info["notes"].append("BatchNorm running_var Bessel-corrected after each step "
                                      "(MXNet's CPU kernel tracks the biased variance)")

    def param_count(self) -> int:
        return sum(int(np.prod(p.shape)) for p in self.net.collect_params().values() if p.grad_req != "null")

    def _input_dtype(self, x):
        return self.dtype if x.dtype.kind == "f" else "int32"  # token ids < 30000

    def fit_data(self, x, y) -> None:
        # One copy into (device) memory before the clock; batches are then gathered there.
        self.x = nd.array(np.asarray(x), ctx=self.ctx, dtype=self._input_dtype(x))
        self.y = nd.array(np.asarray(y), ctx=self.ctx, dtype="int32")

    def _positions_per_example(self):
        """Per BatchNorm: the positions one example contributes (H*W of its input), by shape inference."""
        internals = self.net(mx.sym.var("data")).get_internals()
        _, shapes, _ = internals.infer_shape(data=(1,) + self.x.shape[1:])
        shape_of = dict(zip(internals.list_outputs(), shapes))
        return [int(np.prod(shape_of[f"{b.name}_fwd_output"][2:])) for b in self.bns]

    def _running_vars(self):
        """Per BatchNorm, per context: the running variance."""
        # The static_alloc graph's running-statistic writes are not ordered by the engine against
        # other NDArray ops (reading them right after a step can see the old values): wait first.
        nd.waitall()
        return [[b.running_var.data(c).asnumpy() for c in self.ctxs] for b in self.bns]

    def _unbias_running_var(self, before, batch):
        # running = mom*old + (1-mom)*var_biased; rebuild it with var_biased*n/(n-1), where n counts
        # the positions of one context's slice (batch / contexts examples).
        for b, olds, news, k in zip(self.bns, before, self._running_vars(), self._bn_positions):
            n, mom = k * batch // len(self.ctxs), b._kwargs["momentum"]
            for c, old, new in zip(self.ctxs, olds, news):
                b.running_var.data(c)[:] = nd.array(new * (n / (n - 1)) - old * (mom / (n - 1)), ctx=c,
                                                    dtype=self.dtype)
        nd.waitall()

    def train_epoch(self, batches) -> np.ndarray:
        if self.unbias and self._bn_positions is None:
            self._bn_positions = self._positions_per_example()
        losses = []
        for idx in batches:
            if len(idx) % len(self.ctxs):
                raise ValueError(f"a global batch of {len(idx)} rows does not split over {len(self.ctxs)} contexts; "
                                 "pick --batch-size divisible by --gpus (or --scaling weak)")
            idx = nd.array(idx, ctx=self.ctx, dtype="int32")
            xb, yb = nd.take(self.x, idx), nd.take(self.y, idx)  # the global batch, on the first context
            xs = gluon.utils.split_and_load(xb, self.ctxs)  # one slice per context (itself, for one context)
            ys = gluon.utils.split_and_load(yb, self.ctxs)
            before = self._running_vars() if self.unbias else None
            if self.opt_spec.name == "adam":  # PyTorch's eps is added to sqrt(v_hat); MXNet's to sqrt(v)
                t = self.steps + 1
                self.optimizer.epsilon = self.opt_spec.eps * math.sqrt(1 - self.optimizer.beta2 ** t)
            with autograd.record():  # train mode: dropout on, BatchNorm on batch statistics
                # slice mean x slice share: the parts sum to the global batch mean (x 1.0, exact, on one context)
                parts = [self.loss_fn(self.net(x), y).mean() * (len(x) / len(idx)) for x, y in zip(xs, ys)]
            autograd.backward(parts)
            if self.opt_spec.clip_norm is None:
                self.trainer.step(1)  # the loss is already the batch mean; kvstore sums the parts' gradients
            else:  # clipping needs the summed gradients: allreduce, clip, then the update (GluonNLP's order)
                self.trainer.allreduce_grads()
                self._clip_global_norm()
                self.trainer.update(1)
            self.steps += 1
            loss = parts[0] if len(parts) == 1 else nd.add_n(*[p.as_in_context(self.ctx) for p in parts])
            if self.unbias:
                self._unbias_running_var(before, len(idx))
            losses.append(loss)
        out = nd.concat(*losses, dim=0).asnumpy() if losses else np.zeros(0, np.float32)
        nd.waitall()  # the losses are ready; so must the running statistics be (see _running_vars)
        return out

    def _clip_global_norm(self) -> None:
        """torch.nn.utils.clip_grad_norm_'s form: one norm over every gradient, every gradient times
        min(1, clip_norm / (norm + clip_eps)); on the device, no read-back (gluon.utils.clip_global_norm
        computes the same with an eps of 1e-8)."""
        grads = [p.grad(self.ctx) for p in self.trainable]
        norm = nd.sqrt(nd.add_n(*[nd.sum(nd.square(g)) for g in grads]))
        scale = nd.minimum(self.opt_spec.clip_norm / (norm + self.opt_spec.clip_eps), 1.0)
        for p in self.trainable:
            for c in self.ctxs:  # after allreduce every context holds the same sums
                p.grad(c)[:] *= scale.as_in_context(c)

    def predict(self, x) -> np.ndarray:
        out = []
        for i in range(0, len(x), EVAL_BATCH):
            xb = nd.array(np.asarray(x[i:i + EVAL_BATCH]), ctx=self.ctx, dtype=self._input_dtype(x))
            out.append(self.net(xb).asnumpy())  # outside autograd.record(): inference mode
        return np.concatenate(out) if out else np.zeros((0, self.spec.num_classes), np.float32)

    def export(self, fmt, path, example) -> dict:
        from python_models.mxnet.export import export
        return export(self, fmt, path, example)

    def get_weights(self) -> dict[str, np.ndarray]:
        return {k: p.data(self.ctx).asnumpy() for k, p in self.params.items()}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        check_weights(self.spec, weights)
        for k, p in self.params.items():
            p.set_data(nd.array(np.asarray(weights[k]), ctx=self.ctx, dtype=self.dtype))  # every context's copy
        nd.waitall()  # the static_alloc graph reads running statistics unordered (see _running_vars)

    def matmul_peak(self, precision: str) -> float | None:
        """nd.dot of two n x n float32 matrices on the first context (MXNet trains in fp32 only),
        waited for; MXNet's OpenMP threads (info["threads"])."""
        from harness.peak import CPU_N, GPU_N, best_rate

        if precision != "fp32":
            return None
        n = GPU_N if self.ctx.device_type == "gpu" else CPU_N
        a, b = (nd.random.normal(shape=(n, n), ctx=self.ctx, dtype="float32") for _ in range(2))
        return best_rate(lambda: nd.dot(a, b).wait_to_read(), 2.0 * n**3)
