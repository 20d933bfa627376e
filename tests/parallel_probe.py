"""One data-parallel step and the same step in one process, for tests/test_parallel.py.

    torchrun --nproc-per-node=2 tests/parallel_probe.py torch OUT   each replica writes OUT/rank{r}.npz
    python tests/parallel_probe.py torch-single OUT                 one process, the same global batches
    python tests/parallel_probe.py jax OUT                          needs 2 XLA host devices (XLA_FLAGS)
    python tests/parallel_probe.py tensorflow OUT                   MirroredStrategy, 2 logical CPU devices
    python tests/parallel_probe.py keras-jax OUT                    DataParallel, needs 2 XLA host devices
    python tests/parallel_probe.py keras-tensorflow OUT             MirroredStrategy, 2 logical CPU devices
    .venv-legacy/bin/python tests/parallel_probe.py mxnet OUT       Gluon over cpu(0), cpu(1)

The one-process kinds write OUT/KIND.npz: losses2/losses1 (two replicas / one device, per step),
identical (every replica's copy of every variable the same bytes), max_diff (largest weight
difference after the steps) and moved (smallest change of a weight tensor from its start).

Two nodes on this machine, each process one node (--nodes 2 --node-rank R), and the same global
batches in one process:

    python tests/parallel_probe.py nodes-KIND OUT RANK ADDRESS[,ADDRESS]   writes OUT/nodes-KIND-rank{R}.npz
    python tests/parallel_probe.py single-KIND OUT                         writes OUT/single-KIND-rank0.npz

KIND is jax, keras-jax (ADDRESS: the coordinator) or tensorflow (one worker address per node,
written into TF_CONFIG as the harness does). Each file holds the per-step losses, the weights
after the steps and `moved`.

The step runs with --scaling strong and dropout off, so the data-parallel step must equal the
one-process step on the same global batch.
"""
from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness.protocol import RunOptions  # noqa: E402
from harness.specs import get_spec  # noqa: E402

GLOBAL_BATCH, STEPS = 8, 2


def data():
    rng = np.random.default_rng(0)
    x = rng.random((GLOBAL_BATCH * STEPS, 3, 32, 32), dtype=np.float32)
    y = rng.integers(0, 10, GLOBAL_BATCH * STEPS).astype(np.int64)
    rows = rng.permutation(GLOBAL_BATCH * STEPS).reshape(STEPS, GLOBAL_BATCH).astype(np.int64)
    return x, y, rows


def train(module, gpus: int, layout: str = "NCHW", init: dict | None = None, options: RunOptions | None = None):
    x, y, rows = data()
    if layout == "NHWC":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    trainer = module.build(get_spec("cnn"), options or RunOptions(gpus=gpus, scaling="strong", dropout=False))
    if init is not None:  # the one-device run starts from the replicas' starting weights
        trainer.set_weights(init)
    trainer.init = trainer.get_weights()
    trainer.fit_data(x, y)
    losses = np.asarray(trainer.train_epoch(rows))
    return trainer, losses


def main(kind: str, out: str) -> None:
    if kind.startswith("torch"):
        from python_models.pytorch import cnn
        gpus = int(os.environ.get("WORLD_SIZE", "1"))
        from python_models.pytorch import trainer as torch_trainer
        seen = []  # (rows, sum of pixels) of each step's inputs on this replica
        inputs = torch_trainer.TorchTrainer._inputs
        torch_trainer.TorchTrainer._inputs = lambda self, xb: (seen.append((len(xb), float(xb.double().sum()))),
                                                               inputs(self, xb))[1]
        trainer, losses = train(cnn, gpus)
        rank = int(os.environ.get("RANK", "0"))
        np.savez(os.path.join(out, f"{kind}-rank{rank}.npz"), losses=losses, seen=np.array(seen),
                 moved=min(float(np.abs(trainer.init[k] - v).max()) for k, v in trainer.get_weights().items()
                           if k.endswith("weight")), **trainer.get_weights())
        return
    if kind.startswith(("nodes-", "single-")):
        return nodes(kind, out, *sys.argv[3:])
    if kind != "jax":
        return one_process(kind, out)
    import jax

    from python_models.jax import cnn
    mesh, losses2 = train(cnn, 2, "NHWC")
    single, losses1 = train(cnn, 1, "NHWC")
    # every device's copy of every parameter, as bytes: replicas must hold identical weights
    copies = [[np.asarray(s.data).tobytes() for s in leaf.addressable_shards] for leaf in jax.tree.leaves(mesh.state[0])]
    identical = all(len(c) == 2 and c[0] == c[1] for c in copies) and len(mesh.x.sharding.device_set) == 2
    w2, w1 = mesh.get_weights(), single.get_weights()
    np.savez(os.path.join(out, "jax.npz"), losses2=losses2, losses1=losses1, identical=identical,
             max_diff=max(float(np.abs(w2[k] - w1[k]).max()) for k in w1),
             moved=min(float(np.abs(w1[k] - v).max()) for k, v in single.init.items() if k.endswith("weight")))



def copies(kind: str, trainer) -> list[list[bytes]]:
    """Every replica's copy of every variable, as bytes."""
    if kind == "tensorflow":  # MirroredVariables: one component per device
        return [[c.numpy().tobytes() for c in v.values] for v in trainer.model.variables]
    if kind == "keras-tensorflow":
        return [[c.numpy().tobytes() for c in v.value.values] for v in trainer.model.weights]
    if kind == "keras-jax":  # replicated jax.Arrays: one shard per device
        return [[np.asarray(s.data).tobytes() for s in v.value.addressable_shards] for v in trainer.model.weights]
    return [[a.asnumpy().tobytes() for a in p.list_data()] for p in trainer.params.values()]  # mxnet


def one_process(kind: str, out: str) -> None:
    """Two replicas in this process, then one device on the same global batches and start weights."""
    if kind.startswith("keras-"):
        os.environ["KERAS_BACKEND"] = kind.split("-", 1)[1]  # before keras is imported
        from python_models.keras import cnn
    elif kind == "tensorflow":
        from python_models.tensorflow import cnn
    else:
        from python_models.mxnet import cnn
    layout = "NCHW" if kind == "mxnet" else "NHWC"
    two, losses2 = train(cnn, 2, layout)
    one, losses1 = train(cnn, 1, layout, init=two.init)
    every = copies(kind, two)
    identical = all(len(c) == 2 and c[0] == c[1] for c in every)
    w2, w1 = two.get_weights(), one.get_weights()
    np.savez(os.path.join(out, f"{kind}.npz"), losses2=losses2, losses1=losses1, identical=identical,
             replicas=two.info["setup"]["replicas"], engine=two.info["setup"]["engine"],
             max_diff=max(float(np.abs(w2[k] - w1[k]).max()) for k in w1),
             moved=min(float(np.abs(w1[k] - v).max()) for k, v in one.init.items() if k.endswith("weight")))


def nodes(kind: str, out: str, rank: str = "0", address: str = "") -> None:
    """One node of a two-node run (nodes-KIND), or the same global batches in one process (single-KIND)."""
    from harness import parallel
    from harness.registry import select

    role, name = kind.split("-", 1)
    framework, _, backend = name.partition("-")
    if framework == "keras":
        os.environ["KERAS_BACKEND"] = backend  # before keras is imported
    (impl,) = select("python", framework, backend or None, "cnn")
    options = RunOptions(scaling="strong", dropout=False)
    if role == "nodes":
        addresses = address.split(",")
        extra = {"node_rank": int(rank), **({"workers": addresses} if framework == "tensorflow"
                                            else {"rdzv_endpoint": addresses[0]})}
        options = RunOptions(scaling="strong", dropout=False, nodes=2, extra=extra)
        if framework == "tensorflow":
            os.environ["TF_CONFIG"] = parallel.tf_config(options.to_dict())  # as harness.parallel.launch does
        parallel.join_nodes(impl, options)  # as the worker does, right after the import
    module = __import__(impl.entry, fromlist=["build"])
    trainer, losses = train(module, 1, "NHWC", options=options)
    weights = trainer.get_weights()
    if role == "nodes" and rank == "1":
        import time
        time.sleep(3)  # the slower node: node 0 must not leave (and take the coordinator) before it is done
    np.savez(os.path.join(out, f"{kind}-rank{rank}.npz"), losses=losses, replicas=trainer.info["setup"]["replicas"],
             moved=min(float(np.abs(trainer.init[k] - v).max()) for k, v in weights.items() if k.endswith("weight")),
             **weights)
    if role == "nodes":  # as harness.worker ends: leave the other nodes, then exit without teardown
        parallel.leave_nodes()
        sys.stdout.flush()
        os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
