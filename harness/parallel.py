"""Device setups: which implementations train data-parallel, and how their workers are launched.

The harness never brings its own communication layer; each framework's own engine does the work:

  python/pytorch   DistributedDataParallel, one process per replica, started by torchrun
                   (`python -m torch.distributed.run`): NCCL on GPUs, gloo on CPU. Several
                   machines: torchrun's c10d rendezvous (--nodes K --rdzv-endpoint HOST:PORT).
  python/jax       one process, a 1-D device mesh: the batch axis sharded (NamedSharding),
                   parameters replicated; XLA inserts the gradient all-reduce.

`--device cpu --gpus N` runs N CPU replicas (gloo processes, or N XLA host devices), for testing
the data-parallel path on a machine without GPUs.

Epoch order: with weak scaling (default) the harness cuts its seeded permutation into global
batches of batch x N rows and replica r trains on the r-th slice of each row; the learning rate is
multiplied by N. With --scaling strong the global batch is the spec's, each replica gets batch / N
rows, and the learning rate is unchanged.
"""
from __future__ import annotations

import os

SCALINGS = ("weak", "strong")
ENGINES = {("python", "pytorch"): "torchrun + DistributedDataParallel",
           ("python", "jax"): "jax.sharding device mesh"}
MULTI_NODE = {("python", "pytorch")}  # torchrun rendezvous; jax.distributed is not wired in yet
XLA_DEVICES_FLAG = "--xla_force_host_platform_device_count"


def engine(impl) -> str | None:
    return ENGINES.get((impl.lang, impl.name))


def setups(impl) -> str:
    """The `list` column: the device setups an implementation supports."""
    if (impl.lang, impl.name) in MULTI_NODE:
        return "1 device; N GPUs (DDP); K nodes (torchrun)"
    if engine(impl):
        return "1 device; N GPUs (mesh)"
    return "1 device"


def check(args, impls) -> None:
    """Clear errors for set-ups an implementation cannot run; bad values raise UsageError."""
    from harness.errors import UsageError

    nodes = getattr(args, "nodes", 1)
    if args.gpus > 1 or nodes > 1:
        for impl in impls or []:
            if engine(impl) is None:
                raise UsageError(f"--gpus {args.gpus}: {impl.label} has no multi-device path; "
                                 f"data-parallel frameworks: {', '.join(f for _, f in ENGINES)}")
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
    if not uses_torchrun(impl, options):
        env = {}
        if options["device"] == "cpu":  # N XLA host devices in one process
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
