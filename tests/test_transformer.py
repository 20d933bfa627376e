"""The transformer's spec, data, optimiser and FLOP count (the generic tests run it like every model)."""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
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
                          capture_output=True, text=True)
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
