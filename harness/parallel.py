"""Device setups: which implementations train data-parallel, and how their workers are launched.

The harness never brings its own communication layer; each framework's own engine does the work:

  python/pytorch   DistributedDataParallel, one process per replica, started by torchrun
                   (`python -m torch.distributed.run`): NCCL on GPUs, gloo on CPU. Several
                   machines: torchrun's c10d rendezvous (--nodes K --rdzv-endpoint HOST:PORT).
  python/jax       one process, a 1-D device mesh: the batch axis sharded (NamedSharding),
                   parameters replicated; XLA inserts the gradient all-reduce.
  python/tensorflow  one process, tf.distribute.MirroredStrategy: variables mirrored, the step run
                   per replica by strategy.run, gradients all-reduced by the strategy (NCCL).
  python/keras     tensorflow backend: the same MirroredStrategy; jax backend:
                   keras.distribution.DataParallel (a jax mesh). No path on the torch backend.
  python/mxnet     one process, Gluon over N contexts: split_and_load of each global batch,
                   gluon.Trainer's kvstore 'device' sums the gradients.
  r/keras          none: its trainer is written in R (r_models/keras/train.R), not Python Keras'.

Several machines (`--nodes K`, the same command on every node), each engine's own launch:

  python/pytorch   torchrun's c10d rendezvous at --rdzv-endpoint HOST:PORT; torchrun assigns the
                   ranks, and the node whose torchrun gets rank 0 writes the record.
  python/jax       jax.distributed.initialize(coordinator --rdzv-endpoint, K processes, process
  python/keras[jax]  id --node-rank): one process per node, the mesh spans every node's devices
                   (keras.distribution.initialize for Keras); CPU collectives over gloo.
  python/tensorflow  tf.distribute.MultiWorkerMirroredStrategy; the harness writes TF_CONFIG
                   from --workers HOST:PORT,... (one per node, node r listens on the r-th) and
                   --node-rank. NCCL on GPUs, RING (gRPC) on CPU.
  Node --node-rank 0 writes the record; the others report that they ran as replicas.

`--device cpu --gpus N` runs N CPU replicas (gloo processes, N XLA host devices, N logical
TensorFlow CPU devices, or N MXNet cpu contexts), for testing the data-parallel path on a machine
without GPUs.

Epoch order: with weak scaling (default) the harness cuts its seeded permutation into global
batches of batch x N rows and replica r trains on the r-th slice of each row; the learning rate is
multiplied by N. With --scaling strong the global batch is the spec's, each replica gets batch / N
rows, and the learning rate is unchanged.
"""
from __future__ import annotations

import os

SCALINGS = ("weak", "strong")
# what each node's command must name, per flag a MultiNode (harness.registry) needs
FLAGS = {"rdzv_endpoint": "--rdzv-endpoint HOST:PORT (node 0's address, the same on every node)",
         "node_rank": "--node-rank R (0 on the node given as the endpoint, then 1 .. K-1)",
         "workers": "--workers HOST:PORT,... (one per node, in node-rank order, the same on every node)"}
XLA_DEVICES_FLAG = "--xla_force_host_platform_device_count"


def engine(impl) -> str | None:
    return impl.multi_device.engine if impl.multi_device else None


def supported_setups(impl) -> str:
    """The `list` column: the device setups an implementation supports."""
    if not impl.multi_device:
        return "1 device"
    out = f"1 device; N GPUs ({impl.multi_device.short})"
    if impl.multi_node:
        out += f"; K nodes ({impl.multi_node.launch.split(' (')[0]})"
    return out


def _choices(kind: str) -> str:
    from harness.registry import IMPLEMENTATIONS

    found = [i.short for i in IMPLEMENTATIONS if getattr(i, kind)]
    return ", ".join(dict.fromkeys(found))


def check(setup, impls) -> None:
    """Clear errors for set-ups (harness.requests.DeviceSetup) an implementation cannot run."""
    from harness.errors import UsageError

    nodes = setup.nodes
    if setup.gpus > 1 or nodes > 1:
        what = f"--gpus {setup.gpus}" if setup.gpus > 1 else f"--nodes {nodes}"
        for impl in impls or []:
            if impl.multi_device:
                continue
            why = impl.framework.no_multi_device.format(label=impl.label, backend=impl.backend)
            raise UsageError(f"{what}: {why}" if why else
                             f"{what}: {impl.label} has no multi-device path; "
                             f"data-parallel frameworks: {_choices('multi_device')}")
    if setup.node_rank is not None and setup.node_rank >= nodes:
        raise UsageError(f"--node-rank {setup.node_rank}: choices with --nodes {nodes}: 0 .. {nodes - 1}")
    if nodes == 1:
        return
    for impl in impls or []:
        launch = impl.multi_node
        if launch is None:
            raise UsageError(f"--nodes {nodes}: {impl.label} has no multi-node launch here; "
                             f"choices: {_choices('multi_node')}")
        for need in launch.needs:
            if getattr(setup, need) is None:
                raise UsageError(f"--nodes {nodes} with {impl.label} needs {FLAGS[need]}")
        if "workers" in launch.needs and len(setup.workers) != nodes:
            raise UsageError(f"--workers names {len(setup.workers)} address(es) ({','.join(setup.workers)}); "
                             f"--nodes {nodes} needs one per node")
        if launch.one_cpu_replica and setup.gpus > 1 and setup.device == "cpu":
            raise UsageError(f"--nodes {nodes} --gpus {setup.gpus}: {launch.launch.split(' (')[0]} runs one CPU "
                             "replica per node; choices on cpu: --gpus 1")


def replicas(options: dict) -> int:
    return options["gpus"] * options.get("nodes", 1)


_LEAVE: list = []  # what each joined framework does before this process may exit


def join_nodes(impl, options) -> None:
    """In the worker (harness.runtimes.python), for --nodes K: the framework joins the other nodes.
    The join function returns how to leave them again (leave_nodes)."""
    join = impl.multi_node.join if impl.multi_node else None
    if options.nodes > 1 and join:
        import importlib

        module, name = join.split(":")
        leave = getattr(importlib.import_module(module), name)(options)
        if leave is not None:
            _LEAVE.append(leave)


def leave_nodes() -> None:
    """In the worker, once its result is sent: wait until every node has sent its own. Node 0
    hosts JAX's coordination service (TensorFlow's leader); exiting before the others have
    finished would make theirs abort their run."""
    while _LEAVE:
        _LEAVE.pop()()


def node_rank(options: dict) -> int | None:
    """This node's place among --nodes (given by --node-rank; torchrun assigns its own)."""
    return (options.get("extra") or {}).get("node_rank")


def tf_config(options: dict) -> str:
    """TF_CONFIG for tf.distribute's multi-worker strategies: every node's worker, and this one."""
    import json

    extra = options["extra"]
    return json.dumps({"cluster": {"worker": list(extra["workers"])},
                       "task": {"type": "worker", "index": extra["node_rank"]}})


def uses_torchrun(impl, options: dict) -> bool:
    return bool(impl.multi_device and impl.multi_device.torchrun) and replicas(options) > 1


def launch(impl, options: dict, python: str, worker_args: list[str]) -> tuple[list[str], dict]:
    """The worker's command line and extra environment for this set-up."""
    worker = [str(python), "-m", "harness.worker", *worker_args]
    gpus = options["gpus"]
    if replicas(options) == 1:
        return worker, {}
    if not uses_torchrun(impl, options):  # one process per node: the framework places the replicas itself
        env = {}
        if options.get("nodes", 1) > 1 and impl.multi_node and impl.multi_node.tf_config:
            env["TF_CONFIG"] = tf_config(options)
        if options["device"] == "cpu" and gpus > 1 and impl.multi_device and impl.multi_device.xla_host_devices:  # N XLA host devices, set before JAX starts
            flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(XLA_DEVICES_FLAG)]
            env["XLA_FLAGS"] = " ".join([*flags, f"{XLA_DEVICES_FLAG}={gpus}"])
        return worker, env
    run = [str(python), "-m", "torch.distributed.run", f"--nproc-per-node={gpus}"]
    nodes = options.get("nodes", 1)
    if nodes == 1:
        run.append("--standalone")
    else:
        extra = options.get("extra") or {}
        run += [f"--nnodes={nodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={extra['rdzv_endpoint']}",
                f"--rdzv-id={extra.get('rdzv_id', 'dl-rosetta')}"]
    env = {} if options["device"] == "cuda" else {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return [*run, "-m", "harness.worker", *worker_args], env
