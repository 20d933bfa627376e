"""The transformer's spec, data, optimiser and FLOP count (the generic tests run it like every model)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, harness

from harness import data, equivalence
from harness.data import cache, shakespeare, synthetic, text
from harness.errors import UsageError
from harness.specs import SIZE_VARIABLE, SPECS, TRANSFORMER_SIZES, transformer_spec

FULL = transformer_spec(TRANSFORMER_SIZES["full"])


# --------------------------------------------------------------------------- the spec
def test_full_spec_counts_nanogpts_parameters():
    arch = FULL.arch
    assert (arch.vocab, arch.context, arch.layers, arch.heads, arch.width, arch.mlp_width) == (256, 256, 6, 6, 384, 1536)
    assert FULL.param_count == FULL.counted_params() == 10_844_160
    assert FULL.weight_shapes()["blocks.5.attn.qkv.weight"] == (3 * 384, 384)
    assert not any("head" in k or "lm" in k for k in FULL.weight_shapes()), "the output projection is tied"


def test_the_tests_run_the_test_size_and_its_count_follows():
    spec = SPECS["transformer"]
    assert os.environ[SIZE_VARIABLE] == "test" and spec.arch == TRANSFORMER_SIZES["test"]
    assert spec.param_count == spec.counted_params() < FULL.param_count
    assert spec.input_shape == spec.target_shape == (spec.arch.context,)
    assert {k.split(".")[2] for k in spec.weight_shapes() if k.startswith("blocks.")} == {"ln1", "attn", "ln2", "mlp"}
    assert spec.arch.heads > 1 and spec.arch.layers > 1, "head splitting and stacking stay exercised"


def test_unknown_size_is_refused_naming_the_choices():
    env = dict(os.environ, **{SIZE_VARIABLE: "huge"})
    proc = subprocess.run([sys.executable, "-c", "import harness.specs"], cwd=REPO, env=env,
                          capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and "choices: full, test" in proc.stderr


def test_decay_and_init_follow_the_spec():
    for w in FULL.weights:
        assert w.decay == (len(w.shape) == 2), w.key  # matrices and embeddings, never biases or LayerNorm
        family, mean, std = equivalence.init_law(w)
        if w.key.endswith(("attn.proj.weight", "mlp.proj.weight")):
            assert (family, mean, std) == ("normal", 0.0, pytest.approx(0.02 / math.sqrt(12)))
        elif len(w.shape) == 2:
            assert (family, mean, std) == ("normal", 0.0, 0.02)
        else:
            assert family == ("ones" if w.key.endswith("weight") else "zeros"), w.key  # LayerNorm gain, biases


def test_as_data_carries_every_constant():
    data = json.loads(json.dumps(FULL.as_data()))  # plain data, as R and Julia receive it
    for k in ("vocab", "context", "layers", "heads", "width", "mlp_ratio", "mlp_width", "head_width", "dropout",
              "ln_eps", "tied", "init_std", "residual_std"):
        assert k in data, k
    assert data["target_shape"] == [256] and data["optimizer"]["name"] == "adamw"
    assert data["optimizer"]["weight_decay"] == 0.1 and data["optimizer"]["clip_norm"] == 1.0
    assert {w["key"] for w in data["weights"] if w["decay"]} == {w.key for w in FULL.weights if w.decay}


def test_init_check_knows_the_normal_families():
    spec = SPECS["transformer"]
    rng = np.random.default_rng(0)
    good = {}
    for w in spec.weights:
        family, mean, std = equivalence.init_law(w)
        good[w.key] = (rng.normal(mean, std, w.shape) if family == "normal" else np.full(w.shape, float(family == "ones"))
                       ).astype(np.float32)
    assert equivalence.check_init(spec, good).ok
    flat = dict(good, **{"blocks.0.mlp.proj.weight": good["blocks.0.mlp.fc.weight"].T * 1.0})  # 0.02, not residual
    assert not equivalence.check_init(spec, flat).ok


# --------------------------------------------------------------------------- the data
@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr("urllib.request.urlopen", refuse)


def test_windows_are_x_and_x_shifted_by_one():
    x, y = text.windows(bytes(range(20)), 4)  # 20 // 5 = 4 windows, nothing left over
    assert x.shape == y.shape == (4, 4) and x.dtype == y.dtype == np.int64
    assert x[1].tolist() == [5, 6, 7, 8] and y[1].tolist() == [6, 7, 8, 9]
    x, y = text.windows(bytes(range(23)), 4)  # the last 3 bytes fill no window
    assert len(x) == 4 and y[-1, -1] == 19


def test_shakespeare_decoded_from_a_file_in_the_real_format(tmp_path, monkeypatch, no_network):
    """input.txt is plain bytes; a small file stands in for it with its own digest."""
    spec = SPECS["transformer"]
    context = spec.input_shape[0]
    rng = np.random.default_rng(0)
    body = bytes(rng.choice(list(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz,.;:!?\n'"), 30 * (context + 1)))
    raw = tmp_path / "raw" / shakespeare.FILENAME
    raw.parent.mkdir(parents=True)
    raw.write_bytes(body)
    monkeypatch.setattr(shakespeare, "CHECKSUM", ("sha256", hashlib.sha256(body).hexdigest()))
    prepared = data.prepare("shakespeare", spec, data_dir=tmp_path)
    arrays = cache.open_prepared(prepared.folder)
    cut = int(len(body) * 0.9)
    assert arrays["x_train"].shape == (cut // (context + 1), context)
    assert arrays["x_test"].shape == ((len(body) - cut) // (context + 1), context)
    assert bytes(arrays["x_train"][0].astype(np.uint8)) == body[:context]
    assert bytes(arrays["y_train"][0].astype(np.uint8)) == body[1:context + 1]
    assert bytes(arrays["x_test"][0].astype(np.uint8)) == body[cut:cut + context]  # split by position
    shutil.rmtree(prepared.folder)
    monkeypatch.setattr(shakespeare, "CHECKSUM", ("sha256", "0" * 64))
    with pytest.raises(UsageError, match="checksum mismatch"):
        data.prepare("shakespeare", spec, data_dir=tmp_path)
    assert shakespeare.SIZE == 1_115_394 and shakespeare.CHECKSUM[0] == "sha256"


def test_missing_shakespeare_without_network_names_the_file(tmp_path, no_network):
    with pytest.raises(UsageError) as err:
        data.prepare("shakespeare", SPECS["transformer"], data_dir=tmp_path)
    text_ = str(err.value)
    assert shakespeare.URL in text_ and str(tmp_path / "raw" / "tinyshakespeare" / "input.txt") in text_
    assert "--data synthetic" in text_


def test_full_size_shakespeare_windows():
    assert text.split_sizes(shakespeare.SIZE, 256) == (1_003_854 // 257, 111_540 // 257) == (3906, 434)
    assert data.full_sizes(FULL) == (3906, 434)


def test_a_text_file_is_data_and_too_short_is_one_clear_line(tmp_path):
    spec = SPECS["transformer"]
    context = spec.input_shape[0]
    short = tmp_path / "short.txt"
    short.write_bytes(b"to be or not to be" * 3)
    with pytest.raises(UsageError) as err:
        data.prepare(str(short), spec, data_dir=tmp_path)
    assert "short.txt" in str(err.value) and f"at least {text.minimum_bytes(context):,} bytes" in str(err.value)
    assert "\n" not in str(err.value)
    ok = tmp_path / "ok.txt"
    ok.write_bytes(("All the world's a stage,\n" * 200).encode())
    arrays = cache.open_prepared(data.prepare(str(ok), spec, data_dir=tmp_path).folder)
    assert arrays["x_train"].shape[1] == context and (arrays["y_train"][:, :-1] == arrays["x_train"][:, 1:]).all()
    assert text.minimum_bytes(context) > context + 1
    with pytest.raises(UsageError, match="text file is next-byte data for the transformer"):
        data.prepare(str(ok), SPECS["cnn"], data_dir=tmp_path)


def test_npz_targets_per_position_are_validated(tmp_path):
    spec = SPECS["transformer"]
    t = spec.input_shape[0]
    x = np.zeros((4, t), np.int64)
    path = tmp_path / "seq.npz"
    np.savez(path, x_train=x, y_train=np.zeros(4, np.int64), x_test=x, y_test=np.zeros((4, t), np.int64))
    with pytest.raises(UsageError, match=rf"expected \(4, {t}\)"):
        data.prepare(str(path), spec, data_dir=tmp_path)
    np.savez(path, x_train=x, y_train=np.full((4, t), 256), x_test=x, y_test=np.zeros((4, t), np.int64))
    with pytest.raises(UsageError, match="targets span"):
        data.prepare(str(path), spec, data_dir=tmp_path)


def test_synthetic_text_is_learnable_and_prefix_stable():
    x, y = synthetic.text(300, 0, context=64)
    assert x.shape == y.shape == (300, 64) and (x[:, 1:] == y[:, :-1]).all()
    again, _ = synthetic.text(100, 0, context=64)
    assert (again == x[:100]).all(), "--samples never changes what an example holds"
    # the order-2 chain: an estimate of the next-byte entropy from the pairs' counts is far below ln 256
    seq = np.concatenate([x, y[:, -1:]], axis=1)
    counts = {}
    for row in seq:
        for a, b, c in zip(row, row[1:], row[2:]):
            counts.setdefault((a, b), {}).setdefault(c, 0)
            counts[(a, b)][c] += 1
    total = sum(sum(v.values()) for v in counts.values())
    entropy = -sum(n / total * math.log(n / sum(v.values())) for v in counts.values() for n in v.values())
    assert len(np.unique(seq)) == synthetic.TEXT_ALPHABET and entropy < 1.2 < math.log(256)
    test_x, _ = synthetic.text(50, 0, stream=synthetic.TEST_SEED_OFFSET, context=64)
    assert not (test_x == x[:50]).all()


# --------------------------------------------------------------------------- the optimiser, in numpy
def adamw_clipped(spec, weights: dict, grads: list[dict]) -> dict:
    """The spec's optimiser (harness.specs.Optimizer's docstring) in numpy float64, one step per
    gradient dict: global-norm clipping, decoupled decay on Weight.decay tensors, Adam."""
    opt = spec.optimizer
    decays = {w.key for w in spec.weights if w.decay}
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    m = {k: np.zeros_like(v) for k, v in w.items()}
    v2 = {k: np.zeros_like(v) for k, v in w.items()}
    for t, g in enumerate(grads, start=1):
        norm = math.sqrt(sum(float((x.astype(np.float64) ** 2).sum()) for x in g.values()))
        c = min(1.0, opt.clip_norm / (norm + opt.clip_eps))
        for k in w:
            gk = g[k].astype(np.float64) * c
            if k in decays:
                w[k] *= 1 - opt.lr * opt.weight_decay
            m[k] = opt.beta1 * m[k] + (1 - opt.beta1) * gk
            v2[k] = opt.beta2 * v2[k] + (1 - opt.beta2) * gk**2
            denom = np.sqrt(v2[k]) / math.sqrt(1 - opt.beta2**t) + opt.eps
            w[k] -= opt.lr / (1 - opt.beta1**t) * m[k] / denom
    return w


def test_the_pytorch_step_is_the_specs_adamw_with_global_clipping():
    """Two PyTorch training steps equal the spec's formulas in numpy, with clipping engaged and
    tensors both decayed and not. The threshold is lowered to 0.25 here, below the gradient norm of
    these random bytes (about 0.65 at the test size), so that clipping's factor shows."""
    torch = pytest.importorskip("torch")
    from harness.protocol import Batches, RunOptions
    from python_models.pytorch import transformer

    spec = SPECS["transformer"]
    spec = dataclasses.replace(spec, optimizer=dataclasses.replace(spec.optimizer, clip_norm=0.25))
    probe = equivalence.probe_weights(spec, 0)
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (8, spec.arch.context))
    y = rng.integers(0, 256, (8, spec.arch.context))
    trainer = transformer.build(spec, RunOptions(dropout=False))
    trainer.set_weights(probe)
    trainer.fit_data(x, y)
    probe_model = transformer.GPT(spec.arch, 0.0)
    weights, grads, norms = probe, [], []
    before = probe
    for step, rows in enumerate(([0, 1, 2, 3], [4, 5, 6, 7]), start=1):
        # the gradient at the weights numpy reached, computed by autograd on a separate model
        probe_model.load_state_dict({k: torch.as_tensor(np.asarray(v, np.float32)) for k, v in weights.items()})
        probe_model.zero_grad()
        logits = probe_model(torch.as_tensor(x[rows]))
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), torch.as_tensor(y[rows]).flatten()).backward()
        grads.append({k: p.grad.numpy().copy() for k, p in probe_model.named_parameters()})
        norms.append(math.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads[-1].values())))
        weights = adamw_clipped(spec, probe, grads)
        trainer.train_epoch(Batches(np.asarray([rows])))
        got = trainer.get_weights()
        for k, want in weights.items():
            step_size = np.abs(want - before[k]).max()
            assert np.abs(got[k] - want).max() <= 1e-3 * step_size + 1e-7, (k, step)
        before = weights
    assert min(norms) > 2 * spec.optimizer.clip_norm, "clipping engaged: the test sees its factor"


# --------------------------------------------------------------------------- FLOPs and the peak
def test_flops_follow_the_published_counts():
    from harness import flops
    from harness.specs import CNN, RESNET50, RNN

    n = FULL.counted_params() - 256 * 384  # without the positional embedding
    assert flops.transformer_per_token(FULL) == 6 * n + 12 * 6 * 256 * 384 == 71_553_024
    assert flops.per_example(FULL) == 256 * 71_553_024
    # ResNet-50 at 224 px with its 1000-class head: the published 4.09 G multiply-adds
    assert flops.resnet50_macs(dataclasses.replace(RESNET50, num_classes=1000), 224) == pytest.approx(4.089e9, rel=1e-3)
    assert flops.per_example(RESNET50, 224) == 6 * flops.resnet50_macs(RESNET50, 224) > flops.per_example(RESNET50)
    convs = 32 * 32 * (50 * 3 + 50 * 50) * 9 + 16 * 16 * (100 * 50 + 100 * 100) * 9
    assert flops.per_example(CNN) == 6 * (convs + 6400 * 512 + 512 * 10)
    assert flops.per_example(RNN) == 6 * (150 * 3 * 100 * (125 + 100) + 100 * 2)


def test_datasheet_peaks_match_the_right_part():
    from harness import peak

    assert peak.datasheet("NVIDIA H200", "bf16")["flops_per_s"] == pytest.approx(989.4e12)
    assert peak.datasheet("NVIDIA H100 80GB HBM3", "fp32")["flops_per_s"] == pytest.approx(66.9e12)
    assert peak.datasheet("NVIDIA H100 PCIe", "bf16")["flops_per_s"] == pytest.approx(756.5e12)
    assert peak.datasheet("NVIDIA A100-SXM4-80GB", "bf16")["part"] == "A100"
    assert peak.datasheet("NVIDIA A10", "fp32")["part"] == "A10"
    assert peak.datasheet("NVIDIA V100-SXM2-16GB", "bf16") is None and peak.datasheet("cpu", "fp32") is None


def test_the_peak_is_measured_once_per_machine_and_declared(tmp_path, monkeypatch):
    from harness import peak
    from harness.protocol import Trainer

    class Default(Trainer):  # the protocol's default: numpy's BLAS
        def __init__(self):
            self.info = {}

        fit_data = train_epoch = predict = get_weights = set_weights = param_count = None

    monkeypatch.setattr(peak, "SECONDS", 0.05)
    first = peak.measured(Default(), "fp32", "cpu: test", "somefw", {"numpy": "1"}, tmp_path, own=False)
    assert first["flops_per_s"] > 0 and not first["cached"] and "numpy BLAS" in first["measured_by"]
    again = peak.measured(Default(), "fp32", "cpu: test", "somefw", {"numpy": "1"}, tmp_path, own=False)
    assert again["cached"] and again["flops_per_s"] == first["flops_per_s"]
    assert peak.measured(Default(), "bf16", "cpu: test", "somefw", {}, tmp_path, own=False)["flops_per_s"] is None


def test_weights_and_predict_give_logits_per_position(data_cache, tmp_path):
    from harness import runtimes
    from harness.equivalence import reference_impl

    if runtimes.availability(reference_impl("transformer")):
        pytest.skip(runtimes.availability(reference_impl("transformer")))
    spec = SPECS["transformer"]
    w = tmp_path / "w.npz"
    proc = harness("weights", "--framework", "pytorch", "--model", "transformer", "--out", str(w), cache=data_cache)
    assert proc.returncode == 0, proc.stderr
    x = np.random.default_rng(0).integers(0, 256, (3, spec.arch.context)).astype(np.uint8)  # bytes are ids
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "logits.npy"
    proc = harness("predict", "--framework", "pytorch", "--model", "transformer", "--weights", str(w),
                   "--input", str(tmp_path / "x.npy"), "--out", str(out), cache=data_cache)
    assert proc.returncode == 0, proc.stderr
    assert np.load(out).shape == spec.logits_shape(3) == (3, spec.arch.context, 256)
    np.save(tmp_path / "big.npy", np.full((2, spec.arch.context), 256, np.int64))
    proc = harness("predict", "--framework", "pytorch", "--model", "transformer", "--weights", str(w),
                   "--input", str(tmp_path / "big.npy"), "--out", str(out), cache=data_cache)
    assert proc.returncode == 2 and "token ids must lie in [0, 256)" in proc.stderr
