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
MULTI_NODE = {("python", "pytorch")}  # torchrun rendezvous; jax.distributed is not wired in yet
XLA_HOST_DEVICES = {("python", "jax", None), ("python", "keras", "jax")}  # N CPU replicas = N XLA host devices
XLA_DEVICES_FLAG = "--xla_force_host_platform_device_count"


def _key(impl) -> tuple:
    return impl.lang, impl.name, impl.backend


def engine(impl) -> str | None:
    return ENGINES.get(_key(impl), (None,))[0]


def setups(impl) -> str:
    """The `list` column: the device setups an implementation supports."""
    if (impl.lang, impl.name) in MULTI_NODE:
        return "1 device; N GPUs (DDP); K nodes (torchrun)"
    if engine(impl):
        return f"1 device; N GPUs ({ENGINES[_key(impl)][1]})"
    return "1 device"


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
    if nodes > 1:
        for impl in impls or []:
            if (impl.lang, impl.name) not in MULTI_NODE:
                raise UsageError(f"--nodes {nodes}: {impl.label} has no multi-node launch here; "
                                 "choices: --framework pytorch")
        if not getattr(args, "rdzv_endpoint", None):
            raise UsageError(f"--nodes {nodes} needs --rdzv-endpoint HOST:PORT (the same on every node)")


def replicas(options: dict) -> int:
    return options["gpus"] * options.get("nodes", 1)


def uses_torchrun(impl, options: dict) -> bool:
    return (impl.lang, impl.name) == ("python", "pytorch") and replicas(options) > 1


def launch(impl, options: dict, python: str, worker_args: list[str]) -> tuple[list[str], dict]:
    """The worker's command line and extra environment for this set-up."""
    worker = [str(python), "-m", "harness.worker", *worker_args]
    gpus = options["gpus"]
    if replicas(options) == 1:
        return worker, {}
    if not uses_torchrun(impl, options):  # one process: the framework places the replicas itself
        env = {}
        if options["device"] == "cpu" and _key(impl) in XLA_HOST_DEVICES:  # N XLA host devices, set before JAX starts
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
