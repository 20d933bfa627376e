"""The R runtime: R inside the worker through rpy2, reticulate on that same Python, arrays handed
over without a copy, R errors surfacing as one message, and an exit that cannot hang.

The models themselves are tested with every other implementation (test_implementations.py and
the equivalence checks); these tests cover the binding. Skipped, with the reason `list` gives,
where R, rpy2 or reticulate >= 1.31 is missing.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, harness_json
from harness import install_r, runtimes
from harness.registry import select

(CNN_TF,) = select("r", "keras", "tensorflow", "cnn")
REASON = runtimes.availability(CNN_TF)
needs_r = pytest.mark.skipif(bool(REASON), reason=REASON or "")


def test_setup_is_idempotent_where_r_is_present(monkeypatch):
    """install_system() calls apt-get only for missing Debian packages."""
    calls = []
    monkeypatch.setattr(install_r.subprocess, "run", lambda cmd, *a, **k: calls.append(cmd) or _fake_dpkg(cmd))
    monkeypatch.setattr(install_r.shutil, "which", lambda name: f"/usr/bin/{name}")
    install_r.install_system()
    assert [c[0] for c in calls] == ["dpkg-query"], "nothing installed when every package is there"


def _fake_dpkg(cmd):
    lines = "".join(f"{p} installed\n" for p in install_r.DEBIAN_PACKAGES)
    return subprocess.CompletedProcess(cmd, 0, stdout=lines, stderr="")


def test_reticulate_is_new_enough():
    """Not under needs_r: that skip is exactly the case this test must catch (an old reticulate)."""
    if shutil.which("R") is None:
        pytest.skip("R is not installed: python3 -m harness setup --r")
    found = install_r.reticulate_version()
    assert found and install_r._version(found) >= install_r.RETICULATE_MIN, found


def test_a_failing_rscript_is_named_not_taken_for_a_missing_package(tmp_path, monkeypatch):
    """R present but Rscript failing used to read "reticulate is not installed" (and skip every R test)."""
    fake = tmp_path / "Rscript"
    fake.write_text("#!/bin/sh\necho 'Fatal error: cannot open file libR.so' >&2\nexit 1\n")
    fake.chmod(0o755)
    (tmp_path / "R").symlink_to(fake)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    runtime = runtimes.get("r")
    runtime._reticulate_version.cache_clear()
    try:
        reason = runtime.availability(CNN_TF)
    finally:
        runtime._reticulate_version.cache_clear()
    assert reason and "R is installed but Rscript exits with code 1: Fatal error: cannot open file libR.so" in reason
    assert "not installed" not in reason.split(";")[0]


@needs_r
def test_run_hosts_r_in_the_worker(data_cache, tmp_path):
    proc, record = harness_json("--lang", "r", "--framework", "keras", "--backend", "tensorflow", "--model", "cnn",
                                "--data", "synthetic", "--samples", "256", "--epochs", "2", "--out", str(tmp_path),
                                "--quiet", cache=data_cache)
    assert proc.returncode == 0, f"{record.get('error')}\n{record.get('log_tail', '')}"
    versions, r = record["versions"], record["info"]["r"]
    assert versions["R"].startswith("4.") and versions["rpy2"] == "3.5.17"
    assert install_r._version(versions["reticulate"]) >= install_r.RETICULATE_MIN
    assert r["pid"] == r["python_pid"], "R runs inside the worker process, not beside it"
    assert r["attached_by"] == "the current process", "reticulate found the running interpreter"
    assert os.path.realpath(r["python"]) == os.path.realpath(sys.executable)
    handoff = r["handoff"]
    assert handoff["same_object"], "R holds the very numpy array the harness handed over"
    # As R doubles the 256 x 3072 float32 images alone would add 6.3 MB to R's heap.
    assert handoff["r_heap_growth_bytes"] < 0.05 * handoff["array_bytes"], handoff
    assert record["layout"] == "NHWC" and record["epochs"][1]["loss"] < record["epochs"][0]["loss"], "it learns"


# Run in a fresh interpreter that ends normally (not with the worker's os._exit): R's teardown
# must not hang it. Prints one JSON line of findings.
PROBE = r'''
import hashlib, json, sys
import numpy as np
from harness.protocol import RunOptions
from harness.registry import select
from harness.runtimes import r
from harness.specs import get_spec

(impl,) = select("r", "keras", "tensorflow", "cnn")
options, spec, tmp = RunOptions(backend="tensorflow"), get_spec("cnn"), sys.argv[1]
r.import_framework(impl, options)
out = {}

with open(f"{tmp}/nested.R", "w") as f:
    f.write('check_width <- function(width) {\n  if (width > 10) stop("width ", width, " is too large")\n}\n'
            'build_model <- function(spec, options) {\n  check_width(64L)\n}\n')
with open(f"{tmp}/python_error.R", "w") as f:
    f.write('build_model <- function(spec, options) {\n  keras <- reticulate::import("keras")\n'
            '  keras$layers$Dense(-3L)\n}\n')
for name in ("nested", "python_error"):
    try:
        r.load([f"{tmp}/{name}.R"], spec, options)
    except r.RError as e:
        out[name] = str(e)

trainer = r.build(impl, spec, options)
x = np.random.default_rng(0).random((128, 32, 32, 3), dtype=np.float32)
y = np.arange(128, dtype=np.int64) % 10
trainer.fit_data(x, y)
out["handoff"] = trainer.info["r"]["handoff"]
out["digest_matches"] = trainer.data_digest("x") == hashlib.sha256(x.tobytes()).hexdigest()
x[0, 0, 0, 0] = 42.0  # R holds this memory, not a copy: its digest sees the write
out["digest_follows_write"] = trainer.data_digest("x") == hashlib.sha256(x.tobytes()).hexdigest()
w = trainer.get_weights()
w["conv1.weight"] = w["conv1.weight"][:, :1]
try:
    trainer.set_weights(w)  # the shared canonical-weight check refuses it before R sees it
except ValueError as e:
    out["shared_check"] = str(e)
try:
    trainer._method("set_weights", weights=w)  # past that check: Keras' own error, raised in R
except r.RError as e:
    out["keras_error"] = str(e)
print(json.dumps(out))
'''


@needs_r
def test_binding_in_a_plain_interpreter(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), KERAS_BACKEND="tensorflow")
    proc = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'extern "Python"' not in proc.stderr, "R called into Python after the interpreter ended"
    out = json.loads(proc.stdout.strip().splitlines()[-1])

    assert out["nested"] == "R error in check_width(64L) at nested.R:2: width 64 is too large"
    assert out["python_error"].startswith("R error in keras$layers$Dense(-3L) at python_error.R:3: ValueError:")
    assert "\n" not in out["python_error"].split("ValueError:")[0]
    assert out["shared_check"] == "weights differ from the cnn spec: conv1.weight has shape (50, 1, 3, 3), spec (50, 3, 3, 3)"
    assert out["keras_error"].startswith("R error in l$kernel$assign(") and "train.R:" in out["keras_error"]

    assert out["handoff"]["same_object"]
    assert out["digest_matches"] and out["digest_follows_write"]


def test_r_temporary_folder_is_unpredictable_and_private(tmp_path, monkeypatch):
    """tempfile.mkdtemp: a planted dl-rosetta-r-<pid> is never used; stale folders of ended workers
    go, links and other processes' folders stay."""
    import stat
    import tempfile

    from harness.runtimes import r

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    planted = tmp_path / f"{r.TMP_PREFIX}{os.getpid()}"
    planted.mkdir()
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"{r.TMP_PREFIX}{ended.stdout.strip()}-abc123"
    stale.mkdir()
    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / f"{r.TMP_PREFIX}{ended.stdout.strip()}-link"
    link.symlink_to(target)
    first, second = r._r_tmpdir(), r._r_tmpdir()
    assert first != second and str(planted) not in (first, second)
    assert os.path.basename(first).startswith(f"{r.TMP_PREFIX}{os.getpid()}-")
    assert stat.S_IMODE(os.stat(first).st_mode) == 0o700
    assert not stale.exists() and link.is_symlink() and target.exists() and planted.exists()
