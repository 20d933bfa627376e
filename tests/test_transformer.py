"""The transformer's spec, data, optimiser and FLOP count (the generic tests run it like every model)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from harness import equivalence
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
