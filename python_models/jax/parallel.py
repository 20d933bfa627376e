"""JAX data parallel: one process, a 1-D device mesh, the batch axis sharded, parameters replicated.

`--gpus N` puts N devices on a mesh axis named "data". Parameters, optimiser state and the training
arrays are replicated (NamedSharding with an empty PartitionSpec); each step's gathered batch is
constrained to be split along "data", so XLA's SPMD partitioner runs each device on its slice of
the global batch and inserts the gradient all-reduce itself. The step is the one-device step on
the whole global batch, so the loss equals the one-device loss (up to summation order) and the
replicas cannot drift apart. `--device cpu --gpus N` uses N XLA host devices
(XLA_FLAGS=--xla_force_host_platform_device_count=N, set by the harness before JAX is imported),
for testing the data-parallel path.

`--nodes K`: one process per node, joined by jax.distributed.initialize (coordinator: node 0's
--rdzv-endpoint, process id: --node-rank); the mesh spans every node's devices in process order,
so replica r (the r-th slice of each global batch) is device r % N of node r // N. Every process holds the same
replicated arrays (each node's harness prepared the same bytes) and runs the same jitted step;
XLA's collectives cross the nodes (NCCL on GPUs, gloo on CPU).
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from harness.protocol import setup_record


def join_nodes(options):
    """--nodes K: this process joins the others; the worker calls it before JAX's first device
    query (the registry row's MultiNode.join). Returns how to leave: jax.distributed.shutdown waits for
    every process, so node 0's coordination service outlives the others' runs."""
    if options.nodes == 1 or jax.distributed.is_initialized():
        return None
    if options.device == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(options.extra["rdzv_endpoint"], num_processes=options.nodes,
                               process_id=options.extra["node_rank"],
                               local_device_ids=list(range(options.gpus)) if options.device == "cuda" else None)
    return jax.distributed.shutdown


class Placement:
    """Where arrays live: one device, or replicated over a mesh with batches split over it."""

    def __init__(self, options):
        kind = "gpu" if options.device == "cuda" else "cpu"
        try:
            local = jax.local_devices(backend=kind)
        except RuntimeError as e:
            raise RuntimeError(f"--device {options.device}: JAX sees no {kind} device here ({e}); "
                               "install jax[cuda12]") from None
        if len(local) < options.gpus:
            hint = "" if kind == "gpu" else " (the harness sets XLA_FLAGS=--xla_force_host_platform_device_count)"
            raise RuntimeError(f"--gpus {options.gpus}: JAX sees {len(local)} {kind} device(s){hint}")
        # each process's first --gpus local devices, in process order (jax.devices() lists them so)
        per_process = {}
        for d in jax.devices(kind):
            per_process.setdefault(d.process_index, []).append(d)
        self.devices = [d for p in sorted(per_process) for d in per_process[p][:options.gpus]]
        self.local = [d for d in self.devices if d.process_index == jax.process_index()]
        self.replicas = len(self.devices)
        if self.replicas == 1:
            self.replicated = self.batch = self.devices[0]
            self.mesh = None
        else:
            self.mesh = Mesh(np.array(self.devices), ("data",))
            self.replicated = NamedSharding(self.mesh, PartitionSpec())
            self.batch = NamedSharding(self.mesh, PartitionSpec("data"))  # axis 0 split over the mesh

    def put(self, tree):
        if jax.process_count() == 1:
            return jax.device_put(tree, self.replicated)
        return jax.tree.map(self._replicate, tree)

    def _replicate(self, a):
        """Onto every node's devices: only from host memory, whose bytes are the same on every node."""
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):  # typed RNG keys travel as their uint32 data
            return jax.random.wrap_key_data(self._replicate(jax.random.key_data(a)), impl=jax.random.key_impl(a))
        return jax.device_put(np.asarray(a), self.replicated)

    def shard_batch(self, a):
        """Inside the jitted step: split the global batch (axis 0) over the mesh."""
        if self.mesh is None:
            return a
        if a.shape[0] % self.replicas:
            raise ValueError(f"a global batch of {a.shape[0]} rows does not split over {self.replicas} devices; "
                             "pick --batch-size divisible by the device count (or --scaling weak)")
        return jax.lax.with_sharding_constraint(a, self.batch)

    def setup(self, options) -> dict:
        engine = ("one process" if self.mesh is None else "jax.sharding mesh (batch axis 'data')"
                  + (f", jax.distributed over {jax.process_count()} processes" if jax.process_count() > 1 else ""))
        return setup_record(options, engine, [getattr(d, "device_kind", d.platform) for d in self.local], self.replicas)

    def barrier(self) -> None:
        """Every node starts an epoch's clock together."""
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices("dl-rosetta epoch")

    def peak_bytes(self) -> list | None:
        stats = [d.memory_stats() if d.platform != "cpu" else None for d in self.local]
        if not any(stats):
            return None
        return [s.get("peak_bytes_in_use") if s else None for s in stats]
