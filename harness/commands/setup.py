"""`python3 -m harness setup`: create the environments, idempotently, with the standard library only.

    (no flag)     .venv with the harness, PyTorch and the test tools
    --frameworks  + every Python framework of .venv (the registry rows' extras and Debian packages), the
                  report tools (matplotlib, plotly, pyarrow, MLflow) and the deployment runtimes (extra
                  "deploy": harness/deploy)
    --legacy      .venv-legacy: numpy 1.23.5 with MXNet, Chainer, PyTensor (reached only through workers)
    --r           R from Debian, a reticulate that is safe inside rpy2, rpy2 in .venv
    --julia       juliacall in .venv (Julia itself and its packages come through juliacall on first use)
    --cpp         the C++ toolchain of the C++ frameworks' rows (g++, ninja; Python's headers if missing)
    --all         everything above
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MAIN = REPO / ".venv"
LEGACY = REPO / ".venv-legacy"
LEGACY_PACKAGES = ["numpy==1.23.5", "mxnet==1.9.1", "chainer==7.8.1", "pytensor==2.27.1",
                   "onnx==1.15.0"]  # MXNet's and Chainer's exporters (onnx.mapping went in 1.16)
# Chainer's exporter pins chainer<7 in its metadata but runs with 7.8 (tests/test_inference.py): no deps
LEGACY_NO_DEPS = ["onnx-chainer==1.6.0"]
# the report test opens the HTML page in headless Chromium; tests/slurm_cluster.py starts Slurm's daemons
TEST_DEBIAN_PACKAGES = ["chromium", "slurmctld", "slurmd", "slurm-client", "munge"]
LEGACY_BUILD_CONSTRAINT = "setuptools<81"  # chainer 7.8.1's setup.py needs pkg_resources


FLAGS = {
    "frameworks": "also every Python framework of .venv (the registry rows' pyproject extras and Debian packages) "
                  "and the report tools (matplotlib, plotly, pyarrow, MLflow)",
    "legacy": "also .venv-legacy: numpy 1.23.5 with MXNet, Chainer and PyTensor (reached only through workers)",
    "r": "also R from Debian, a reticulate that is safe inside rpy2 (.r-lib/), and rpy2 in .venv",
    "julia": "also juliacall in .venv, then Julia and its packages through juliapkg (needs julialang.org)",
    "cpp": "also the C++ frameworks' toolchain from Debian (g++, ninja; Python's headers if missing)",
    "all": "everything above, and Chromium for the report's browser test (what CI runs)",
}


def add_arguments(p) -> None:
    p.description = (p.description or "") + " Without a flag: .venv with the harness, PyTorch (CPU wheel) and " \
        "the test tools. Idempotent: run it again to add more."
    for flag, text in FLAGS.items():
        p.add_argument(f"--{flag}", action="store_true", help=text)


def say(text: str) -> None:
    print(f"[setup] {text}", file=sys.stderr, flush=True)


def sh(*cmd, **kw) -> None:
    subprocess.run([str(c) for c in cmd], check=True, **kw)


def venv(path: Path) -> Path:
    python = path / "bin" / "python"
    if not python.exists():
        say(f"creating {path.name}")
        sh(sys.executable, "-m", "venv", path)
    return python


def pip(python: Path, *args, env: dict | None = None) -> None:
    sh(python, "-m", "pip", "install", "--disable-pip-version-check", "-q", *args, env=env)


def setup_main(extras: list[str]) -> None:
    python = venv(MAIN)
    say(f"installing the harness into .venv with extras {','.join(extras)}")
    pip(python, "-e", f"{REPO}[{','.join(extras)}]")


def setup_legacy() -> None:
    python = venv(LEGACY)
    constraint = LEGACY / "build-constraints.txt"
    constraint.write_text(LEGACY_BUILD_CONSTRAINT + "\n")
    say("installing " + " ".join(LEGACY_PACKAGES) + " into .venv-legacy")
    env = dict(os.environ, PIP_BUILD_CONSTRAINT=str(constraint))  # pip < 25 reads PIP_CONSTRAINT for builds
    env["PIP_CONSTRAINT"] = str(constraint)
    pip(python, *LEGACY_PACKAGES, env=env)
    pip(python, "--no-deps", *LEGACY_NO_DEPS, env=env)


def python_frameworks() -> tuple[list[str], list[str]]:
    """The pyproject extras and Debian packages of every Python framework of .venv (registry rows)."""
    from harness.registry import FRAMEWORKS

    rows = [f for f in FRAMEWORKS if f.lang == "python" and f.env == "main" and f.extra and not f.retired]
    return [f.extra for f in rows], [p for f in rows for p in f.debian]


def cpp_debian_packages() -> list[str]:
    """The C++ frameworks' Debian packages (registry rows), and Python's headers if this
    interpreter (which .venv is made from) has none."""
    import sysconfig

    from harness.registry import FRAMEWORKS

    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    packages = [p for f in FRAMEWORKS if f.lang == "cpp" for p in f.debian]
    return packages + ([] if headers.exists() else ["python3-dev"])


def main(args) -> int:
    everything = args.all
    extras, debian = ["pytorch", "test"], []
    if everything or args.frameworks:
        more, debian = python_frameworks()
        extras += [e for e in more if e not in extras] + ["report", "mlflow", "deploy"]
    if everything or args.r:
        extras.append("r")
    if everything or args.julia:
        extras.append("julia")
    from harness import install_r

    # One apt-get for all Debian packages; R must exist before rpy2 builds against it.
    debian += (install_r.DEBIAN_PACKAGES if everything or args.r else []) + (TEST_DEBIAN_PACKAGES if everything else [])
    debian += cpp_debian_packages() if everything or args.cpp else []
    if debian:
        install_r.install_system(debian)
    setup_main(extras)
    if everything or args.legacy:
        setup_legacy()
    if everything or args.r:
        install_r.install_r_packages(MAIN / "bin" / "python")
    if everything or args.julia:  # Julia and its packages come through juliapkg (network): see harness/runtimes/julia.py
        julia = subprocess.run([str(MAIN / "bin" / "python"), "-m", "harness.runtimes.julia", "install"], cwd=REPO)
        if julia.returncode != 0:
            say("Julia or its packages could not be installed; `python -m harness list` gives the Julia rows' reason")
            if not everything:
                return 1  # asked for Julia alone: that failure is the answer
    say("done")
    return 0
