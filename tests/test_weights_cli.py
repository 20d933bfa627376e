"""The canonical-weights CLI: `weights`, `predict` and `check`, through the real command line.

`weights` and `predict` run through the same worker modes for every implementation; the
registry-wide proof is tests/test_equivalence.py. Here: the files they write, and one clear
line with exit code 2 for every bad input.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import harness
from harness import runtimes
from harness.canonical import load_weights
from harness.equivalence import reference_impl
from harness.specs import get_spec


@pytest.fixture(scope="module")
def torch_ok():
    reason = runtimes.availability(reference_impl("cnn"))
    if reason:
        pytest.skip(reason)


def pytorch_logits(model: str, weights: dict, x: np.ndarray) -> np.ndarray:
    """The reference computed in this process, straight from python_models (no worker)."""
    import importlib

    from harness.protocol import RunOptions

    trainer = importlib.import_module(f"python_models.pytorch.{model}").build(get_spec(model), RunOptions())
    trainer.set_weights(weights)
    return trainer.predict(x)


@pytest.mark.parametrize("model", ["cnn", "rnn"])
def test_weights_then_predict(model, torch_ok, data_cache, tmp_path):
    spec = get_spec(model)
    w = tmp_path / "w.npz"
    proc = harness("weights", "--framework", "pytorch", "--model", model, "--seed", "3", "--out", str(w), cache=data_cache)
    assert proc.returncode == 0, proc.stderr
    assert f"{spec.param_count:,} trainable parameters" in proc.stdout
    weights = load_weights(w)
    assert {k: v.shape for k, v in weights.items()} == spec.weight_shapes()
    again = tmp_path / "again.npz"
    harness("weights", "--framework", "pytorch", "--model", model, "--seed", "3", "--out", str(again), cache=data_cache)
    other = tmp_path / "other.npz"
    harness("weights", "--framework", "pytorch", "--model", model, "--seed", "4", "--out", str(other), cache=data_cache)
    assert all(np.array_equal(weights[k], load_weights(again)[k]) for k in weights), "same seed, same weights"
    assert not np.array_equal(weights["fc.weight" if model == "rnn" else "fc1.weight"],
                              load_weights(other)["fc.weight" if model == "rnn" else "fc1.weight"])

    rng = np.random.default_rng(0)
    if model == "cnn":
        x = rng.uniform(0, 1, (5, 3, 32, 32)).astype(np.float32)
    else:  # int32 ids are accepted and widened to the int64 every implementation reads
        x = rng.integers(0, 30_000, (5, 150)).astype(np.int32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "logits.npy"
    proc = harness("predict", "--framework", "pytorch", "--model", model, "--weights", str(w),
                   "--input", str(tmp_path / "x.npy"), "--out", str(out), cache=data_cache)
    assert proc.returncode == 0, proc.stderr
    logits = np.load(out)
    assert logits.shape == (5, spec.num_classes) and logits.dtype == np.float32
    np.testing.assert_array_equal(logits, pytorch_logits(model, weights, x.astype(np.int64) if model == "rnn" else x))


def test_bad_inputs_are_one_line_exit_2(torch_ok, data_cache, tmp_path):
    w = tmp_path / "w.npz"
    assert harness("weights", "--framework", "pytorch", "--model", "cnn", "--out", str(w), cache=data_cache).returncode == 0
    good = tmp_path / "x.npy"
    np.save(good, np.zeros((2, 3, 32, 32), np.float32))
    wrong_shape, wrong_dtype = tmp_path / "shape.npy", tmp_path / "dtype.npy"
    np.save(wrong_shape, np.zeros((2, 32, 32, 3), np.float32))
    np.save(wrong_dtype, np.zeros((2, 3, 32, 32), np.float64))
    broken = tmp_path / "broken.npz"
    weights = load_weights(w)
    weights["fc1.weight"] = weights["fc1.weight"].T.copy()  # a Keras-layout kernel
    np.savez(broken, **weights)
    cases = [
        (["predict", "--framework", "pytorch", "--model", "cnn", "--weights", str(w), "--input", str(wrong_shape),
          "--out", str(tmp_path / "o.npy")], "shape (2, 32, 32, 3)"),
        (["predict", "--framework", "pytorch", "--model", "cnn", "--weights", str(w), "--input", str(wrong_dtype),
          "--out", str(tmp_path / "o.npy")], "float64"),
        (["predict", "--framework", "pytorch", "--model", "cnn", "--weights", str(broken), "--input", str(good),
          "--out", str(tmp_path / "o.npy")], "fc1.weight has shape (6400, 512)"),
        (["predict", "--framework", "pytorch", "--model", "rnn", "--weights", str(w), "--input", str(good),
          "--out", str(tmp_path / "o.npy")], "missing embedding.weight"),
        (["weights", "--framework", "nosuch", "--model", "cnn", "--out", str(w)], "unknown framework 'nosuch'"),
        (["weights", "--framework", "keras", "--model", "cnn", "--out", str(w)], "needs --backend"),
        (["weights", "--framework", "pytorch", "--model", "cnn", "--out", str(tmp_path / "no" / "w.npz")],
         "does not exist"),
        (["check", "--model", "cnn", "--checks", "shapes,speed"], "unknown check 'speed'"),
    ]
    for args, needle in cases:
        proc = harness(*args, cache=data_cache)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], (args, proc.stderr)


def test_check_cli_json(torch_ok, data_cache):
    proc = harness("check", "--model", "cnn", "--framework", "pytorch", "--checks", "shapes,logits,data",
                   "--format", "json", "--quiet", cache=data_cache)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["passed"] and report["reference"] == "python/pytorch/cnn"
    (row,) = [r for r in report["rows"] if r["impl"] == "python/pytorch/cnn"]
    assert set(row["checks"]) == {"shapes", "logits", "data"} and all(c["ok"] for c in row["checks"].values())
    assert all(r["reason"] for r in report["rows"] if r["status"] == "skipped")


def test_check_cli_fails_on_a_wrong_model(torch_ok, data_cache, tmp_path, monkeypatch, capsys):
    """The exit code: a PyTorch build with PyTorch's default initialisers fails `1 init`."""
    import stat
    import sys
    from pathlib import Path

    import wrong_variants
    from harness import cli, launch

    script = tmp_path / "python-wrong"
    script.write_text(f'#!/bin/sh\nshift 2\nexec "{sys.executable}" "{Path(wrong_variants.__file__)}" "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv(wrong_variants.ENV, "cnn-default-init")
    monkeypatch.setattr(launch, "interpreter", lambda env: script)
    code = cli.main(["check", "--model", "cnn", "--framework", "pytorch", "--checks", "shapes,init",
                     "--data-dir", str(data_cache), "--quiet"])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL" in out and "failures:" in out and "conv1.weight: not glorot_uniform" in out
