"""`compare` flags a planted slowdown, passes the same code measured twice, and exits as CI needs."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from conftest import REPO, harness
from fake_records import ENV, record
from harness import results


@pytest.fixture(scope="module")
def same_code_twice(tmp_path_factory):
    """BASE and NEW: one code measured twice, frozen. Each is 2 runs of 6 epochs in the shape of a
    real PyTorch record (tests/records), with epoch times drawn once from a seeded generator around
    0.85 s with 5 % noise: no verdict here depends on what else the machine is doing (real timed
    runs split 2 against 2 gave a ratio of 1.04 for a planted 1.30 under a neighbour's load)."""
    template = json.loads((REPO / "tests" / "records" / "pytorch-cnn-before-seams.json").read_text())
    rng = np.random.default_rng(19)
    root = tmp_path_factory.mktemp("compare")
    base, new = root / "base", root / "new"
    for repeat in range(4):
        r = copy.deepcopy(template)
        steps = r["epochs"][0]["steps"]
        seconds = [2.5] + list(0.85 * rng.lognormal(0.0, 0.05, 5))  # the warm-up, then 5 steady epochs
        r["epochs"] = [{**r["epochs"][0], "epoch": i, "seconds": s, "examples_per_s": steps * 64 / s}
                       for i, s in enumerate(seconds)]
        r["config"] = {**r["config"], "epochs": 6, "repeat": repeat}
        r["run_id"] = f"{r['run_id']}-frozen{repeat}"
        r.pop("key")
        results.save(r, base if repeat % 2 == 0 else new)
    return base, new


def plant(src, dst, factor: float, framework: str | None = None):
    """Copy records, multiplying every epoch's seconds by `factor` (the recorded data, not a sleep)."""
    dst.mkdir(parents=True, exist_ok=True)
    for r in results.read_records([src]):
        r.pop("_path")
        if framework in (None, r["impl"]["framework"]):
            for e in r["epochs"]:
                e["seconds"] *= factor
                e["examples_per_s"] /= factor
        r["run_id"] += "-planted"
        r.pop("key", None)
        results.save(r, dst)
    return dst


class Done:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def compare(capsys):
    """`python -m harness compare ARGS --format json` in this process (the CLI path, minus a start-up)."""
    from harness.cli import main

    def run(*args, cache=None):
        capsys.readouterr()
        code = main(["compare", *map(str, args), "--format", "json"])
        out, err = capsys.readouterr()
        return Done(code, out, err), (json.loads(out) if out.strip() else None)
    return run


def test_same_code_measured_twice_passes(same_code_twice, compare):
    base, new = same_code_twice
    proc, out = compare(base, new)
    assert proc.returncode == 0, proc.stdout
    (row,) = out["rows"]
    assert row["verdict"] == "same" and row["n_base"] == row["n_new"] == 10


def test_planted_30_percent_slowdown_is_flagged(same_code_twice, data_cache, tmp_path, compare):
    base, new = same_code_twice
    slow = plant(new, tmp_path / "slow", 1.30)
    proc, out = compare(base, slow, "--threshold", "10%")
    assert proc.returncode == 1, proc.stdout
    (row,) = out["rows"]
    assert row["verdict"] == "slower" and row["ratio"] > 1.1 and row["p"] < 0.05 and out["regressions"] == 1
    # the table form names the regressed row on stderr for a CI log
    text = harness("compare", str(base), str(slow), cache=data_cache)
    assert text.returncode == 1 and "python/pytorch/cnn" in text.stderr and "regressed beyond 10%" in text.stderr


def test_a_speedup_and_a_slowdown_within_threshold_pass(tmp_path, data_cache, compare):
    base, fast, slight = tmp_path / "base", tmp_path / "fast", tmp_path / "slight"
    for i in range(3):
        results.save(record(seconds=(3, 1.0 + 0.01 * i, 1.02, 0.99, 1.01), repeat=i), base)
    plant(base, fast, 0.7)
    plant(base, slight, 1.05)
    proc, out = compare(base, fast, cache=data_cache)
    assert proc.returncode == 0 and out["rows"][0]["verdict"] == "faster"
    proc, out = compare(base, slight, cache=data_cache)
    assert proc.returncode == 0 and out["rows"][0]["verdict"] == "same"
    proc, out = compare(base, slight, "--threshold", "0.02", cache=data_cache)
    assert proc.returncode == 1 and out["rows"][0]["verdict"] == "slower"


def test_too_few_samples_for_the_test_decide_on_the_ratio(tmp_path, data_cache, compare):
    base = tmp_path / "base"
    for i in range(3):  # one steady epoch per run: 3 against 3 samples, the exact test cannot reach p < 0.05
        results.save(record(seconds=(3, 1.0 + 0.01 * i), repeat=i), base)
    slow = plant(base, tmp_path / "slow", 1.3)
    proc, out = compare(base, slow, cache=data_cache)
    (row,) = out["rows"]
    assert proc.returncode == 1 and row["verdict"] == "slower" and not row["decidable"] and row["p"] >= 0.05


def test_failed_rows_regress_and_missing_rows_are_listed(tmp_path, data_cache, compare):
    base, new = tmp_path / "base", tmp_path / "new"
    for i in range(2):
        results.save(record(framework="pytorch", repeat=i), base)
        results.save(record(framework="jax", repeat=i, version="0.10"), base)
        results.save(record(framework="pytorch", repeat=i), new)
    results.save(record(framework="jax", status="failed", version="0.10"), new)
    results.save(record(framework="mxnet", version="1.9.1"), new)
    proc, out = compare(base, new, cache=data_cache)
    verdicts = {r["framework"]: r["verdict"] for r in out["rows"]}
    assert verdicts == {"pytorch": "same", "jax": "failed in NEW", "mxnet": "new row (not in BASE)"}
    assert proc.returncode == 1


def test_two_commits_of_one_store(tmp_path, data_cache, compare):
    old_env = {**ENV, "git": {"commit": "aaaa" + "0" * 36, "dirty": False}}
    new_env = {**ENV, "git": {"commit": "bbbb" + "0" * 36, "dirty": False}}
    for i in range(3):
        results.save(record(env=old_env, seconds=(3, 1.0, 1.01, 0.99), repeat=i), tmp_path)
        results.save(record(env=new_env, seconds=(3, 1.5, 1.52, 1.49), repeat=i), tmp_path)
    proc, out = compare(tmp_path, tmp_path, "--base-commit", "aaaa", "--new-commit", "bbbb", cache=data_cache)
    assert proc.returncode == 1 and out["rows"][0]["ratio"] == pytest.approx(1.5, rel=0.02)


def test_nothing_in_common_is_a_usage_error(tmp_path, data_cache, compare):
    results.save(record(model="cnn"), tmp_path / "a")
    results.save(record(model="rnn"), tmp_path / "b")
    proc, _ = compare(tmp_path / "a", tmp_path / "b")
    assert proc.returncode == 2 and proc.stderr.startswith("error: BASE and NEW have no row in common")
    proc, _ = compare(tmp_path / "a", tmp_path / "nowhere")
    assert proc.returncode == 2 and "NEW: no results at" in proc.stderr


def test_rows_warn_when_their_sides_are_not_comparable(tmp_path, compare):
    """Another machine, a framework upgrade, other epochs, a loaded machine: each named on its row."""
    other = {**ENV, "machine_id": "0ther0machine", "cpu": "Other CPU", "cores": 2}
    base, new = tmp_path / "base", tmp_path / "new"
    for i in range(3):
        results.save(record(framework="pytorch", repeat=i), base)
        results.save(record(framework="pytorch", repeat=i, env=other), new)  # another machine
        results.save(record(framework="jax", version="0.10", repeat=i), base)
        results.save(record(framework="jax", version="0.11", repeat=i), new)  # an upgrade
        results.save(record(framework="mxnet", version="1.9.1", repeat=i), base)
        results.save(record(framework="mxnet", version="1.9.1", seconds=(2.0, 1.0, 1.0), repeat=i), new)
        loaded = record(framework="tensorflow", version="2.21", repeat=i)
        loaded["load_average"] = {"before": [9.5, 9.0, 8.0]}  # 9.5 on 8 cores
        results.save(loaded, new)
        results.save(record(framework="tensorflow", version="2.21", repeat=i), base)
    proc, out = compare(base, new)
    warned = {r["framework"]: r["warnings"] for r in out["rows"]}
    assert len(warned["pytorch"]) == 1 and warned["pytorch"][0].startswith(
        "machine differs: BASE Test CPU 9000 x8 (feedfacecafe), NEW Other CPU x2 (0ther0machine)")
    assert warned["jax"] == ["framework version differs: 0.10 -> 0.11"]
    assert warned["mxnet"] == ["epochs per run differ: 4 -> 3"]
    assert warned["tensorflow"] == ["NEW measured on a loaded machine (load 9.5 on 8 cores)"]
    # the same records on both sides: nothing to warn about
    proc, out = compare(base, base)
    assert all(r["warnings"] == [] for r in out["rows"])


def test_only_changed_hides_same_and_one_sided_rows(tmp_path, compare, capsys):
    base, new = tmp_path / "base", tmp_path / "new"
    for i in range(3):
        results.save(record(framework="pytorch", seconds=(3, 1.0, 1.01, 0.99, 1.0), repeat=i), base)
        results.save(record(framework="pytorch", seconds=(3, 1.0, 1.01, 0.99, 1.0), repeat=i), new)
        results.save(record(framework="jax", version="0.10", seconds=(3, 1.0, 1.01, 0.99, 1.0), repeat=i), base)
        results.save(record(framework="jax", version="0.10", seconds=(3, 1.5, 1.52, 1.49, 1.5), repeat=i), new)
        results.save(record(framework="mxnet", version="1.9.1", repeat=i), base)  # missing in NEW
    proc, out = compare(base, new, "--only-changed")
    assert [r["framework"] for r in out["rows"]] == ["jax"] and out["hidden"] == 2 and proc.returncode == 1
    proc, out = compare(base, new)
    assert {r["framework"]: r["verdict"] for r in out["rows"]} == {
        "pytorch": "same", "jax": "slower", "mxnet": "missing in NEW"}
    # the table form says what it hid
    from harness.cli import main

    capsys.readouterr()
    assert main(["compare", str(base), str(new), "--only-changed"]) == 1
    printed = capsys.readouterr()
    assert "JAX" in printed.out or "python/jax/cnn" in printed.out
    assert "python/pytorch/cnn" not in printed.out and "2 of 3 rows hidden" in printed.err
