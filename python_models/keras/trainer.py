"""The Keras 3 training loop shared by the Keras models: the harness protocol, backend-agnostic."""
from __future__ import annotations

import os
import threading

import keras
import numpy as np

from harness.protocol import Trainer, check_weights
from harness.specs import EVAL_BATCH
from python_models.keras.distributed import distribute, node_rows, predict_on_nodes, setup_info
from python_models.keras.optimizers import make_optimizer
from python_models.keras.weights import canonical_prefix, layer_variables, layer_weights, load_layer

POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def configure(options) -> None:
    """Seed, precision, image layout and the data-parallel distribution, before any layer exists.

    channels_last is Keras' default on every backend and the layout XLA and TensorFlow's CPU
    kernels prefer; the torch backend transposes around each convolution, which measured here
    no slower than channels_first. The harness hands over NHWC images (info["layout"])."""
    keras.utils.set_random_seed(options.seed)  # Python, NumPy and the backend's generator
    keras.config.set_dtype_policy(POLICIES[options.precision])
    keras.config.set_image_data_format("channels_last")
    distribute(options)


class StepLoss(keras.metrics.Metric):
    """The mean loss of the last batch alone (Keras' own "loss" log is the running mean of the epoch)."""

    def __init__(self, loss_fn, name="step_loss"):
        super().__init__(name=name)
        self.loss_fn = loss_fn
        # Under MirroredStrategy Keras' loss already divides each replica's slice mean by N
        # (scale_loss_for_distribution); the variable's on-read sum over replicas is then the
        # global batch's mean loss. Elsewhere there is one copy.
        self.value = self.add_variable(shape=(), initializer="zeros", aggregation="sum", name="value")

    def update_state(self, y_true, y_pred, sample_weight=None):
        self.value.assign(keras.ops.cast(self.loss_fn(y_true, y_pred), self.value.dtype))

    def result(self):
        return keras.ops.convert_to_tensor(self.value)


class StepLosses(keras.callbacks.Callback):
    """Collects every step's loss; async-safe, so Keras fetches each value in a worker thread
    while the main thread dispatches the next step (no host sync per step)."""

    async_safe = True

    def __init__(self, batches):
        super().__init__()
        self.losses = {}
        self._rows = iter(batches)  # advancing it reports the harness's progress
        self._lock = threading.Lock()

    def on_train_batch_end(self, batch, logs=None):
        with self._lock:
            self.losses[batch] = logs["step_loss"]
            next(self._rows, None)


# ----------------------------------------------------------------------------- the trainer
class KerasTrainer(Trainer):
    """Wraps a functional keras.Model whose weighted layers are named by their canonical key prefix
    ("." written "_").

    `flattened` names dense layers fed by a Flatten: {layer name: (C, H, W) of the flattened map};
    their kernel rows are reordered between Keras' H,W,C flatten and the canonical C,H,W one.
    `prefixes` names the layers whose canonical prefix has an underscore of its own ({"tok_emb": "tok_emb"}).
    `attention` declares the attention path of a model that has one (info["attention"])."""

    def __init__(self, model: keras.Model, spec, options, flattened: dict | None = None,
                 deviations: tuple[str, ...] = (), prefixes: dict | None = None, attention: str | None = None):
        self.model, self.spec, self.options = model, spec, options
        data_format = keras.config.image_data_format()
        self.flattened = (flattened or {}) if data_format == "channels_last" else {}
        self.prefixes = prefixes or {}
        # The mean over every prediction: over the batch, or over every position of (N, T) targets.
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.replicas = options.gpus * options.nodes  # data parallel (distributed.py): set up by configure() before the model
        lr_scale = self.replicas if options.scaling == "weak" else 1
        # AdamW's decay groups: the variables of the canonical tensors the spec does not decay
        decays = {w.key: w.decay for w in spec.weights}
        no_decay = [v for layer in model.layers for key, variables in layer_variables(layer, self._prefix(layer)).items()
                    if not decays[key] for v in variables] if spec.optimizer.name == "adamw" else []
        # "auto" is Keras' default: jax.jit on JAX; XLA on TensorFlow when a GPU is present (Keras
        # turns it off on CPU-only machines); eager on torch. --compile forces it on (torch.compile
        # on the torch backend).
        model.compile(optimizer=make_optimizer(spec.optimizer, lr_scale, no_decay), loss=loss,
                      metrics=[StepLoss(loss)], jit_compile=True if options.compile else "auto")
        self.x = self.y = None
        backend = keras.backend.backend()
        self.info = {
            "layout": "NHWC" if data_format == "channels_last" else "NCHW",
            "backend": backend,
            "fast_path": {"keras_backend": backend, "data_format": data_format,
                          "jit_compile": model.jit_compile,  # "auto" as Keras resolved it
                          "loop": "model.fit per epoch over the harness-ordered batches, shuffle=False, "
                                  "async-safe callback collecting each step's loss",
                          "dtype_policy": keras.config.dtype_policy().name},
            "deviations": list(deviations),
            "setup": setup_info(options),
            "threads": cpu_threads(backend),  # the training's and the matmul peak's (on a CPU)
        }
        if attention:
            self.info["attention"] = attention
        if self.replicas > 1:
            self.info["fast_path"]["data_parallel"] = {
                "lr_scale": lr_scale,
                "batchnorm": "per-replica batch statistics" if backend == "tensorflow"
                             else "global-batch statistics (XLA all-reduces them)"}

    def _prefix(self, layer) -> str:
        return canonical_prefix(layer, self.prefixes)

    def param_count(self) -> int:
        return sum(int(np.prod(v.shape)) for v in self.model.trainable_weights)

    def fit_data(self, x, y) -> None:
        self.x, self.y = np.asarray(x), np.asarray(y)  # memory-mapped arrays, read in the harness's order

    def train_epoch(self, batches) -> np.ndarray:
        index = getattr(batches, "index", None)
        index = np.asarray(list(batches) if index is None else index)  # (steps, batch) rows
        steps, batch_size = index.shape
        if batch_size % self.replicas:
            raise ValueError(f"a global batch of {batch_size} rows does not split over {self.replicas} replicas; "
                             "pick --batch-size divisible by --gpus (or --scaling weak)")
        # model.fit is Keras' fast path: on JAX it keeps the training state on the device between
        # steps (train_on_batch writes every variable back after each step and fetches the loss),
        # and with an async-safe callback no step waits for the host (the TF backend is not
        # thread-safe, so Keras fetches each step's logs there anyway). On this CPU both loops
        # timed the same within noise. One gather puts the epoch in the harness's order; fit then
        # cuts exactly these rows into the same batches (shuffle=False, no partial batch), one
        # optimiser step each.
        mine = node_rows(self.options, index)  # --nodes K: this node's share of each global batch
        order = mine.reshape(-1)
        record = StepLosses(batches)
        self.model.fit(self.x[order], self.y[order], batch_size=mine.shape[1], epochs=1, shuffle=False,
                       verbose=0, callbacks=[record])
        assert len(record.losses) == steps, f"{len(record.losses)} steps run, {steps} batches given"
        return np.array([record.losses[i] for i in range(steps)], dtype=np.float32)  # fit returned: all done

    def predict(self, x) -> np.ndarray:
        if self.options.nodes > 1:
            return predict_on_nodes(self.model, x, EVAL_BATCH)
        return np.asarray(self.model.predict(np.asarray(x), batch_size=EVAL_BATCH, verbose=0), np.float32)

    def infer(self, x) -> np.ndarray:
        # Keras' call for one batch: the compiled predict function without predict()'s data adapter
        # and callbacks, which cost milliseconds per call (Keras' docs: predict is for large inputs).
        return np.asarray(self.model.predict_on_batch(np.asarray(x)), np.float32)

    def export(self, fmt, path, example) -> dict:
        from python_models.keras.export import export
        return export(self, fmt, path, example)

    def get_weights(self) -> dict[str, np.ndarray]:
        out = {}
        for layer in self.model.layers:
            out.update({k: np.ascontiguousarray(v)
                        for k, v in layer_weights(layer, self.flattened, self._prefix(layer)).items()})
        return out

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        check_weights(self.spec, weights)
        w = {k: np.asarray(v, np.float32) for k, v in weights.items()}
        for layer in self.model.layers:
            load_layer(layer, w, self.flattened, self._prefix(layer))

    def peak_device_memory(self) -> int | None:
        if self.options.device != "cuda":
            return None
        backend = keras.backend.backend()
        if backend == "torch":
            import torch
            return torch.cuda.max_memory_allocated()
        if backend == "jax":
            import jax
            return jax.devices()[0].memory_stats().get("peak_bytes_in_use")
        import tensorflow as tf
        return tf.config.experimental.get_memory_info("GPU:0")["peak"]

    def matmul_peak(self, precision: str) -> float | None:
        """keras.ops.matmul of two n x n matrices on the backend's device, in the run's precision;
        one element of the product is read back, so each call returns once the product is done."""
        from harness.peak import CPU_N, GPU_N, best_rate

        n = GPU_N if self.options.device == "cuda" else CPU_N
        dtype = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[precision]
        a, b = (keras.random.normal((n, n), dtype=dtype, seed=seed) for seed in (1, 2))
        return best_rate(lambda: keras.ops.convert_to_numpy(keras.ops.matmul(a, b)[0, 0]), 2.0 * n**3)


def cpu_threads(backend: str) -> int | None:
    """The intra-op threads of the backend's CPU kernels."""
    if backend == "torch":
        import torch
        return torch.get_num_threads()
    if backend == "tensorflow":
        import tensorflow as tf
        return (tf.config.threading.get_intra_op_parallelism_threads()
                or int(os.environ.get("TF_NUM_INTRAOP_THREADS", "0")) or os.cpu_count())
    # JAX: XLA's CPU matmuls run on one thread under --xla_cpu_multi_thread_eigen=false, else on every core
    return 1 if "xla_cpu_multi_thread_eigen=false" in os.environ.get("XLA_FLAGS", "") else os.cpu_count()
