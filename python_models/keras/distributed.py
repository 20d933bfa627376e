"""Keras data parallel, with the backend's own engine; the harness's global batches, split over replicas.

TensorFlow backend: tf.distribute.MirroredStrategy (the same strategy as the raw TF trainer:
python_models/tensorflow/distributed.py; N logical CPU devices with --device cpu). JAX backend:
keras.distribution.DataParallel, a 1-D mesh of N jax devices (with --device cpu the harness sets
XLA_FLAGS=--xla_force_host_platform_device_count=N before JAX starts). Torch backend: none here
(Keras 3 offers no data-parallel path for it); --gpus > 1 is refused.

Several nodes (--nodes K, JAX backend): keras.distribution.initialize joins the processes
(jax.distributed), the DataParallel mesh spans every node's devices, and each node feeds its own
slice of every global batch (auto_shard_dataset off). The TensorFlow backend has no multi-node
path here: Keras 3's fit under MultiWorkerMirroredStrategy would re-shard the harness's batches.

Weak scaling (default): the harness's rows are global batches of spec batch x N and the learning
rate is multiplied by N (KerasTrainer); --scaling strong keeps the spec's global batch.
"""
from __future__ import annotations

import keras

from harness.protocol import setup_record


def join_nodes(options):
    """--nodes K (JAX backend): this process joins the others through keras.distribution.initialize
    (jax.distributed; coordinator node 0's --rdzv-endpoint, process id --node-rank), before the
    first device query. CPU collectives run over gloo. Returns how to leave (as JAX's)."""
    import jax

    if options.device == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    keras.distribution.initialize(options.extra["rdzv_endpoint"], num_processes=options.nodes,
                                  process_id=options.extra["node_rank"])
    return jax.distributed.shutdown


def distribute(options) -> None:
    """--gpus N: every variable the model builds afterwards is mirrored/replicated over N devices.

    TensorFlow backend: tf.distribute.MirroredStrategy, set as the current strategy (the model
    files build the model right after configure(), outside any `with strategy.scope()`); model.fit
    splits each global batch of the harness's order into N consecutive slices, replica r gets the
    r-th, and the optimiser sums the gradients of losses Keras scales by 1/N. JAX backend:
    keras.distribution.DataParallel over N jax devices (--device cpu: N XLA host devices, set by
    the harness); fit shards each global batch along its rows, XLA inserts the all-reduce."""
    backend, n = keras.backend.backend(), options.gpus
    if backend == "tensorflow":
        import tensorflow as tf

        from python_models.tensorflow.distributed import mirrored_strategy

        tf.distribute.experimental_set_strategy(mirrored_strategy(options)[0] if n > 1 else None)
    elif backend == "jax":
        import jax

        kind = "gpu" if options.device == "cuda" else "cpu"
        local = jax.local_devices(backend=kind)
        if len(local) < n:
            raise RuntimeError(f"--gpus {n}: JAX sees {len(local)} {kind} device(s) (on cpu the harness "
                               "sets XLA_FLAGS=--xla_force_host_platform_device_count)")
        # every node's first N devices, node-major: replica r trains the r-th slice of each global batch
        per_node = {}
        for d in jax.devices(kind):
            per_node.setdefault(d.process_index, []).append(d)
        found = [d for p in sorted(per_node) for d in per_node[p][:n]]
        # several nodes: each feeds its own slice of every global batch (node_rows), already sharded
        keras.distribution.set_distribution(keras.distribution.DataParallel(
            devices=found, auto_shard_dataset=options.nodes == 1) if len(found) > 1 else None)
    elif n > 1:
        raise ValueError(f"--gpus {n}: Keras on the {backend} backend has no data-parallel path here; "
                         "choices: --backend tensorflow (MirroredStrategy) or jax (DataParallel)")


def setup_info(options) -> dict:
    """The device setup a result records (the same fields as the PyTorch and JAX trainers');
    devices are this node's."""
    backend, n = keras.backend.backend(), options.gpus * options.nodes
    engine = ("one process" if n == 1 else "tf.distribute.MirroredStrategy" if backend == "tensorflow"
              else "keras.distribution.DataParallel (jax mesh)")
    if backend == "jax" and n > 1:
        import jax
        mesh = keras.distribution.distribution().device_mesh.devices.ravel()
        devices = [str(d) for d in mesh if d.process_index == jax.process_index()]
        if options.nodes > 1:
            engine += f", keras.distribution.initialize over {jax.process_count()} processes"
    elif backend == "tensorflow" and n > 1:
        import tensorflow as tf
        devices = list(tf.distribute.get_strategy().extended.worker_devices)
    else:
        devices = [options.device]
    return setup_record(options, engine, devices, n)


def node_rows(options, index):
    """--nodes K: this node's columns of the (steps, global batch) plan, the rows its devices train
    (node r feeds the r-th 1/K of every global batch, as Keras' multi-process input expects)."""
    if options.nodes == 1:
        return index
    per = index.shape[1] // options.nodes
    r = options.extra["node_rank"]
    return index[:, r * per:(r + 1) * per]


def predict_on_nodes(model, x, batch: int):
    """--nodes K: eval logits of x on this node. model.predict cannot gather outputs that live on
    other processes' devices, so every node feeds the whole of x as its share of a K-times larger
    batch, and reads back the rows on its own devices: its own x's logits."""
    import jax
    import numpy as np

    dist = keras.distribution.distribution()
    trainable = [v.value for v in model.trainable_variables]
    rest = [v.value for v in model.non_trainable_variables]
    forward = jax.jit(lambda t, n, xb: model.stateless_call(t, n, xb, training=False)[0])
    out = []
    for i in range(0, len(x), batch):
        xb = np.asarray(x[i:i + batch])
        sharding = dist.get_data_layout(xb.shape).backend_layout  # rows split over every node's devices
        logits = forward(trainable, rest, jax.make_array_from_process_local_data(sharding, xb))
        shards = sorted(logits.addressable_shards, key=lambda s: s.index[0].start or 0)
        out.append(np.concatenate([np.asarray(s.data) for s in shards]))
    return np.concatenate(out).astype(np.float32)
