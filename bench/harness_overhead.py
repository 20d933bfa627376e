"""The harness's own overhead: per-epoch time through the harness vs a bare hand-written PyTorch loop.

Both run in this one process, on the same prepared arrays and the same model class, interleaved
epoch by epoch (harness, bare, harness, bare, ...) so machine drift hits both alike. The harness
path is the worker's own code (harness.benchmark.timed_epochs over the PyTorch Trainer); the bare
loop is what a user would write without any harness.

    .venv/bin/python bench/harness_overhead.py [--model cnn] [--samples 2048] [--rounds 5]

Writes bench/results/harness_overhead-<model>-<UTC time>.json and prints the ratio.
"""
from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness import data, environment# noqa: E402
from harness.data.cache import open_prepared  # noqa: E402
from harness.protocol import RunOptions, epoch_batches  # noqa: E402
from harness.specs import get_spec  # noqa: E402
from harness.benchmark import timed_epochs  # noqa: E402


def bare_epoch(model, optimizer, x, y, index) -> float:
    """What a user writes by hand: gather, forward, loss, backward, step; one sync at the end."""
    import torch
    import torch.nn.functional as F

    model.train()
    last = None
    for idx in torch.from_numpy(index):
        loss = F.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        last = loss
    return float(last.detach())  # waits for the device, as the harness's trainer does


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="cnn", choices=("cnn", "resnet50", "rnn"))
    p.add_argument("--samples", type=int, default=2048)
    p.add_argument("--rounds", type=int, default=5, help="timed epochs per path, after one warm-up each")
    p.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = p.parse_args()

    import torch

    spec = get_spec(args.model)
    prepared = data.prepare("synthetic", spec, args.samples)
    arrays = open_prepared(prepared.folder, args.samples)
    module = importlib.import_module(f"python_models.pytorch.{args.model}")
    options = RunOptions(seed=0)

    trainer = module.build(spec, options)  # the harness path
    trainer.fit_data(arrays["x_train"], arrays["y_train"])
    bare = module.build(spec, options)  # same class and init; only its nn.Module and optimizer are used
    model, optimizer = bare.model, bare.optimizer
    x = torch.as_tensor(np.array(arrays["x_train"]))
    y = torch.as_tensor(np.array(arrays["y_train"]))
    n, bs = len(x), spec.batch_size

    harness_s, bare_s = [], []
    for r in range(args.rounds + 1):  # round 0 warms both paths up and is not counted
        row = timed_epochs(trainer, n, bs, seed=0, count=1)[0]
        index = epoch_batches(n, bs, seed=1, epoch=r)
        t = time.monotonic()
        bare_epoch(model, optimizer, x, y, index)
        b = time.monotonic() - t
        if r:
            harness_s.append(row["seconds"])
            bare_s.append(b)
        print(f"round {r}: harness {row['seconds']:.3f} s  bare {b:.3f} s", file=sys.stderr)

    ratios = [h / b for h, b in zip(harness_s, bare_s)]
    result = {
        "benchmark": "harness_overhead", "model": args.model, "samples": n, "batch_size": bs,
        "rounds": args.rounds, "harness_s": harness_s, "bare_s": bare_s,
        "median_harness_s": statistics.median(harness_s), "median_bare_s": statistics.median(bare_s),
        "ratio_of_medians": statistics.median(harness_s) / statistics.median(bare_s),
        "median_paired_ratio": statistics.median(ratios),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "environment": environment.collect(), "command": "python " + " ".join(sys.argv),
    }
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    out = Path(args.out) / f"harness_overhead-{args.model}-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str))
    print(f"{args.model}: harness {result['median_harness_s']:.3f} s/epoch, bare {result['median_bare_s']:.3f} s/epoch, "
          f"ratio {result['ratio_of_medians']:.3f} (paired median {result['median_paired_ratio']:.3f}) -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
