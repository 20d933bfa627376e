"""Canonical weight files (.npz in the spec's keys and PyTorch's layouts) and logits files (.npy).

Parent side: read and write them, and compare two weight sets. Worker side: the `weights` mode
(write the initial weights an implementation creates) and the `predict` mode (load weights, write
eval-mode logits), used by `python -m harness weights|predict` and by check 5.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.model_input import model_input


def load_weights(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def save_weights(path, weights: dict) -> Path:
    with open(path, "wb") as f:  # a file object: numpy would append .npz to a bare name
        np.savez(f, **{k: np.asarray(v) for k, v in weights.items()})
    return Path(path)


def save_logits(path, array) -> None:
    with open(path, "wb") as f:
        np.save(f, np.asarray(array, dtype=np.float32), allow_pickle=False)


def shapes_of(weights: dict) -> dict[str, tuple[tuple[int, ...], str]]:
    return {k: (tuple(np.shape(v)), str(np.asarray(v).dtype)) for k, v in weights.items()}


def not_identical(a: dict, b: dict) -> list:
    """Keys whose arrays differ in presence, shape, dtype or any bit."""
    def differs(k):
        if k not in a or k not in b:
            return True
        x, y = np.asarray(a[k]), np.asarray(b[k])
        return x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes()
    return [k for k in sorted(set(a) | set(b)) if differs(k)]


def weight_problems(spec, shapes: dict) -> list[str]:
    """Keys, shapes and dtypes ({key: (shape, dtype)}, see shapes_of) against the spec; empty: all fine."""
    want = spec.weight_shapes()
    problems = [f"missing {k}" for k in want if k not in shapes]
    problems += [f"unexpected {k}" for k in shapes if k not in want]
    for k, shape in want.items():
        if k in shapes:
            got, dtype = shapes[k]
            if tuple(got) != tuple(shape):
                problems.append(f"{k} has shape {tuple(got)}, spec {tuple(shape)}")
            elif dtype != "float32":
                problems.append(f"{k} is {dtype}, canonical weights are float32")
    return problems


# --------------------------------------------------------------------------- worker modes
def run_weights(job: dict, opened, events) -> dict:
    save_weights(job["out"], opened.trainer.get_weights())
    return {"versions": opened.versions, "info": opened.trainer.info, "param_count": opened.param_count}


def run_predict(job: dict, opened, events) -> dict:
    """Eval-mode logits of job["input"] for each {weights, out} pair in job["pairs"]."""
    trainer = opened.trainer
    x = model_input(opened.impl.model, opened.options, np.load(job["input"], mmap_mode="r"),
                    trainer.info.get("layout", "NCHW"))
    events.send("phase", name="eval")
    for pair in job["pairs"]:
        trainer.set_weights(load_weights(pair["weights"]))
        save_logits(pair["out"], trainer.predict(x))
    return {"versions": opened.versions, "info": trainer.info}
