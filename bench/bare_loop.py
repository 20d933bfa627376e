"""A plain PyTorch training script, the baseline a user would write without the harness.

    .venv/bin/python bench/bare_loop.py FOLDER [--model cnn] [--samples 2048] [--epochs 3] [--seed 0]
        [--like imports,mmap,progress,trainer] [--fingerprint]

It loads the prepared arrays of FOLDER (the harness's synthetic bytes, `FOLDER/x_train.npy` ...)
with np.load into memory, builds the same nn.Module and optimiser the harness trains
(python_models.pytorch.<model>.build: the same init for the same seed), visits each epoch in the
harness's order (the same seeded permutation) and times each epoch with one monotonic clock. It
prints one JSON line: {"epochs": [{"epoch", "seconds", "loss"}], "threads", "fingerprint"?}.

bench/harness_overhead.py starts it in a fresh process beside the harness's own worker. `--like`
adds one thing the worker does differently at a time, to find what a difference comes from:
  imports   import harness.worker first (everything the worker process imports before torch)
  mmap      open the arrays as the worker does (np.load(mmap_mode="r")), copied by np.array as the
            harness's PyTorch trainer copies them
  progress  report progress as the worker does: a JSON line to a pipe (fd from
            $BARE_PROGRESS_FD) at most every 0.5 s, and one per epoch
  trainer   train with the harness's own trainer (TorchTrainer.train_epoch over harness.protocol.
            Batches) instead of the plain loop below
The process environment (new session, PYTHONUNBUFFERED, stdin) is the caller's to set.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path

LIKE = ("imports", "mmap", "progress", "trainer")


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def fingerprint() -> dict:
    """This process's state where a worker and a plain script could differ: threads, affinity,
    priority, floating-point flags, allocator, huge pages, loaded libraries, modules, environment."""
    import numpy as np
    import torch

    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    libs = sorted({Path(line.split()[-1]).name for line in Path("/proc/self/maps").read_text().splitlines()
                   if ".so" in line and "/" in line})
    keep = ("omp", "mkl", "blas", "gomp", "malloc", "jemalloc", "tcmalloc", "torch_cpu", "c10", "dnnl")
    tiny = np.float32(1e-39)  # a subnormal: flushed to 0 under FTZ/DAZ
    with np.errstate(all="ignore"):
        numpy_flush = bool(np.float32(tiny * np.float32(1.0)) == 0)
    torch_flush = bool((torch.tensor([1e-39], dtype=torch.float32) * 1.0).item() == 0.0)
    env_keys = ("OMP", "MKL", "KMP", "GOMP", "OPENBLAS", "MALLOC", "LD_PRELOAD", "PYTHON", "TORCH", "DNNL", "ONEDNN")
    return {
        "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
        "os_threads": int(status.get("Threads", "0").strip() or 0),
        "affinity": sorted(os.sched_getaffinity(0)), "nice": os.nice(0),
        "session_leader": os.getsid(0) == os.getpid(),  # a session of its own: an autogroup of its own, where
        "autogroup_scheduling": _read("/proc/sys/kernel/sched_autogroup_enabled"),  # on, CPU is shared per group
        "flush_denormal_numpy": numpy_flush, "flush_denormal_torch": torch_flush,
        "thp": status.get("THP_enabled", "").strip(),
        "libraries": [lib for lib in libs if any(k in lib.lower() for k in keep)],
        "modules": len(sys.modules), "stdin_is_tty": os.isatty(0),
        "environment": {k: v for k, v in sorted(os.environ.items()) if k.startswith(env_keys)},
        "parallel_info": torch.__config__.parallel_info().splitlines(),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path, help="a prepared data folder (harness.data)")
    p.add_argument("--model", default="cnn", choices=("cnn", "resnet50", "rnn"))
    p.add_argument("--samples", type=int, default=None)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--like", default="", help=f"comma-separated: {', '.join(LIKE)}")
    p.add_argument("--fingerprint", action="store_true", help="add this process's state to the output")
    args = p.parse_args()
    like = set(filter(None, args.like.split(",")))
    if like - set(LIKE):
        p.error(f"--like {','.join(sorted(like - set(LIKE)))}: choices are {', '.join(LIKE)}")

    if "imports" in like:
        import harness.worker  # noqa: F401 - what the worker has imported before the framework

    import numpy as np
    import torch
    import torch.nn.functional as F

    from harness.protocol import RunOptions
    from harness.specs import get_spec

    # ---- the data, as a user loads it (or as the worker opens it: --like mmap)
    mode = "r" if "mmap" in like else None
    x = np.load(args.folder / "x_train.npy", mmap_mode=mode)[:args.samples]
    y = np.load(args.folder / "y_train.npy", mmap_mode=mode)[:args.samples]
    if mode:
        x, y = torch.as_tensor(np.array(x)), torch.as_tensor(np.array(y))  # the harness trainer's copy
    else:
        x, y = torch.from_numpy(x), torch.from_numpy(y)

    # ---- the model and optimiser the harness trains (same class, same init for the same seed)
    spec = get_spec(args.model)
    trainer = importlib.import_module(f"python_models.pytorch.{args.model}").build(spec, RunOptions(seed=args.seed))
    model, optimizer = trainer.model, trainer.optimizer
    n, bs = len(x), args.batch_size

    progress = os.fdopen(int(os.environ["BARE_PROGRESS_FD"]), "w", buffering=1) if "progress" in like else None

    def send(**event):
        progress.write(json.dumps(event) + "\n")
        progress.flush()

    epochs = []
    for epoch in range(args.epochs):
        # the harness's order: a seeded permutation cut into full batches
        perm = np.random.default_rng([args.seed, epoch]).permutation(n)
        index = perm[: n // bs * bs].reshape(n // bs, bs).astype(np.int64)
        if "trainer" in like:
            from harness.protocol import Batches

            report = (lambda b, of, e=epoch: send(event="progress", epoch=e, batch=b, of=of)) if progress else None
            trainer.x, trainer.y = x, y
            t = time.monotonic()
            losses = trainer.train_epoch(Batches(index, report=report))
            seconds = time.monotonic() - t
            loss = float(np.mean(losses))
        else:
            t = time.monotonic()
            last, total = time.monotonic(), 0.0
            model.train()
            for i, idx in enumerate(torch.from_numpy(index)):
                out = model(x[idx])
                step_loss = F.cross_entropy(out, y[idx])
                optimizer.zero_grad(set_to_none=True)
                step_loss.backward()
                optimizer.step()
                total += step_loss.item()
                if progress is not None and time.monotonic() - last >= 0.5:
                    send(event="progress", epoch=epoch, batch=i + 1, of=len(index))
                    last = time.monotonic()
            seconds = time.monotonic() - t
            loss = total / len(index)
        epochs.append({"epoch": epoch, "seconds": seconds, "loss": loss})
        if progress is not None:
            send(event="epoch", epoch=epoch, seconds=seconds)
        print(f"epoch {epoch}: {seconds:.3f} s, loss {loss:.4f}", file=sys.stderr)

    out = {"epochs": epochs, "like": sorted(like), "threads": torch.get_num_threads()}
    if args.fingerprint:
        out["fingerprint"] = fingerprint()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
