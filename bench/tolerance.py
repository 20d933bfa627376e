"""Measure what check 2 and check 3 of harness.equivalence must allow: PyTorch float32 against
PyTorch float64 on the check's own protocol (probe weights, the same batches, each step started
from the float64 weights of the previous one). This is the rounding error of one float32
implementation; harness/equivalence.py's TOLERANCES leave room beyond it (see its comment).

    .venv/bin/python bench/tolerance.py --model transformer [--steps 5] [--seed 0]
"""
from __future__ import annotations

import argparse
import importlib
import json
import tempfile

import numpy as np
import torch

from harness import data as datasets
from harness import equivalence
from harness.data.cache import open_prepared
from harness.protocol import Batches, RunOptions
from harness.specs import get_spec
from python_models.pytorch.trainer import make_optimizer


def build(model: str, spec, dtype):
    trainer = importlib.import_module(f"python_models.pytorch.{model}").build(spec, RunOptions(dropout=False))
    trainer.model.to(dtype)
    trainer.optimizer = make_optimizer(trainer.model, spec, trainer.rename)
    return trainer


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--steps", type=int, default=equivalence.STEPS)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    spec = get_spec(args.model)
    tol = equivalence.TOLERANCES[args.model]
    with tempfile.TemporaryDirectory() as tmp:
        prepared = datasets.prepare("synthetic", spec, equivalence.DATA_SAMPLES, tmp)
        arrays = {k: np.array(v) for k, v in open_prepared(prepared.folder).items()}
    probe = equivalence.probe_weights(spec, args.seed)
    rows = equivalence.step_rows(equivalence.DATA_SAMPLES, tol.step_batch, args.steps, args.seed)
    t32, t64 = build(args.model, spec, torch.float32), build(args.model, spec, torch.float64)
    x = arrays["x_train"]
    t32.fit_data(x, arrays["y_train"])
    t64.fit_data(x.astype(np.float64) if x.dtype.kind == "f" else x, arrays["y_train"])
    out = {"model": args.model, "params": spec.param_count, "step_batch": tol.step_batch}
    for t in (t32, t64):
        t.set_weights(probe)
    xe = arrays["x_test"][: tol.eval_examples]
    l32, l64 = t32.predict(xe), t64.predict(xe.astype(np.float64) if xe.dtype.kind == "f" else xe)
    out["logits_max_abs"] = float(np.abs(l32.astype(np.float64) - l64).max())
    out["logits_max_rel_to_bound"] = float((np.abs(l32 - l64) / (1e-4 + 1e-4 * np.abs(l64))).max())
    before = {k: v.astype(np.float64) for k, v in probe.items()}
    losses, worst = [], {}
    for k, row in enumerate(rows, start=1):
        if k > 1:  # float32 starts each step from the float64 weights (float64 goes on from its own)
            t32.set_weights({kk: v.astype(np.float32) for kk, v in before.items()})
        a = float(t32.train_epoch(Batches(np.asarray([row])))[0])
        b = float(t64.train_epoch(Batches(np.asarray([row])))[0])
        losses.append((a, b, abs(a - b) / abs(b)))
        w32, w64 = t32.get_weights(), t64.get_weights()
        for key in w64:
            moved = np.linalg.norm(w64[key].astype(np.float64) - before[key])
            diff = np.linalg.norm(w32[key].astype(np.float64) - w64[key].astype(np.float64))
            rel = diff / moved if moved > 0 else (0.0 if diff == 0 else float("inf"))
            if rel > worst.get(key, (0, 0))[0]:
                worst[key] = (float(rel), k)
        before = {kk: v.astype(np.float64) for kk, v in w64.items()}
    out["losses"] = losses
    out["max_loss_rel"] = max(r for _, _, r in losses)
    ranked = sorted(worst.items(), key=lambda kv: -kv[1][0])
    out["worst_tensors"] = ranked[:5]
    out["max_weight_rel"] = ranked[0][1][0] if ranked else 0.0
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
