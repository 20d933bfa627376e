"""The raw TensorFlow 2 training loop shared by the TF models: the harness protocol in tf.

A model is a tf.Module that is called as `model(x, training, seed)` and offers `weight_map()`:
canonical key -> (tf.Variable, Layout). Everything else (initialisation from the spec, the
optimisers with AdamW's decay groups and global-norm clipping, the tf.function step, canonical
weights, the matmul peak) lives here, once.
"""
from __future__ import annotations

import os
import re
from typing import Callable, NamedTuple

import numpy as np
import tensorflow as tf

from harness.protocol import Trainer, check_weights, setup_record
from harness.specs import EVAL_BATCH


class Layout(NamedTuple):
    """How a canonical (PyTorch-layout) array becomes a variable's value and back; both exact."""

    to_tf: Callable[[np.ndarray], np.ndarray]
    to_canonical: Callable[[np.ndarray], np.ndarray]


SAME = Layout(lambda a: a, lambda a: a)
CONV = Layout(lambda a: a.transpose(2, 3, 1, 0), lambda a: a.transpose(3, 2, 0, 1))  # (out,in,kh,kw) <-> (kh,kw,in,out)
DENSE = Layout(lambda a: a.T, lambda a: a.T)  # (out,in) <-> (in,out): x @ kernel


def dropout(x, rate: float, seed, salt: int):
    """Stateless dropout: `seed` (2,) int64 is new every step, `salt` tells the layers of a step apart."""
    if rate == 0.0:
        return x
    return tf.nn.experimental.stateless_dropout(x, rate, seed=tf.random.experimental.stateless_fold_in(seed, salt))


def conv2d(x, w, stride: int = 1, pad: int = 0):
    """NHWC convolution with symmetric explicit padding (TF's 'SAME' pads stride-2 convs unevenly)."""
    if pad:
        x = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    return tf.nn.conv2d(x, w, stride, "VALID")


def initial_weights(spec, seed: int) -> dict[str, np.ndarray]:
    """Canonical initial weights drawn from the initialiser family each spec weight names."""
    gen = tf.random.Generator.from_seed(seed)
    out = {}
    for w in spec.weights:
        shape, init = w.shape, w.init
        receptive = int(np.prod(shape[2:]))  # kh*kw for convolutions, 1 for dense/GRU matrices
        fan_in, fan_out = (shape[1] * receptive, shape[0] * receptive) if len(shape) > 1 else (0, 0)
        if init in ("zeros", "ones"):
            value = tf.zeros(shape) if init == "zeros" else tf.ones(shape)
        elif init.startswith("glorot_uniform"):
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            value = gen.uniform(shape, -limit, limit)
        elif init == "he_normal_fan_out":
            value = gen.normal(shape, stddev=np.sqrt(2.0 / fan_out))
        elif init.startswith("orthogonal"):  # orthonormal columns of the whole (rows >= cols) matrix
            q, r = tf.linalg.qr(gen.normal(shape))
            value = q * tf.sign(tf.linalg.diag_part(r))
        elif m := re.fullmatch(r"uniform\(([-\d.e]+),([-\d.e]+)\)", init):
            value = gen.uniform(shape, float(m[1]), float(m[2]))
        elif m := re.fullmatch(r"normal\(([-\d.e]+),([-\d.e]+)\)", init):  # the transformer's normal(0, std)
            value = gen.normal(shape, float(m[1]), float(m[2]))
        else:
            raise ValueError(f"{spec.name}: no TensorFlow initialiser for {w.key}'s {init!r}")
        out[w.key] = value.numpy().astype(np.float32)
    return out


def intra_op_threads() -> int:
    """TensorFlow's intra-op pool: set in code, else TF_NUM_INTRAOP_THREADS, else one per core."""
    return (tf.config.threading.get_intra_op_parallelism_threads()
            or int(os.environ.get("TF_NUM_INTRAOP_THREADS", "0")) or os.cpu_count())


def setup_info(options, devices: list[str], engine: str = "one process", replicas: int | None = None) -> dict:
    """The device setup a result records (the same fields as the PyTorch and JAX trainers')."""
    build = tf.sysconfig.get_build_info() if options.device == "cuda" else {}
    return setup_record(options, engine, devices, replicas, cuda=build.get("cuda_version"),
                        cudnn=build.get("cudnn_version"))


def build_trainer(make_model: Callable[[], tf.Module], spec, options):
    """One device: TFTrainer; --gpus N: MirroredStrategy over N devices; --nodes K: the multi-worker
    strategy (distributed.py)."""
    if options.gpus * options.nodes > 1:
        from python_models.tensorflow.distributed import MirroredTrainer
        return MirroredTrainer(make_model, spec, options)
    return TFTrainer(make_model, spec, options)


class TFTrainer(Trainer):
    lr_scale = 1  # weak scaling multiplies the learning rate by the replica count (distributed.py)

    def __init__(self, make_model: Callable[[], tf.Module], spec, options):
        if options.precision != "fp32":
            raise ValueError(f"the raw TensorFlow implementation trains in fp32 only, not {options.precision}")
        if options.device == "cuda" and not tf.config.list_physical_devices("GPU"):
            raise RuntimeError("--device cuda: TensorFlow sees no GPU here")
        self.device = "/GPU:0" if options.device == "cuda" else "/CPU:0"
        self.spec, self.opt = spec, spec.optimizer
        self.lr = self.opt.lr * self.lr_scale
        with self._scope():
            self.model = make_model()
            self.params = list(self.model.trainable_variables)
            # AdamW's decay groups: the spec's Weight.decay of each variable's canonical tensor
            decays = {w.key for w in spec.weights if w.decay}
            by_ref = {v.ref(): key in decays for key, (v, _) in self.model.weight_map().items()}
            self.decay = [by_ref[p.ref()] for p in self.params]
            # SGD: one velocity per parameter; Adam: first and second moments.
            n_slots = 1 if self.opt.name == "sgd" else 2
            self.slots = [[tf.Variable(tf.zeros_like(p), trainable=False) for p in self.params] for _ in range(n_slots)]
            self.step_count = tf.Variable(0, dtype=tf.int64, trainable=False)  # Adam's t; dropout's stream
        self.seed = tf.constant(options.seed, tf.int64)
        self.set_weights(initial_weights(spec, options.seed))
        image = len(spec.input_shape) == 3  # NHWC of any side (--image-size), else (N, 150) token ids
        x_spec = (tf.TensorSpec([None, None, None, spec.input_shape[0]], tf.float32) if image
                  else tf.TensorSpec([None, *spec.input_shape], tf.int64))
        self._train_step = tf.function(self._step, jit_compile=options.compile,
                                       input_signature=[tf.TensorSpec([None], tf.int64)])
        self._forward = tf.function(lambda x: self.model(x, training=False), jit_compile=options.compile,
                                    input_signature=[x_spec])
        self.info = {
            "layout": "NHWC",  # TF's native image layout; oneDNN on CPU and cuDNN (via grappler) on GPU take it
            "fast_path": {"tf_function": True, "xla_jit_compile": options.compile, "channels_last": image,
                          "data_on_device": True,
                          "onednn": options.device == "cpu" and os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") != "0",
                          **getattr(self.model, "FAST_PATH", {})},
            "deviations": [],
            "setup": setup_info(options, [self.device]),
            "threads": intra_op_threads(),  # the training's and the matmul peak's
        }
        if hasattr(self.model, "ATTENTION"):
            self.info["attention"] = self.model.ATTENTION

    def _scope(self):
        """Where variables are created: this one device (a MirroredStrategy's scope in distributed.py)."""
        return tf.device(self.device)

    def param_count(self) -> int:
        return sum(int(np.prod(v.shape)) for v in self.model.trainable_variables)

    def fit_data(self, x, y) -> None:
        # One copy into device memory before the clock; every batch is then a tf.gather there.
        with tf.device(self.device):
            self.x = tf.identity(tf.constant(np.asarray(x)))
            self.y = tf.identity(tf.constant(np.asarray(y), tf.int64))

    def _step(self, idx):
        xb, yb = tf.gather(self.x, idx), tf.gather(self.y, idx)
        seed = tf.stack([self.seed, self.step_count])
        with tf.GradientTape() as tape:
            logits = self.model(xb, training=True, seed=seed)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(yb, logits))
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, self.params)]  # embedding: dense, as torch
        grads = self._clip(grads)
        self.step_count.assign_add(1)
        for w, g, decay, *slots in zip(self.params, grads, self.decay, *self.slots):
            self._update(w, g, self.step_count, decay, *slots)
        return loss

    def _clip(self, grads):
        """Global gradient-norm clipping in torch.nn.utils.clip_grad_norm_'s form: one norm over
        every gradient, one factor min(1, clip_norm / (norm + clip_eps)) for all of them.
        (tf.clip_by_global_norm divides by max(norm, clip_norm) instead, without the eps.)"""
        if self.opt.clip_norm is None:
            return grads
        norm = tf.linalg.global_norm(grads)
        factor = tf.minimum(self.opt.clip_norm / (norm + self.opt.clip_eps), 1.0)
        return [g * factor for g in grads]

    def _update(self, w, g, step, decay: bool, *slots):
        """One variable's optimiser step; `step` is the step count after this step (Adam's t);
        `decay`: AdamW's decoupled weight decay applies to this variable (spec Weight.decay)."""
        if self.opt.name == "sgd":
            # ResourceApplyMomentum is PyTorch's form exactly: v = m*v + g; w -= lr*v.
            return tf.raw_ops.ResourceApplyMomentum(var=w.handle, accum=slots[0].handle, grad=g,
                                                    lr=tf.constant(self.lr, w.dtype),
                                                    momentum=tf.constant(self.opt.momentum, w.dtype))
        # PyTorch's Adam, written out: ResourceApplyAdam puts eps inside the bias correction instead.
        o, (m, v) = self.opt, slots
        if o.name == "adamw" and decay:  # decoupled: w <- w * (1 - lr * weight_decay) before the Adam step
            w.assign(w * (1.0 - self.lr * o.weight_decay))
        t = tf.cast(step, tf.float64)
        step_size = tf.cast(self.lr / (1.0 - o.beta1 ** t), tf.float32)
        bc2_sqrt = tf.cast(tf.sqrt(1.0 - o.beta2 ** t), tf.float32)
        m.assign(m + (1.0 - o.beta1) * (g - m))
        v.assign(o.beta2 * v + (1.0 - o.beta2) * g * g)
        return w.assign_sub(step_size * m / (tf.sqrt(v) / bc2_sqrt + o.eps))

    def train_epoch(self, batches) -> np.ndarray:
        losses = [self._train_step(tf.constant(idx)) for idx in batches]
        return tf.stack(losses).numpy() if losses else np.zeros(0, np.float32)  # .numpy() waits for the device

    def predict(self, x) -> np.ndarray:
        out = []
        for i in range(0, len(x), EVAL_BATCH):
            with tf.device(self.device):
                out.append(self._forward(tf.constant(np.asarray(x[i:i + EVAL_BATCH]))).numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def get_weights(self) -> dict[str, np.ndarray]:
        # A C-ordered copy: never a view of a variable's buffer, which the next step may update.
        return {k: np.array(layout.to_canonical(v.numpy()), order="C", copy=True)
                for k, (v, layout) in self.model.weight_map().items()}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        check_weights(self.spec, weights)
        wmap = self.model.weight_map()
        for k, (v, layout) in wmap.items():
            v.assign(np.ascontiguousarray(layout.to_tf(np.asarray(weights[k], np.float32))))

    def export(self, fmt, path, example) -> dict:
        from python_models.tensorflow.export import export
        return export(self, fmt, path, example)

    def peak_device_memory(self) -> int | None:
        return tf.config.experimental.get_memory_info("GPU:0")["peak"] if self.device == "/GPU:0" else None

    def matmul_peak(self, precision: str) -> float | None:
        """tf.matmul of two n x n matrices on the run's device and intra-op threads; one element of
        the product is read back, so the call returns only when the product is done."""
        from harness.peak import CPU_N, GPU_N, best_rate

        n = GPU_N if self.device == "/GPU:0" else CPU_N
        dtype = {"fp32": tf.float32, "bf16": tf.bfloat16, "fp16": tf.float16}[precision]
        with tf.device(self.device):
            gen = tf.random.Generator.from_seed(0)
            a, b = (tf.cast(gen.normal((n, n)), dtype) for _ in range(2))

        def run():  # eager: one MatMul kernel, as a training step's own
            with tf.device(self.device):
                return tf.matmul(a, b)[0, 0].numpy()

        return best_rate(run, 2.0 * n**3)
