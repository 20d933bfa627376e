"""Every registered implementation, every model: a tiny synthetic run through the real CLI.

Parametrized over harness.registry, so a new implementation is tested by registering it. One
that cannot run here is skipped with the exact reason `python -m harness list` gives.
"""
from __future__ import annotations

import pytest

from conftest import harness_json
from harness import runtimes
from harness.registry import IMPLEMENTATIONS

ACTIVE = [i for i in IMPLEMENTATIONS if not i.framework.retired]


def impl_args(impl) -> list[str]:
    args = ["--lang", impl.lang, "--framework", impl.name, "--model", impl.model]
    return args + (["--backend", impl.backend] if impl.backend else [])


@pytest.mark.parametrize("impl", ACTIVE, ids=lambda i: i.label)
def test_tiny_synthetic_run(impl, data_cache, tmp_path):
    reason = runtimes.availability(impl)
    if reason:
        pytest.skip(reason)
    # The CNN trains 3 epochs on 512 examples, enough to beat chance clearly; the others 2 on 256.
    epochs, samples = (3, 512) if impl.model == "cnn" else (2, 256)
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
