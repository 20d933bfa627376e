"""Every registered implementation is the same model as PyTorch: checks 1-4 of harness.equivalence.

Parametrized over harness.registry, so a new implementation is checked by registering it: one
worker per (implementation, model) runs the shapes/init, logits, steps, dropout and data checks
against the reference's worker (run once per model). An implementation that cannot run here is
skipped with the exact reason `python -m harness list` gives. The wrong variants of
tests/wrong_variants.py go through the same worker modes and must be caught.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

import spec_oracle
import wrong_variants
from harness import canonical, equivalence, launch, runtimes
from harness.protocol import RunOptions
from harness.registry import IMPLEMENTATIONS, Implementation
from harness.specs import SPECS, get_spec

ACTIVE = [i for i in IMPLEMENTATIONS if not i.framework.retired]
EARLY_CHECKS = ("shapes", "init", "logits", "steps", "dropout", "data")


@pytest.fixture(scope="session")
def check_inputs(tmp_path_factory, data_cache):
    """model -> (CheckInputs, reference worker result), built on first use."""
    made = {}

    def get(model: str):
        if model not in made:
            reason = runtimes.availability(equivalence.reference_impl(model))
            if reason:
                pytest.skip(f"the reference cannot run here: {reason}")
            inputs = equivalence.make_inputs(model, tmp_path_factory.mktemp(f"check-{model}"), RunOptions(),
                                           data_dir=data_cache, timeout=1200)
            made[model] = (inputs, equivalence.run_equivalence(equivalence.reference_impl(model), inputs))
        return made[model]

    return get


def failed(checks: dict) -> dict[str, str]:
    return {name: c.detail for name, c in checks.items() if not c.ok}


@pytest.mark.parametrize("impl", ACTIVE, ids=lambda i: i.label)
def test_same_model_as_reference(impl, check_inputs, tmp_path):
    reason = runtimes.availability(impl)
    if reason:
        pytest.skip(reason)
    inputs, ref = check_inputs(impl.model)
    if impl == equivalence.reference_impl(impl.model):
        # The reference's row compared with itself could not fail. It is checked against the spec's
        # own forward pass in numpy (tests/spec_oracle.py, cnn and rnn) and against a second, fresh
        # reference worker, which must reproduce the first (logits, steps, dropout shares, data).
        if impl.model in spec_oracle.ORACLES:
            x = np.load(Path(inputs.data.folder) / "x_test.npy")[: inputs.tol.eval_examples]
            oracle = spec_oracle.ORACLES[impl.model](inputs.probe, x)
            check = equivalence.check_logits(oracle, np.load(ref["files"]["logits"]), inputs.tol)
            assert check.ok, f"{impl.label} differs from the spec's forward pass in numpy: {check.detail}"
        res = equivalence.run_equivalence(impl, replace(inputs, work=tmp_path / "again"), ref)
    else:
        res = equivalence.run_equivalence(impl, inputs, ref)
    checks = equivalence.evaluate(inputs, ref, res)
    expected = set(EARLY_CHECKS) - (set() if equivalence.has_dropout(inputs.spec) else {"dropout"})
    assert set(checks) == expected
    assert not failed(checks), f"{impl.label} differs from {equivalence.reference_impl(impl.model).label}: {failed(checks)}"


EARLY_VARIANTS = [n for n, v in wrong_variants.VARIANTS.items() if v.caught_by != "transfer"]


@pytest.mark.parametrize("name", EARLY_VARIANTS)
def test_wrong_variant_is_caught(name, check_inputs, variant_worker, tmp_path):
    variant = wrong_variants.VARIANTS[name]
    inputs, ref = check_inputs(variant.model)
    ref_impl = equivalence.reference_impl(variant.model)
    if runtimes.availability(ref_impl):
        pytest.skip(runtimes.availability(ref_impl))
    variant_worker(name)
    res = equivalence.run_equivalence(ref_impl, replace(inputs, work=tmp_path / "variant"), ref)
    checks = equivalence.evaluate(inputs, ref, res)
    print(f"{name}: " + ", ".join(f"{k} {c.cell()}" for k, c in checks.items()))  # shown by pytest -rP
    assert variant.caught_by in failed(checks), (
        f"{name} ({variant.what}) passed the {variant.caught_by} check: {checks[variant.caught_by].detail}")


@dataclass(frozen=True)
class Twin(Implementation):
    """The reference under another label (its own work folder), run by the interpreter of `env`."""

    tag: str = "twin"

    @property
    def label(self) -> str:
        return f"{super().label}-{self.tag}"


def test_transfer_check_end_to_end(check_inputs, data_cache, tmp_path, monkeypatch):
    """Check 5 through its workers (train-export, predict): a second PyTorch passes it; a variant
    that checks 1-4 cannot tell from PyTorch (predict runs stale weights) fails it, and only it."""
    ref_impl = equivalence.reference_impl("cnn")
    if runtimes.availability(ref_impl):
        pytest.skip(runtimes.availability(ref_impl))
    early_inputs, ref = check_inputs("cnn")
    name = "cnn-predict-stale"
    script = tmp_path / "python-wrong"
    script.write_text(f'#!/bin/sh\nshift 2\nexec "{sys.executable}" "{Path(wrong_variants.__file__)}" "$@"\n')
    script.chmod(0o755)
    real = launch.interpreter
    monkeypatch.setattr(launch, "interpreter", lambda env: script if env == "wrong" else real(env))
    monkeypatch.setenv(wrong_variants.ENV, name)
    same = Twin(ref_impl.framework, ref_impl.backend, "cnn", tag="again")
    wrong = Twin(replace(ref_impl.framework, env="wrong"), ref_impl.backend, "cnn", tag=name)

    res = equivalence.run_equivalence(wrong, replace(early_inputs, work=tmp_path / "early"), ref)
    assert not failed(equivalence.evaluate(early_inputs, ref, res)), "checks 1-4 cannot see this variant"

    inputs = equivalence.make_inputs("cnn", tmp_path / "transfer", RunOptions(), data_dir=data_cache,
                                     transfer_samples=256, timeout=1200)
    found = equivalence.run_transfer([same, wrong], inputs, ref_impl, say=lambda *_: None)
    assert found[ref_impl].ok and found[same].ok, (found[ref_impl].detail, found[same].detail)
    assert not found[wrong].ok and "FAIL trained in this implementation" in found[wrong].detail, found[wrong].detail


# --------------------------------------------------------------------------- the checks themselves
def test_probe_weights_are_canonical_and_move_every_tensor():
    for spec in SPECS.values():
        probe = equivalence.probe_weights(spec, 0)
        assert canonical.weight_problems(spec, canonical.shapes_of(probe)) == []
        assert all(np.ptp(v) > 0 for v in probe.values()), "no constant tensor: a swap must show"
        again = equivalence.probe_weights(spec, 0)
        assert all(np.array_equal(probe[k], again[k]) for k in probe)


def test_init_check_knows_the_families():
    spec = get_spec("rnn")
    rng = np.random.default_rng(0)
    good = {}
    for w in spec.weights:
        family, bound, std = equivalence.init_law(w)
        if family == "uniform":
            good[w.key] = rng.uniform(-bound, bound, w.shape)
        elif family == "orthogonal":
            good[w.key] = np.linalg.qr(rng.normal(size=w.shape))[0]
        else:
            good[w.key] = np.zeros(w.shape)
    good = {k: v.astype(np.float32) for k, v in good.items()}
    assert equivalence.check_init(spec, good).ok
    wide = dict(good, **{"gru.weight_ih": good["gru.weight_ih"] * 1.3})
    assert not equivalence.check_init(spec, wide).ok
    biased = dict(good, **{"fc.bias": np.full(2, 0.01, np.float32)})
    assert not equivalence.check_init(spec, biased).ok
    skewed = dict(good, **{"gru.weight_hh": good["gru.weight_hh"] * 1.01})
    assert not equivalence.check_init(spec, skewed).ok
    resnet = get_spec("resnet50")  # layer1.1.conv1 and layer1.2.conv1 have one shape
    probe = equivalence.probe_weights(resnet, 0)
    assert equivalence.check_init(resnet, {k: probe[k] for k in ("layer1.1.conv1.weight", "layer1.2.conv1.weight")}).ok
    twins = {"layer1.1.conv1.weight": probe["layer1.1.conv1.weight"], "layer1.2.conv1.weight": probe["layer1.1.conv1.weight"]}
    assert "starts bit-identical to layer1.1.conv1.weight" in equivalence.check_init(resnet, twins).detail


def test_logit_and_dropout_bounds():
    tol = equivalence.TOLERANCES["cnn"]
    ref = np.linspace(-3, 3, 40, dtype=np.float32).reshape(4, 10)
    assert equivalence.check_logits(ref, ref + np.float32(5e-5), tol).ok
    assert not equivalence.check_logits(ref, ref * np.float32(1.001), tol).ok
    assert not equivalence.check_logits(ref, ref[:, ::-1], tol).ok
    share = {"fc1.bias": (0.70, 1536)}
    assert equivalence.check_dropout(share, {"fc1.bias": (0.72, 1536)}).ok
    assert not equivalence.check_dropout(share, {"fc1.bias": (0.58, 1536)}).ok


def test_digest_check_follows_the_declared_layout(data_cache):
    from harness import data as datasets
    from harness.data.cache import array_digest, open_prepared
    from harness.model_input import to_layout

    spec = get_spec("cnn")
    prepared = datasets.prepare("synthetic", spec, 64, data_cache)
    arrays = open_prepared(prepared.folder)
    seen = {"x": {"sha256": array_digest(to_layout(arrays["x_train"], "NHWC")), "by": "test"},
            "y": {"sha256": array_digest(arrays["y_train"]), "by": "test"}}
    disk = {n: prepared.manifest["arrays"][n]["sha256"] for n in ("x_train", "y_train")}
    res = {"layout": "NHWC", "digest": seen, "disk": disk}
    assert equivalence.check_data(prepared.folder, prepared.manifest, res).ok
    assert not equivalence.check_data(prepared.folder, prepared.manifest, dict(res, layout="NCHW")).ok


def test_matrix_shows_failures_and_skips():
    check = equivalence.Check(False, 0.5, "bad")
    report = {"checks": ["shapes", "logits"], "rows": [
        equivalence.Row("python/a/cnn", "failed", checks={"shapes": equivalence.Check(True, 0.0, ""),
                                                         "logits": check}).to_dict(),
        equivalence.Row("julia/flux/cnn", "skipped", "juliacall not installed").to_dict()]}
    text = equivalence.matrix(report)
    assert "FAIL 0.5" in text and "skipped: juliacall not installed" in text
    assert equivalence.failures(report) == ["python/a/cnn logits: bad"]
    assert os.linesep not in equivalence.Check(True, 1e-7, "").cell()


def test_transfer_check_compares_accuracy_classes_and_logits():
    tol = equivalence.TOLERANCES["cnn"]
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 300)
    a, b = rng.normal(size=(300, 10)).astype(np.float32), rng.normal(size=(300, 10)).astype(np.float32)
    same = {("impl", "impl"): a, ("impl", "ref"): a + np.float32(1e-6), ("ref", "ref"): b, ("ref", "impl"): b}
    assert equivalence.check_transfer(y, same, tol).ok
    swapped = {**same, ("ref", "impl"): b[:, ::-1]}  # a class order mixed up on loading
    assert not equivalence.check_transfer(y, swapped, tol).ok
    nudged = {**same, ("impl", "ref"): a * np.float32(1.01)}  # same classes, different logits
    assert not equivalence.check_transfer(y, nudged, tol).ok
