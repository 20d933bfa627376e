"""Every registered implementation: a tiny synthetic run through the real CLI, for every model
but those COVERED_BY_EQUIVALENCE below (ResNet-50 outside the reference, tinygrad's GRU), which
train through the same worker in tests/test_equivalence.py.

Parametrized over harness.registry, so a new implementation is tested by registering it. One
that cannot run here is skipped with the exact reason `python -m harness list` gives.
"""
from __future__ import annotations

import pytest

from conftest import harness_json
from harness import runtimes
from harness.registry import IMPLEMENTATIONS

ACTIVE = [i for i in IMPLEMENTATIONS if not i.framework.retired]
# Not run twice: these train through the same worker in tests/test_equivalence.py (init, logits,
# five optimiser steps, the eval), and the CLI path of their framework is tested here on its other
# models, the harness's ResNet-50 path (its data, image size, FLOPs) on the reference. Each would
# be a second process building the same graph: tinygrad schedules the whole step in Python, 2-4
# minutes on 2 cores for the unrolled 150-step GRU and ResNet-50 (the suite's two slowest tests,
# 225 s and 132 s at -n 2), and the compiled frameworks compile ResNet-50's step again (the
# ResNet-50 tiny runs took 250 test-seconds of a 24.7-minute suite).
COVERED_BY_EQUIVALENCE = {
    "python/tinygrad/rnn": "test_same_model_as_reference[python/tinygrad/rnn]",
    **{i.label: f"test_same_model_as_reference[{i.label}]" for i in ACTIVE
       if i.model == "resnet50" and i.label != "python/pytorch/resnet50"},
}
TINY = [i for i in ACTIVE if i.label not in COVERED_BY_EQUIVALENCE]


def test_what_the_tiny_runs_leave_out_the_equivalence_tests_run():
    import test_equivalence

    labels = {i.label for i in test_equivalence.ACTIVE}
    assert set(COVERED_BY_EQUIVALENCE) <= labels
    for label in COVERED_BY_EQUIVALENCE:  # and the framework's CLI path is tested on another model
        framework = label.rsplit("/", 1)[0]
        assert any(i.label.startswith(framework + "/") for i in TINY), label


def impl_args(impl) -> list[str]:
    args = ["--lang", impl.lang, "--framework", impl.name, "--model", impl.model]
    return args + (["--backend", impl.backend] if impl.backend else [])


@pytest.mark.parametrize("impl", TINY, ids=lambda i: i.label)
def test_tiny_synthetic_run(impl, data_cache, tmp_path):
    reason = runtimes.availability(impl)
    if reason:
        pytest.skip(reason)
    # The CNN trains 3 epochs on 512 examples, enough to beat chance clearly; the others 2 epochs of
    # two steps (128 examples, batch 64): the first epoch holds the warm-up, the second is steady.
    epochs, samples = (3, 512) if impl.model == "cnn" else (2, 128)
    proc, record = harness_json(*impl_args(impl), "--data", "synthetic", "--samples", str(samples),
                                "--epochs", str(epochs), "--out", str(tmp_path), "--quiet", cache=data_cache)
    assert proc.returncode == 0, f"{record.get('error')}\n{record.get('log_tail', '')}"
    assert record["status"] == "ok"
    assert record["param_count"] == record["spec_param_count"]
    assert [e["epoch"] for e in record["epochs"]] == list(range(epochs))
    assert all(e["seconds"] > 0 and e["examples_per_s"] > 0 for e in record["epochs"])
    assert record["impl"]["version"], "the record names the framework's version"
    assert record["flops_per_example"] > 0 and record["flops"]["mfu"] > 0, "FLOPs and MFU in every record"
    if impl.model == "cnn":
        assert record["metrics"]["test_accuracy"] > 0.3, "10 classes: chance is 0.1"
