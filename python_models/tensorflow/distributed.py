"""TensorFlow data parallel: tf.distribute.MirroredStrategy, one process, one replica per device.

`--device cuda --gpus N` mirrors over N GPUs (NCCL all-reduce, MirroredStrategy's default).
`--device cpu --gpus N` splits the one physical CPU into N logical devices (before TensorFlow
initialises) and mirrors over those, with ReductionToOneDevice (NCCL needs GPUs), to test the
data-parallel path.

Variables are created in strategy.scope() (MirroredVariables, one copy per device). Each row of
`batches` is one global batch of the harness's epoch order; strategy.run runs the step once per
replica, replica r on the r-th slice of the row. Each replica's loss is its per-example losses
summed over the *global* batch size (tf.nn.compute_average_loss), the strategy all-reduces (sums)
the gradients, and strategy.extended.update applies the same update to every copy, so one step is
the one-device step on the whole row (up to summation order). Weak scaling (default): global
batch = spec batch x N, learning rate x N; strong: global batch = spec batch, lr unchanged.

`--nodes K`: tf.distribute.MultiWorkerMirroredStrategy, one worker process per node, its cluster
read from TF_CONFIG (written by the harness from --workers and --node-rank). The strategy must
exist before TensorFlow initialises, so the worker builds it right after the import (join_nodes).
Replica ids are global (node-major), so every node runs the same step on its own slices of the
same global batch; the all-reduce crosses the nodes (NCCL on GPUs, RING over gRPC on CPU).
"""
from __future__ import annotations

import contextlib

import numpy as np
import tensorflow as tf

from python_models.tensorflow.trainer import TFTrainer, setup_info

SUM = tf.distribute.ReduceOp.SUM


_MULTI_WORKER: list = []  # (strategy, all-reduce name), made by join_nodes at start-up


def join_nodes(options):
    """--nodes K: this process becomes worker --node-rank of TF_CONFIG's cluster. Returns how to
    leave: one last all-reduce, which every worker reaches only when its run is done."""
    if _MULTI_WORKER:
        return None
    comm = tf.distribute.experimental.CommunicationImplementation
    if options.device == "cuda":
        found = tf.config.list_physical_devices("GPU")
        if len(found) < options.gpus:
            raise RuntimeError(f"--gpus {options.gpus}: TensorFlow sees {len(found)} GPU(s)")
        tf.config.set_visible_devices(found[:options.gpus], "GPU")  # the strategy takes every visible GPU
    implementation = comm.NCCL if options.device == "cuda" else comm.RING
    strategy = tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(implementation=implementation))
    _MULTI_WORKER.append((strategy, f"MultiWorkerMirroredStrategy ({implementation.name})"))
    return lambda: strategy.reduce(SUM, strategy.run(lambda: tf.constant(1.0)), axis=None).numpy()


def mirrored_strategy(options) -> tuple[tf.distribute.Strategy, str]:
    """The strategy and the name of its all-reduce."""
    if options.nodes > 1:
        if not _MULTI_WORKER:
            raise RuntimeError("--nodes: the multi-worker strategy was not made at start-up (join_nodes)")
        return _MULTI_WORKER[0]
    n = options.gpus
    if options.device == "cuda":
        found = tf.config.list_physical_devices("GPU")
        if len(found) < n:
            raise RuntimeError(f"--gpus {n}: TensorFlow sees {len(found)} GPU(s)")
        return tf.distribute.MirroredStrategy([f"/GPU:{i}" for i in range(n)]), "NcclAllReduce"  # the default
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:  # must precede TensorFlow's initialisation (the first op or device query)
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError:  # already initialised (a second trainer in this process): keep what is there
        pass
    found = tf.config.list_logical_devices("CPU")
    if len(found) < n:
        raise RuntimeError(f"--gpus {n}: TensorFlow was initialised with {len(found)} logical CPU device(s) "
                           "before the trainer could split the CPU")
    return tf.distribute.MirroredStrategy([d.name for d in found[:n]],
                                          cross_device_ops=tf.distribute.ReductionToOneDevice()), "ReductionToOneDevice"


def _mean_aggregation(next_creator, **kwargs):
    # BatchNorm running statistics are assigned inside the replica step: each replica's new value
    # is averaged over the replicas and written to every copy. Trainable variables and optimiser
    # slots are only written through strategy.extended.update, where aggregation plays no part.
    # (The int64 step counter cannot be averaged, and needs not be.)
    if kwargs.get("dtype") is None or tf.as_dtype(kwargs["dtype"]).is_floating:
        kwargs["aggregation"] = tf.VariableAggregation.MEAN
    return next_creator(**kwargs)


class MirroredTrainer(TFTrainer):
    def __init__(self, make_model, spec, options):
        self.strategy, cross = mirrored_strategy(options)
        self.replicas = self.strategy.num_replicas_in_sync
        self.lr_scale = self.replicas if options.scaling == "weak" else 1
        super().__init__(make_model, spec, options)
        self.devices = list(self.strategy.extended.worker_devices)
        self.info["fast_path"]["mirrored"] = {
            "cross_device_ops": cross, "lr_scale": self.lr_scale,
            "batchnorm": "per-replica batch statistics; running statistics averaged over replicas"}
        engine = cross if options.nodes > 1 else f"tf.distribute.MirroredStrategy ({cross})"
        self.info["setup"] = setup_info(options, self.devices, engine, self.replicas)

    def _scope(self):
        stack = contextlib.ExitStack()  # exits in reverse order
        stack.enter_context(self.strategy.scope())
        stack.enter_context(tf.variable_creator_scope(_mean_aggregation))
        return stack

    def fit_data(self, x, y) -> None:
        # One copy per replica device before the clock; every replica gathers its slice there.
        x, y = np.asarray(x), np.asarray(y)

        def local(ctx, a, dtype):  # replica ids are global, node-major; devices are this node's
            with tf.device(self.devices[ctx.replica_id_in_sync_group % len(self.devices)]):
                return tf.identity(tf.constant(a, dtype))

        self.x = self.strategy.experimental_distribute_values_from_function(lambda c: local(c, x, tf.as_dtype(x.dtype)))
        self.y = self.strategy.experimental_distribute_values_from_function(lambda c: local(c, y, tf.int64))

    def _step(self, idx):  # idx: (global batch,) row indices
        losses = self.strategy.run(self._replica_step, args=(idx, self.x, self.y))
        return self.strategy.reduce(SUM, losses, axis=None)  # the global batch's mean loss

    def _replica_step(self, idx, x, y):
        ctx = tf.distribute.get_replica_context()
        r, per = ctx.replica_id_in_sync_group, tf.shape(idx)[0] // self.replicas
        mine = idx[r * per:(r + 1) * per]  # this replica's slice: (global batch / N,)
        # The step's seed, told apart per replica: the replicas draw different dropout masks.
        seed = tf.random.experimental.stateless_fold_in(tf.stack([self.seed, self.step_count]), r)
        with tf.GradientTape() as tape:
            logits = self.model(tf.gather(x, mine), training=True, seed=seed)
            per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.gather(y, mine), logits)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=tf.shape(idx)[0])
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, self.params)]
        grads = ctx.all_reduce(SUM, grads)  # the global batch's mean gradient, on every replica
        grads = self._clip(grads)  # on the global gradient: every replica computes the same factor
        ctx.merge_call(self._apply, args=(grads,))
        return loss

    def _apply(self, strategy, grads):
        """Cross-replica context: the same update on every copy of every variable."""
        strategy.extended.update(self.step_count, lambda v: v.assign_add(1))
        for w, g, decay, *slots in zip(self.params, grads, self.decay, *self.slots):
            strategy.extended.update(w, self._update, args=(g, self.step_count, decay, *slots), group=False)

    def train_epoch(self, batches) -> np.ndarray:
        def checked():
            for row in batches:  # iterating `batches` keeps the harness's progress reports
                if len(row) % self.replicas:
                    raise ValueError(f"a global batch of {len(row)} rows does not split over {self.replicas} "
                                     "replicas; pick --batch-size divisible by --gpus (or --scaling weak)")
                yield row
        return super().train_epoch(checked())

    def peak_device_memory(self) -> int | None:
        if self.device != "/GPU:0":
            return None
        peaks = [tf.config.experimental.get_memory_info(f"GPU:{i}")["peak"] for i in range(len(self.devices))]
        self.info["setup"]["peak_bytes_per_device"] = peaks
        return max(peaks)
