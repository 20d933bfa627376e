"""JAX data parallel: one process, a 1-D device mesh, the batch axis sharded, parameters replicated.

`--gpus N` puts N devices on a mesh axis named "data". Parameters, optimiser state and the training
arrays are replicated (NamedSharding with an empty PartitionSpec); each step's gathered batch is
constrained to be split along "data", so XLA's SPMD partitioner runs each device on its slice of
the global batch and inserts the gradient all-reduce itself. The step is the one-device step on
the whole global batch, so the loss equals the one-device loss (up to summation order) and the
replicas cannot drift apart. `--device cpu --gpus N` uses N XLA host devices
(XLA_FLAGS=--xla_force_host_platform_device_count=N, set by the harness before JAX is imported),
for testing the data-parallel path.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from harness.protocol import setup_record


class Placement:
    """Where arrays live: one device, or replicated over a mesh with batches split over it."""

    def __init__(self, options):
        kind = "gpu" if options.device == "cuda" else "cpu"
        try:
            found = jax.devices(kind)
        except RuntimeError as e:
            raise RuntimeError(f"--device {options.device}: JAX sees no {kind} device here ({e}); "
                               "install jax[cuda12]") from None
        if len(found) < options.gpus:
            hint = "" if kind == "gpu" else " (the harness sets XLA_FLAGS=--xla_force_host_platform_device_count)"
            raise RuntimeError(f"--gpus {options.gpus}: JAX sees {len(found)} {kind} device(s){hint}")
        self.devices = found[:options.gpus]
        self.replicas = len(self.devices)
        if self.replicas == 1:
            self.replicated = self.batch = self.devices[0]
            self.mesh = None
        else:
            self.mesh = Mesh(np.array(self.devices), ("data",))
            self.replicated = NamedSharding(self.mesh, PartitionSpec())
            self.batch = NamedSharding(self.mesh, PartitionSpec("data"))  # axis 0 split over the mesh

    def put(self, tree):
        return jax.device_put(tree, self.replicated)

    def shard_batch(self, a):
        """Inside the jitted step: split the global batch (axis 0) over the mesh."""
        if self.mesh is None:
            return a
        if a.shape[0] % self.replicas:
            raise ValueError(f"a global batch of {a.shape[0]} rows does not split over {self.replicas} devices; "
                             "pick --batch-size divisible by the device count (or --scaling weak)")
        return jax.lax.with_sharding_constraint(a, self.batch)

    def setup(self, options) -> dict:
        return setup_record(options, "one process" if self.mesh is None else "jax.sharding mesh (batch axis 'data')",
                            [getattr(d, "device_kind", d.platform) for d in self.devices], self.replicas)

    def peak_bytes(self) -> list | None:
        stats = [d.memory_stats() if d.platform != "cpu" else None for d in self.devices]
        if not any(stats):
            return None
        return [s.get("peak_bytes_in_use") if s else None for s in stats]
