"""`pip install .` gives a `dl-rosetta` command that works from any folder: the wheel carries the R and
Julia model files and the suite files as package data (harness/resources.py finds them through
importlib.resources), and the command lists the implementations and runs a PyTorch benchmark.

Cost (measured on the shared 2-core machine): 35-55 s, most of it the PyTorch run. The wheel is built without isolation and
installed without its dependencies into a fresh venv that sees this environment's packages through
a .pth line (torch, numpy, pandas... are not copied or downloaded); the venv's own site-packages
comes first, so `harness` is the installed one, never the checkout."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from conftest import REPO


def run(*cmd, cwd, env=None, timeout=600):
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    root = tmp_path_factory.mktemp("installed")
    build = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--disable-pip-version-check",
                "-q", "-w", root / "dist", REPO, cwd=root)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = (root / "dist").glob("dl_rosetta-*.whl")
    venv = root / "venv"
    made = run(getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip", venv, cwd=root)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    site = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=root).stdout.strip()
    (Path(site) / "zz-host-packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
                  "--disable-pip-version-check", "-q", wheel, cwd=root)
    assert install.returncode == 0, install.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    elsewhere = root / "elsewhere"  # no checkout here or above
    elsewhere.mkdir()
    return wheel, venv, env, elsewhere


def test_the_wheel_carries_the_model_and_suite_files(installed):
    wheel, *_ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in ("r_models/dl_rosetta.R", "r_models/keras/cnn.R", "julia_models/DLRosetta.jl",
                 "julia_models/flux/env/juliapkg.json", "python_models/pytorch/cnn.py",
                 "harness/suites/python-matrix.toml", "dl_rosetta-0.1.0.dist-info/licenses/LICENSE"):
        assert path in names, path
    entry = zipfile.ZipFile(wheel).read("dl_rosetta-0.1.0.dist-info/entry_points.txt").decode()
    assert "dl-rosetta = harness.cli:entry" in entry


def test_installed_command_lists_and_finds_its_files_from_another_folder(installed):
    wheel, venv, env, elsewhere = installed
    where = run(venv / "bin" / "python", "-c", "import harness, harness.resources as r; "
                "print(harness.__file__); print(r.suites_dir()); print(r.source('r_models/keras/cnn.R'))",
                cwd=elsewhere, env=env)
    module, suites, r_file = where.stdout.split()
    assert module.startswith(str(venv)) and suites.startswith(str(venv)) and r_file.startswith(str(venv))
    version = run("dl-rosetta", "--version", cwd=elsewhere, env=env)
    assert version.returncode == 0 and version.stdout.startswith("dl-rosetta 0.1.0")
    listed = run("dl-rosetta", "list", "--format", "json", cwd=elsewhere, env=env)
    assert listed.returncode == 0, listed.stderr
    rows = {(r["lang"], r["framework"], r["backend"], r["model"]): r for r in json.loads(listed.stdout)}
    assert rows[("python", "pytorch", "", "cnn")]["runnable"] == "yes"
    assert not any("not implemented" in r["reason"] for r in rows.values())  # every model file was found
    dry = run("dl-rosetta", "suite", "python-cnn", "--dry-run", cwd=elsewhere, env=env)
    assert dry.returncode == 0 and "python/pytorch/cnn" in dry.stdout, dry.stderr


def test_installed_command_runs_a_pytorch_benchmark_from_another_folder(installed, data_cache):
    wheel, venv, env, elsewhere = installed
    proc = run("dl-rosetta", "--framework", "pytorch", "--model", "cnn", "--data", "synthetic", "--samples", "128",
               "--epochs", "2", "--quiet", "--out", elsewhere / "results", "--format", "json", cwd=elsewhere,
               env={**env, "DL_ROSETTA_DATA": str(data_cache)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(proc.stdout)
    assert record["status"] == "ok" and len(record["epochs"]) == 2
    assert (elsewhere / "results" / f"{record['run_id']}.json").exists()
