"""The PyTorch reference implementations learn: 3 epochs on synthetic data beat chance clearly."""
from __future__ import annotations

import math

import pytest

from conftest import harness_json

# ResNet-50's eval mode uses BatchNorm running statistics, which need some dozens of steps to
# settle: it gets 2048 examples (96 steps); the others learn from 512 (24 steps).
CASES = [("cnn", 512, 0.3), ("resnet50", 2048, 0.3), ("rnn", 512, 0.7)]


@pytest.mark.parametrize("model, samples, floor", CASES, ids=[c[0] for c in CASES])
def test_pytorch_beats_chance(model, samples, floor, data_cache, tmp_path):
    proc, record = harness_json("--framework", "pytorch", "--model", model, "--data", "synthetic",
                                "--samples", str(samples), "--epochs", "3", "--quiet", "--out", str(tmp_path),
                                cache=data_cache)
    assert proc.returncode == 0, record.get("error")
    losses = [e["loss"] for e in record["epochs"]]
    assert losses[-1] < losses[0]
    assert record["metrics"]["test_accuracy"] > floor  # chance: 0.1 (10 classes), 0.5 (2 classes)


def test_transformer_learns_the_synthetic_chain(data_cache, tmp_path):
    """24 steps at the test-only size: the test loss falls well below a uniform guess (ln 256 nats
    per byte) and next-byte accuracy is many times chance (1/256). The record carries tokens/s,
    bits per byte, FLOPs and MFU, and the summary shows them."""
    proc, record = harness_json("--framework", "pytorch", "--model", "transformer", "--data", "synthetic",
                                "--samples", "512", "--epochs", "3", "--quiet", "--out", str(tmp_path),
                                cache=data_cache)
    assert proc.returncode == 0, record.get("error")
    losses = [e["loss"] for e in record["epochs"]]
    assert losses[-1] < losses[0]
    assert record["metrics"]["test_loss"] < 0.8 * math.log(256)
    assert record["metrics"]["test_accuracy"] > 5 / 256
    from harness import results, stats, summary
    from harness.specs import get_spec

    context = get_spec("transformer").arch.context
    m, f, timing = record["metrics"], record["flops"], record["timing"]
    assert m["test_predictions"] == m["test_examples"] * context
    assert m["test_bits_per_byte"] == pytest.approx(m["test_loss"] / math.log(2))
    assert record["flops_per_example"] == f["per_example"] == context * f["per_token"]
    assert timing["steady_tokens_per_s"] == pytest.approx(timing["steady_examples_per_s"] * context)
    assert f["achieved_per_s"] == pytest.approx(f["per_example"] * timing["steady_examples_per_s"])
    assert 0 < f["mfu"] == pytest.approx(f["achieved_per_s"] / f["peak"]["flops_per_s"])
    assert f["peak"]["measured_by"] == "pytorch matmul" and f["peak"]["threads"] >= 1
    row = stats.summarize(results.to_frame([record])).iloc[0]
    assert row["mfu"] > 0 and row["median_tokens_per_s"] > 0
    text = summary.text([record])
    assert "MFU" in text and "tokens/s" in text and "%" in text
