"""Keras data parallel, with the backend's own engine; the harness's global batches, split over replicas.

TensorFlow backend: tf.distribute.MirroredStrategy (the same strategy as the raw TF trainer:
python_models/tensorflow/distributed.py; N logical CPU devices with --device cpu). JAX backend:
keras.distribution.DataParallel, a 1-D mesh of N jax devices (with --device cpu the harness sets
XLA_FLAGS=--xla_force_host_platform_device_count=N before JAX starts). Torch backend: none here
(Keras 3 offers no data-parallel path for it); --gpus > 1 is refused.

Weak scaling (default): the harness's rows are global batches of spec batch x N and the learning
rate is multiplied by N (KerasTrainer); --scaling strong keeps the spec's global batch.
"""
from __future__ import annotations

import keras

from harness.protocol import setup_record


def distribute(options) -> None:
    """--gpus N: every variable the model builds afterwards is mirrored/replicated over N devices.

    TensorFlow backend: tf.distribute.MirroredStrategy, set as the current strategy (the model
    files build the model right after setup(), outside any `with strategy.scope()`); model.fit
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
        kind = "gpu" if options.device == "cuda" else "cpu"
        found = keras.distribution.list_devices(kind) if n > 1 else []
        if n > 1 and len(found) < n:
            raise RuntimeError(f"--gpus {n}: JAX sees {len(found)} {kind} device(s) (on cpu the harness "
                               "sets XLA_FLAGS=--xla_force_host_platform_device_count)")
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=found[:n]) if n > 1 else None)
    elif n > 1:
        raise ValueError(f"--gpus {n}: Keras on the {backend} backend has no data-parallel path here; "
                         "choices: --backend tensorflow (MirroredStrategy) or jax (DataParallel)")


def setup_info(options) -> dict:
    """The device setup a result records (the same fields as the PyTorch and JAX trainers')."""
    backend, n = keras.backend.backend(), options.gpus
    engine = ("one process" if n == 1 else "tf.distribute.MirroredStrategy" if backend == "tensorflow"
              else "keras.distribution.DataParallel (jax mesh)")
    if backend == "jax" and n > 1:
        devices = [str(d) for d in keras.distribution.distribution().device_mesh.devices.ravel()]
    elif backend == "tensorflow" and n > 1:
        import tensorflow as tf
        devices = list(tf.distribute.get_strategy().extended.worker_devices)
    else:
        devices = [options.device]
    return setup_record(options, engine, devices, n)
