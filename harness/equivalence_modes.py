"""The worker side of the equivalence checks (harness/equivalence.py runs them from the parent).

Two worker modes, each building the model through the same runtime as a benchmark run, so every
language is reached the same way:

  equivalence   checks 1-4 in one process: shapes and round trips, eval logits on the probe
                weights, (models with dropout) one step with dropout on per fresh trainer, the
                check-3 steps with dropout off, and the digests of the training data as the
                implementation saw it.
  train-export  check 5: train some epochs, export the weights, write eval logits of the test
                set with its own weights and with the reference's.
"""
from __future__ import annotations

import os
from dataclasses import replace

import numpy as np

from harness.canonical import load_weights, not_identical, save_logits, save_weights
from harness.data.cache import array_digest, open_prepared
from harness.model_input import model_input
from harness.protocol import Batches, epoch_batches


def unchanged_shares(before: dict, after: dict) -> dict:
    """Per tensor (and per axis of a matrix or kernel): the share of slices a step left exactly
    unchanged, and the number of slices. A dropped unit passes no gradient, so its slices stay put."""
    out = {}
    for k, w0 in before.items():
        same = np.asarray(after[k]) == w0
        if same.ndim == 1:
            out[k] = (float(same.mean()), int(same.size))
            continue
        for axis in (0, 1):
            others = tuple(a for a in range(same.ndim) if a != axis)
            out[f"{k}[axis {axis}]"] = (float(same.all(axis=others).mean()), int(same.shape[axis]))
    return out


def seen_digest(trainer, name: str, array: np.ndarray) -> dict:
    """The SHA-256 of the training array `name` ("x" or "y") as the implementation holds it."""
    digest = trainer.data_digest(name)  # computed in the implementation's own runtime (R, Julia)
    if digest is not None:
        return {"sha256": digest, "by": "trainer.data_digest"}
    return {"sha256": array_digest(array), "by": "the worker on the array given to fit_data"}


def one_step(trainer, row) -> list[float]:
    return [float(v) for v in np.asarray(trainer.train_epoch(Batches(np.asarray([row], dtype=np.int64))),
                                         dtype=np.float64)]


def steps(trainer, probe: dict, rows: list, teacher: list | None, work: str):
    """Check 3: one train_epoch call per row. The reference (teacher None) writes its weights after
    each step to WORK/stepK.npz; any other implementation starts each step K > 1 from the
    reference's weights after step K-1 (its own optimiser state goes on) and reports, per step
    and tensor, ||its weights - the reference's|| and ||the reference's step||."""
    losses, out, before = [], [], probe
    for k, row in enumerate(rows, start=1):
        if teacher and k > 1:
            before = load_weights(teacher[k - 2])
            trainer.set_weights(before)
        losses += one_step(trainer, row)
        after = trainer.get_weights()
        if teacher is None:
            save_weights(os.path.join(work, f"step{k}.npz"), after)
            continue
        ref, norms = load_weights(teacher[k - 1]), {}
        for key, r in ref.items():
            r = r.astype(np.float64)
            mine = np.asarray(after.get(key, np.full(r.shape, np.nan)), dtype=np.float64)
            diff = float(np.linalg.norm(mine - r)) if mine.shape == r.shape else float("inf")
            norms[key] = (diff if np.isfinite(diff) else float("inf"), float(np.linalg.norm(r - before[key])))
        out.append(norms)
    return losses, (None if teacher is None else out)


def run_equivalence(job: dict, opened, events) -> dict:
    """Checks 1-4 of harness.equivalence in one process (see the module's docstring)."""
    impl, options, trainer = opened.impl, opened.options, opened.trainer
    work = job["work"]
    files = {"init": os.path.join(work, "init.npz"), "logits": os.path.join(work, "logits.npy")}
    data = open_prepared(job["data"]["folder"])
    probe = load_weights(job["probe"])
    layout = trainer.info.get("layout", "NCHW")
    init = {k: np.array(v) for k, v in trainer.get_weights().items()}
    save_weights(files["init"], init)
    trainer.set_weights(init)
    roundtrip_init = not_identical(init, trainer.get_weights())
    trainer.set_weights(probe)
    roundtrip_probe = not_identical(probe, trainer.get_weights())

    events.send("phase", name="eval")
    x_test = data["x_test"][: job["eval_examples"]]
    save_logits(files["logits"], trainer.predict(model_input(impl.model, options, x_test, layout)))
    x_train, y_train = model_input(impl.model, options, data["x_train"], layout), data["y_train"]
    dropout = None
    if job.get("dropout_rows"):  # one first step per fresh trainer (no optimiser state), new masks each
        events.send("phase", name="dropout")
        draws = []
        for d, row in enumerate(job["dropout_rows"]):
            if d:
                trainer = opened.build(replace(options, seed=options.seed + d))
                trainer.set_weights(probe)
            trainer.fit_data(x_train, y_train)
            one_step(trainer, row)
            draws.append(unchanged_shares(probe, trainer.get_weights()))
            del trainer
        dropout = {k: (float(np.mean([d[k][0] for d in draws])), m * len(draws)) for k, (_, m) in draws[0].items()}
        trainer = opened.build(replace(options, dropout=False))
        trainer.set_weights(probe)
    elif options.dropout:  # check 3's steps run with dropout off, with or without the dropout check
        trainer = opened.build(replace(options, dropout=False))
        trainer.set_weights(probe)
    events.send("phase", name="steps")
    trainer.fit_data(x_train, y_train)
    losses, step_norms = steps(trainer, probe, job["rows"], job.get("teacher"), work)
    if job.get("teacher") is None:
        files["steps"] = [os.path.join(work, f"step{k}.npz") for k in range(1, len(job["rows"]) + 1)]
    return {
        "versions": opened.versions, "info": trainer.info, "layout": layout, "param_count": int(trainer.param_count()),
        "shapes": {k: [list(v.shape), str(v.dtype)] for k, v in init.items()},
        "roundtrip_init": roundtrip_init, "roundtrip_probe": roundtrip_probe,
        "losses": losses, "steps": step_norms, "dropout": dropout,
        "digest": {"x": seen_digest(trainer, "x", x_train), "y": seen_digest(trainer, "y", y_train)},
        "disk": {"x_train": array_digest(data["x_train"]), "y_train": array_digest(data["y_train"])},
        "files": files,
    }


def run_train_export(job: dict, opened, events) -> dict:
    """Check 5: train job["epochs"] epochs (dropout on), export the weights to job["out"], write the
    eval logits of job["input"] next to it, and those of each {weights, out} pair in job["cross"]."""
    impl, options, trainer = opened.impl, opened.options, opened.trainer
    data = open_prepared(job["data"]["folder"], job["data"].get("samples"))
    layout = trainer.info.get("layout", "NCHW")
    x_train = model_input(impl.model, options, data["x_train"], layout)
    trainer.fit_data(x_train, data["y_train"])
    losses = []
    for epoch in range(job["epochs"]):
        events.send("phase", name="epoch", epoch=epoch)
        losses += [float(v) for v in np.asarray(trainer.train_epoch(
            Batches(epoch_batches(len(x_train), job["batch_size"], options.seed, epoch))), dtype=np.float64)]
    save_weights(job["out"], trainer.get_weights())
    events.send("phase", name="eval")
    x = model_input(impl.model, options, np.load(job["input"], mmap_mode="r"), layout)
    save_logits(os.path.join(os.path.dirname(job["out"]), "logits.npy"), trainer.predict(x))
    for pair in job["cross"]:
        trainer.set_weights(load_weights(pair["weights"]))
        save_logits(pair["out"], trainer.predict(x))
    return {"versions": opened.versions, "info": trainer.info, "losses": losses}
