"""The JAX training loop shared by the Flax models: the harness protocol with a jax.jit step.

Flax API: flax.nnx. Flax 0.12's documentation recommends NNX to new users (Linen stays supported,
"new users are encouraged to use Flax NNX"), so the models are nnx.Modules. The step is the
"functional training loop" of Flax's performance guide: the model is split once into a static
graph definition and pytrees of arrays (parameters; BatchNorm statistics and dropout RNG state),
and a plain jax.jit function merges, runs and splits them, so no Python graph traversal happens
per step (nnx.jit traverses the object graph on every call).
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from harness.protocol import Trainer, check_weights
from harness.specs import EVAL_BATCH
from python_models.jax.parallel import Placement

DTYPES = {"fp32": None, "bf16": jnp.bfloat16}  # Flax's compute dtype; parameters stay float32

# Layouts as (canonical -> Flax, Flax -> canonical); canonical is PyTorch's. Pure transposes and
# reshapes, so a get -> set -> get round trip is bit-identical.
CONV = (lambda w: w.transpose(2, 3, 1, 0), lambda k: k.transpose(3, 2, 0, 1))  # (out,in,kh,kw) <-> (kh,kw,in,out)
DENSE = (lambda w: w.T, lambda k: k.T)  # (out, in) <-> (in, out)
SAME = (lambda w: w, lambda k: k)


def weight_map(spec, overrides: dict | None = None) -> dict:
    """Canonical key -> (Flax variable path, layout), for Flax modules named as the spec's layers.

    `weight` is a conv kernel (4-D), a dense kernel (2-D) or a BatchNorm/LayerNorm scale (1-D);
    BatchNorm's running_mean/running_var are Flax's `mean`/`var` batch statistics. An override may
    map one canonical tensor to a tuple of Flax paths (the transformer's packed q, k, v): its
    layout then turns one array into a tuple and a tuple back into one array."""
    out = {}
    for w in spec.weights:
        layer, leaf = w.key.rsplit(".", 1)
        if leaf == "weight":
            name, layout = {4: ("kernel", CONV), 2: ("kernel", DENSE), 1: ("scale", SAME)}[len(w.shape)]
        else:
            name, layout = {"bias": "bias", "running_mean": "mean", "running_var": "var"}[leaf], SAME
        out[w.key] = (f"{layer}.{name}", layout)
    return {**out, **(overrides or {})}


def compute_dtype(options):
    if options.precision not in DTYPES:
        raise ValueError(f"python/jax trains in {', '.join(DTYPES)}; --precision {options.precision} "
                         "would need loss scaling, which this loop does not do")
    return DTYPES[options.precision]


def clip_by_global_norm(max_norm: float, eps: float) -> optax.GradientTransformation:
    """torch.nn.utils.clip_grad_norm_'s form: one norm over every gradient and one factor
    min(1, max_norm / (norm + eps)) for all of them. (optax.clip_by_global_norm scales by
    max_norm / norm, without the eps, and only above the threshold.)"""

    def clip(updates, params=None):
        factor = jnp.minimum(max_norm / (optax.global_norm(updates) + eps), 1.0)
        return jax.tree.map(lambda g: g * factor.astype(g.dtype), updates)

    return optax.stateless(clip)


def make_optimizer(opt, lr_scale: float = 1, decay_mask=None):
    """The spec's optimiser; `decay_mask` (AdamW): params -> the same tree of bools, True where
    the spec's Weight.decay applies."""
    if opt.name == "sgd":
        # optax's trace: v = g + m*v (zero start), w -= lr*v: PyTorch's SGD momentum form.
        return optax.sgd(opt.lr * lr_scale, momentum=opt.momentum)
    # m_hat / (sqrt(v_hat) + eps), eps outside the root (eps_root 0), as torch.optim.Adam.
    if opt.name == "adam":
        return optax.adam(opt.lr * lr_scale, b1=opt.beta1, b2=opt.beta2, eps=opt.eps)
    # AdamW: the Adam direction plus weight_decay * w on the masked tensors, both times -lr:
    # w - lr*wd*w - lr*adam, torch.optim.AdamW's decoupled decay.
    tx = optax.adamw(opt.lr * lr_scale, b1=opt.beta1, b2=opt.beta2, eps=opt.eps, weight_decay=opt.weight_decay,
                     mask=decay_mask)
    return tx if opt.clip_norm is None else optax.chain(clip_by_global_norm(opt.clip_norm, opt.clip_eps), tx)


def flax_path(path) -> str:
    """A jax tree path into an nnx.State ('blocks', 0, 'attn', ...) as 'blocks.0.attn...'."""
    return ".".join(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey))


def xla_cpu_threads() -> int:
    """Threads XLA's CPU matmuls use: one under --xla_cpu_multi_thread_eigen=false, else every core."""
    return 1 if "xla_cpu_multi_thread_eigen=false" in os.environ.get("XLA_FLAGS", "") else os.cpu_count()


class JaxTrainer(Trainer):
    """Trains an nnx.Module that maps a batch to logits; Dropout and BatchNorm follow nnx.view."""

    def __init__(self, model: nnx.Module, spec, options, weights: dict):
        if set(weights) != set(spec.weight_shapes()):
            raise ValueError(f"the {spec.name} weight map must cover exactly the spec's canonical keys")
        self.spec, self.weights = spec, weights
        # Several devices (--gpus N, --nodes K): a mesh, parameters replicated, batches split (parallel.py).
        self.place = Placement(options)
        lr_scale = self.place.replicas if options.scaling == "weak" else 1  # weak scaling: lr x replicas
        # Training view (dropout on, batch statistics) and eval view share the same state.
        self.graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        eval_graphdef = nnx.graphdef(nnx.view(model, deterministic=True, use_running_average=True,
                                              raise_if_not_found=False))
        # AdamW's decay groups: every Flax variable of a canonical tensor the spec decays
        decayed = {p for w in spec.weights if w.decay for p in self._paths(w.key)}
        self.tx = make_optimizer(spec.optimizer, lr_scale, lambda tree: jax.tree_util.tree_map_with_path(
            lambda path, _: flax_path(path) in decayed, tree))
        params, rest = self.place.put((params, rest))
        self.state = (params, rest, self.tx.init(params))  # everything a step reads and writes

        def train_step(state, row, plan, x, y):
            params, rest, opt_state = state
            idx = plan[row]  # this step's example indices: (batch,)
            model = nnx.merge(self.graphdef, params, rest)

            def loss_fn(model):
                logits = model(self.place.shard_batch(x[idx])).astype(jnp.float32)
                return optax.softmax_cross_entropy_with_integer_labels(logits, self.place.shard_batch(y[idx])).mean()

            # nnx.value_and_grad (not jax's) lets the forward pass update BatchNorm statistics and
            # dropout RNG counts in place; grads has the structure of params (nnx.Param only).
            loss, grads = nnx.value_and_grad(loss_fn)(model)
            updates, opt_state = self.tx.update(grads, opt_state, params)
            rest = nnx.split(model, nnx.Param, ...)[2]
            return (optax.apply_updates(params, updates), rest, opt_state), row + 1, loss

        def forward(params, rest, x):
            return nnx.merge(eval_graphdef, params, rest)(x).astype(jnp.float32)

        # The old state is donated: XLA updates parameters and optimiser moments in place.
        self._train_step = jax.jit(train_step, donate_argnums=(0, 1))
        self._forward = jax.jit(forward)
        self.info = {
            "layout": "NHWC",  # XLA's native convolution layout, and Flax's
            "fast_path": {"flax_api": "nnx, functional split/merge", "jax_jit": True, "donate_state": True,
                          "data_on_device": True, "batch_gather": "inside the jitted step",
                          "compute_dtype": options.precision, "compile_flag": "ignored: the step is always jit-compiled",
                          # XLA's default: float32 convolutions/matmuls may run as TF32 on Ampere+ GPUs; full float32 on CPU
                          "matmul_precision": str(jax.config.jax_default_matmul_precision or "default")},
            "deviations": [],
            "setup": self.place.setup(options),
            "threads": xla_cpu_threads() if options.device == "cpu" else None,
        }
        if hasattr(model, "ATTENTION"):
            self.info["attention"] = model.ATTENTION
        if self.place.replicas > 1:
            self.info["fast_path"]["mesh"] = {"axis": "data", "devices": self.place.replicas, "lr_scale": lr_scale,
                                              "batchnorm": "global-batch statistics (XLA all-reduces them)"}

    def param_count(self) -> int:
        return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(self.state[0]))

    def barrier(self) -> None:  # the harness calls it before each epoch's clock starts
        self.place.barrier()

    def _to_device(self, a):
        a = np.asarray(a)
        return self.place.put(a.astype(np.int32) if a.dtype.kind in "iu" else a)  # JAX's ints are 32-bit

    def fit_data(self, x, y) -> None:
        # One copy to the device before the clock; each step gathers its batch there.
        self.x, self.y = self._to_device(x), self._to_device(y)

    def train_epoch(self, batches) -> np.ndarray:
        # The epoch's plan goes to the device once and a device-side row counter walks it, so a
        # step sends nothing from the host: the gather fuses into the step and no extra op is dispatched.
        plan = self._to_device(getattr(batches, "index", batches))
        row = self.place.put(jnp.zeros((), jnp.int32))
        losses = []
        for _ in batches:  # iterating reports the harness's progress
            self.state, row, loss = self._train_step(self.state, row, plan, self.x, self.y)
            losses.append(loss)
        return np.asarray(jax.device_get(losses), np.float32)  # waits for every step's device work

    def predict(self, x) -> np.ndarray:
        params, rest, _ = self.state
        out = [self._forward(params, rest, self._to_device(x[i:i + EVAL_BATCH])) for i in range(0, len(x), EVAL_BATCH)]
        return np.concatenate(jax.device_get(out)) if out else np.zeros((0, 0), np.float32)

    def _variables(self) -> dict:
        """'layer1.0.conv1.kernel' -> the nnx.Variable in the current parameter/statistics state."""
        params, rest, _ = self.state
        return {".".join(map(str, path)): v for state in (params, rest) for path, v in nnx.to_flat_state(state)}

    def _paths(self, key: str) -> tuple[str, ...]:
        path = self.weights[key][0]
        return (path,) if isinstance(path, str) else tuple(path)

    def get_weights(self) -> dict[str, np.ndarray]:
        variables, out = self._variables(), {}
        for key, (path, (_, to_canonical)) in self.weights.items():
            arrays = [np.asarray(jax.device_get(variables[p][...])) for p in self._paths(key)]
            out[key] = np.ascontiguousarray(to_canonical(*arrays) if isinstance(path, tuple) else to_canonical(arrays[0]))
        return out

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        check_weights(self.spec, weights)
        variables = self._variables()
        for key, (path, (to_flax, _)) in self.weights.items():
            values = to_flax(np.asarray(weights[key]))
            for p, value in zip(self._paths(key), values if isinstance(path, tuple) else (values,)):
                var = variables[p]
                var[...] = self.place.put(np.asarray(value, dtype=var[...].dtype))

    def matmul_peak(self, precision: str) -> float | None:
        """A jitted n x n product on the run's first device, in the run's precision (and XLA's
        default matmul precision, as training); block_until_ready returns once it is done."""
        from harness.peak import CPU_N, GPU_N, best_rate

        device = self.place.local[0]
        n = CPU_N if device.platform == "cpu" else GPU_N
        dtype = {"fp32": jnp.float32, "bf16": jnp.bfloat16, "fp16": jnp.float16}[precision]
        a, b = jax.device_put(jax.random.normal(jax.random.key(0), (2, n, n), dtype), device)
        product = jax.jit(jnp.matmul)
        return best_rate(lambda: product(a, b).block_until_ready(), 2.0 * n**3)

    def export(self, fmt, path, example) -> dict:
        from python_models.jax.export import export
        return export(self, fmt, path, example)

    def peak_device_memory(self) -> int | None:
        peaks = self.place.peak_bytes()
        self.info["setup"]["peak_bytes_per_device"] = peaks
        return max((p for p in peaks or [] if p is not None), default=None)
