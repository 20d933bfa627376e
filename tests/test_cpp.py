"""The C++ runtime's own behaviour: the compile cache and a source that does not compile.

The models themselves are tested like every other implementation, through the registry
(test_implementations.py, test_equivalence.py). Here a tiny pybind11 source stands in for them
where only the cache is under test (it compiles in seconds; the models take minutes).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, harness, harness_json
from harness import runtimes
from harness.equivalence import load_weights
from harness.registry import select
from harness.runtimes import cpp
from harness.specs import get_spec

(CNN,) = select("cpp", "libtorch", None, "cnn")

PROBE = """#include <pybind11/pybind11.h>
#include "answer.h"
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("answer", [] { return ANSWER; }); }
"""

# One worker process's compile-or-reuse, as import_framework does it.
LOAD = """import json, sys
from pathlib import Path
from harness.runtimes import cpp
from harness.specs import get_spec
module, facts = cpp.load_extension(Path(sys.argv[1]), Path(sys.argv[2]))
print(json.dumps({**facts, "answer": module.answer()}))
"""


@pytest.fixture(scope="module")
def toolchain():
    reason = runtimes.availability(CNN)
    if reason:
        pytest.skip(reason)


def start_worker(sources: Path, cache: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", LOAD, str(sources), str(cache)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out)


def test_compile_cache_is_keyed_by_the_sources(toolchain, tmp_path):
    sources, cache = tmp_path / "probe", tmp_path / "cache"
    sources.mkdir()
    (sources / "probe.cpp").write_text(PROBE)
    (sources / "answer.h").write_text("#define ANSWER 1\n")

    # Two workers at once on a new key: one compiles, the other waits for it and reuses its build.
    first = [finish(p) for p in [start_worker(sources, cache), start_worker(sources, cache)]]
    assert sorted(f["cached"] for f in first) == [False, True]
    assert {f["key"] for f in first} == {first[0]["key"]} and {f["answer"] for f in first} == {1}
    built = next(f for f in first if not f["cached"])
    assert built["seconds"] > 0 and built["built_s"] == built["seconds"]

    again = finish(start_worker(sources, cache))  # a later worker: no compiler run at all
    assert again["cached"] and again["seconds"] == 0.0 and again["key"] == built["key"]
    assert again["built_s"] == built["built_s"]

    (sources / "answer.h").write_text("#define ANSWER 2\n")  # a header is a source too
    changed = finish(start_worker(sources, cache))
    assert not changed["cached"] and changed["answer"] == 2 and changed["key"] != built["key"]
    assert sorted(p.name for p in cache.iterdir()) == sorted([built["key"], changed["key"]])
    assert (cache / changed["key"] / "src" / "answer.h").read_text() == "#define ANSWER 2\n"


def test_a_source_that_does_not_compile_fails_the_run_with_the_compilers_message(toolchain, data_cache, tmp_path,
                                                                                monkeypatch):
    models = tmp_path / "models"
    shutil.copytree(REPO / "cpp_models", models)
    cnn = models / "libtorch" / "cnn.cpp"
    text = cnn.read_text()
    assert "x = torch::flatten(x, 1);" in text
    cnn.write_text(text.replace("x = torch::flatten(x, 1);", "x = torch::flatten(x, 1)"))  # a missing ';'
    monkeypatch.setenv(cpp.MODELS_VAR, str(models))
    monkeypatch.setenv(cpp.CACHE_VAR, str(tmp_path / "cache"))
    monkeypatch.setenv("MAX_JOBS", "1")  # ninja stops at cnn.cpp, the first source, instead of compiling all four
    proc, record = harness_json("--lang", "cpp", "--framework", "libtorch", "--model", "cnn", "--data", "synthetic",
                                "--samples", "64", "--epochs", "1", "--quiet", "--out", str(tmp_path / "out"),
                                cache=data_cache)
    assert proc.returncode == 1 and record["status"] == "failed"
    assert record["error"].startswith("CompileError: the C++ sources of")
    # g++ quotes with ‘’ in a UTF-8 locale, '' in C
    assert "cnn.cpp:" in record["error"] and re.search("error: expected .;. before", record["error"]), record["error"]
    assert "Traceback" not in proc.stderr


def test_missing_toolchain_is_named_with_the_fix(monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler")
    reason = runtimes.availability(CNN)
    if reason and "no-such-compiler" not in reason:
        pytest.skip(reason)  # something else is missing first
    assert "no C++ compiler (no-such-compiler)" in reason and "python3 -m harness setup --cpp" in reason


@pytest.mark.parametrize("model", ["cnn", "rnn"])
def test_weights_then_predict_agree_with_python(model, toolchain, data_cache, tmp_path):
    """`weights` and `predict` through the CLI: the C++ model's own initial weights, loaded into
    C++ and into Python PyTorch, give the same logits."""
    spec = get_spec(model)
    cpp_args = ["--lang", "cpp", "--framework", "libtorch", "--model", model]
    w = tmp_path / "w.npz"
    proc = harness("weights", *cpp_args, "--seed", "3", "--out", str(w), cache=data_cache)
    assert proc.returncode == 0, proc.stderr
    assert f"{spec.param_count:,} trainable parameters" in proc.stdout
    weights = load_weights(w)
    assert {k: v.shape for k, v in weights.items()} == spec.weight_shapes()
    other = tmp_path / "other.npz"
    assert harness("weights", *cpp_args, "--seed", "4", "--out", str(other), cache=data_cache).returncode == 0
    key = "fc.weight" if model == "rnn" else "fc1.weight"
    assert not np.array_equal(weights[key], load_weights(other)[key]), "the seed reaches the C++ initialisers"

    rng = np.random.default_rng(0)
    x = (rng.uniform(0, 1, (5, 3, 32, 32)).astype(np.float32) if model == "cnn"
         else rng.integers(0, 30_000, (5, 150)).astype(np.int32))  # int32 ids: widened by the harness
    np.save(tmp_path / "x.npy", x)
    logits = {}
    for lang, framework in (("cpp", "libtorch"), ("python", "pytorch")):
        out = tmp_path / f"{lang}.npy"
        proc = harness("predict", "--lang", lang, "--framework", framework, "--model", model, "--weights", str(w),
                       "--input", str(tmp_path / "x.npy"), "--out", str(out), cache=data_cache)
        assert proc.returncode == 0, proc.stderr
        logits[lang] = np.load(out)
    assert logits["cpp"].shape == (5, spec.num_classes) and logits["cpp"].dtype == np.float32
    np.testing.assert_allclose(logits["cpp"], logits["python"], rtol=1e-5, atol=1e-5)  # one libtorch, one float32
