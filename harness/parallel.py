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
# (lang, framework, backend) -> (the engine, the `list` column's short name)
ENGINES = {("python", "pytorch", None): ("torchrun + DistributedDataParallel", "DDP"),
           ("python", "jax", None): ("jax.sharding device mesh", "mesh"),
           ("python", "tensorflow", None): ("tf.distribute.MirroredStrategy", "MirroredStrategy"),
           ("python", "keras", "tensorflow"): ("tf.distribute.MirroredStrategy", "MirroredStrategy"),
           ("python", "keras", "jax"): ("keras.distribution.DataParallel", "DataParallel"),
           ("python", "mxnet", None): ("Gluon contexts + kvstore 'device'", "Gluon kvstore")}
# (lang, framework, backend) -> the multi-node launch, what each node's command must name, and
# the function ("module:name") that joins the nodes in the worker, right after the framework's
# import and before its first device query (torchrun joins them itself)
MULTI_NODE = {("python", "pytorch", None): ("torchrun c10d rendezvous", ("rdzv_endpoint",), None),
              ("python", "jax", None): ("jax.distributed", ("rdzv_endpoint", "node_rank"),
                                        "python_models.jax.parallel:join_nodes"),
              ("python", "keras", "jax"): ("keras.distribution.initialize (jax.distributed)",
                                           ("rdzv_endpoint", "node_rank"), "python_models.keras.distributed:join_nodes"),
              ("python", "tensorflow", None): ("MultiWorkerMirroredStrategy (TF_CONFIG)", ("workers", "node_rank"),
                                               "python_models.tensorflow.distributed:join_nodes")}
FLAGS = {"rdzv_endpoint": "--rdzv-endpoint HOST:PORT (node 0's address, the same on every node)",
         "node_rank": "--node-rank R (0 on the node given as the endpoint, then 1 .. K-1)",
         "workers": "--workers HOST:PORT,... (one per node, in node-rank order, the same on every node)"}
XLA_HOST_DEVICES = {("python", "jax", None), ("python", "keras", "jax")}  # N CPU replicas = N XLA host devices
XLA_DEVICES_FLAG = "--xla_force_host_platform_device_count"


def _key(impl) -> tuple:
    return impl.lang, impl.name, impl.backend


def engine(impl) -> str | None:
    return ENGINES.get(_key(impl), (None,))[0]


def setups(impl) -> str:
    """The `list` column: the device setups an implementation supports."""
    if not engine(impl):
        return "1 device"
    out = f"1 device; N GPUs ({ENGINES[_key(impl)][1]})"
    if _key(impl) in MULTI_NODE:
        out += f"; K nodes ({MULTI_NODE[_key(impl)][0].split(' (')[0]})"
    return out


def _multi_node_choices() -> str:
    return ", ".join(f"{f}[{b}]" if b else f for _, f, b in MULTI_NODE)


def _choices() -> str:
    return ", ".join(f"{f}[{b}]" if b else f for _, f, b in ENGINES)


def check(args, impls) -> None:
    """Clear errors for set-ups an implementation cannot run; bad values raise UsageError."""
    from harness.errors import UsageError

    nodes = getattr(args, "nodes", 1)
    if args.gpus > 1 or nodes > 1:
        what = f"--gpus {args.gpus}" if args.gpus > 1 else f"--nodes {nodes}"
        for impl in impls or []:
            if (impl.lang, impl.name) == ("python", "keras") and engine(impl) is None:
                raise UsageError(f"{what}: Keras 3 has no data-parallel path on the {impl.backend} "
                                 "backend; choices: --backend tensorflow (MirroredStrategy), --backend jax "
                                 "(DataParallel)")
            if (impl.lang, impl.name) == ("r", "keras"):
                raise UsageError(f"{what}: {impl.label} trains in its own R loop "
                                 "(r_models/keras/train.R), which has no multi-device path; "
                                 "choices: --lang python --framework keras --backend tensorflow|jax")
            if engine(impl) is None:
                raise UsageError(f"{what}: {impl.label} has no multi-device path; "
                                 f"data-parallel frameworks: {_choices()}")
    rank = getattr(args, "node_rank", None)
    if rank is not None and rank >= nodes:
        raise UsageError(f"--node-rank {rank}: choices with --nodes {nodes}: 0 .. {nodes - 1}")
    if nodes == 1:
        return
    for impl in impls or []:
        if _key(impl) not in MULTI_NODE:
            raise UsageError(f"--nodes {nodes}: {impl.label} has no multi-node launch here; "
                             f"choices: {_multi_node_choices()}")
        for need in MULTI_NODE[_key(impl)][1]:
            if getattr(args, need, None) is None:
                raise UsageError(f"--nodes {nodes} with {impl.label} needs {FLAGS[need]}")
        workers = getattr(args, "workers", None)
        if "workers" in MULTI_NODE[_key(impl)][1] and len(workers) != nodes:
            raise UsageError(f"--workers names {len(workers)} address(es) ({','.join(workers)}); "
                             f"--nodes {nodes} needs one per node")
        if "workers" in MULTI_NODE[_key(impl)][1] and args.gpus > 1 and args.device == "cpu":
            raise UsageError(f"--nodes {nodes} --gpus {args.gpus}: TensorFlow's multi-worker strategy "
                             "runs one CPU replica per node; choices on cpu: --gpus 1")


def replicas(options: dict) -> int:
    return options["gpus"] * options.get("nodes", 1)


_LEAVE: list = []  # what each joined framework does before this process may exit


def join_nodes(impl, options) -> None:
    """In the worker (harness.runtimes.python), for --nodes K: the framework joins the other nodes.
    The join function returns how to leave them again (leave_nodes)."""
    join = MULTI_NODE.get(_key(impl), (None, None, None))[2]
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
    return (impl.lang, impl.name) == ("python", "pytorch") and replicas(options) > 1


def launch(impl, options: dict, python: str, worker_args: list[str]) -> tuple[list[str], dict]:
    """The worker's command line and extra environment for this set-up."""
    worker = [str(python), "-m", "harness.worker", *worker_args]
    gpus = options["gpus"]
    if replicas(options) == 1:
        return worker, {}
    if not uses_torchrun(impl, options):  # one process per node: the framework places the replicas itself
        env = {}
        if options.get("nodes", 1) > 1 and _key(impl) == ("python", "tensorflow", None):
            env["TF_CONFIG"] = tf_config(options)
        if options["device"] == "cpu" and gpus > 1 and _key(impl) in XLA_HOST_DEVICES:  # N XLA host devices, set before JAX starts
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
