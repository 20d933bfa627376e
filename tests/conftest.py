"""Shared fixtures: an isolated data cache, and runs through the real CLI and worker processes."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# One compute thread per framework process: CI runs two xdist workers on two cores, and every
# worker's subprocess otherwise starts OpenMP/Eigen pools as wide as the machine that spin against
# each other (measured at -n 2: the Python rnn tiny runs took 40.7 s, 27.5 s with this). Tests
# check behaviour, not speed; benchmarks never run under these settings. Set a variable to override.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
    os.environ.setdefault(_var, "1")
# The transformer at its test-only size (harness.specs.TRANSFORMER_SIZES["test"]: 2 blocks, width 64,
# context 64) in this process and every harness and worker process the tests start.
os.environ.setdefault("DL_ROSETTA_TRANSFORMER_SIZE", "test")
# pytest-xdist's workers inherit the controller's terminal size as $COLUMNS/$LINES; the summary
# table takes $COLUMNS as the width to wrap to, so tables printed under -n 2 were squeezed to 80
# columns and the tests reading them failed only in CI. The tests read the width a pipe gets.
for _var in ("COLUMNS", "LINES"):
    os.environ.pop(_var, None)
if "xla_cpu_multi_thread_eigen" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_cpu_multi_thread_eigen=false".strip()


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> Path:
    """One data cache for the whole session, so synthetic sets are prepared once."""
    path = tmp_path_factory.mktemp("data-cache")
    os.environ["DL_ROSETTA_DATA"] = str(path)
    return path


def harness(*args: str, cache: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run `python -m harness ARGS` as a user would; returns the finished process."""
    env = dict(os.environ, DL_ROSETTA_DATA=str(cache))
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def harness_json(*args: str, cache: Path, timeout: float = 900):
    proc = harness(*args, "--format", "json", cache=cache, timeout=timeout)
    assert proc.stdout.strip(), f"no output; stderr:\n{proc.stderr[-3000:]}"
    return proc, json.loads(proc.stdout)


def children(pid: int) -> list[int]:
    """The processes `pid` started (Linux /proc), e.g. a harness's worker."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


# The longest tests start first, so that under xdist none of them begins last and runs alone
# while the other worker idles (ResNet-50 learning: minutes on two cores).
SLOW_FIRST = ("test_learning.py::test_pytorch_beats_chance[resnet50]",
              "test_suite.py::test_suite_killed_midway_resumes_with_every_sample_once",
              "test_learning.py::test_pytorch_beats_chance[rnn]")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("/")[-1], len(rank)))  # stable: the rest keep their order


@pytest.fixture
def stub_worker(tmp_path, monkeypatch):
    """Make this process's harness.launch start tests/worker_stubs.py (the named stub) as the worker."""
    import worker_stubs

    from harness import launch

    def use(name: str, **env):
        monkeypatch.setenv(worker_stubs.ENV, name)
        for k, v in env.items():
            monkeypatch.setenv(k, str(v))
        script = worker_stubs.stub_command(tmp_path)
        monkeypatch.setattr(launch, "interpreter", lambda env: script)

    return use


# --------------------------------------------------------------------------- skips are failures
# A test may skip only because a runtime cannot be reached from this machine; every other skip
# (a framework that is not installed, R whose Rscript fails, a missing environment) hides a
# broken setup and fails the session. The one list of reasons a skip may give:
ALLOWED_SKIPS = {
    "Julia cannot be reached (no julialang.org / pkg.julialang.org here)":
        re.compile(r"^Julia (not found|\S+ at \S+ is older|\S+ found at \S+, but the packages)"),
    "Julia is installed, so the test of the message shown without it does not apply":
        re.compile(r"^Julia and Flux are installed here"),
    "no GPU on this machine":
        re.compile(r"(no NVIDIA GPU|needs a GPU|--device cuda: no)"),
}
_SKIPS: list[tuple[str, str]] = []


def skip_reason(report) -> str:
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, (tuple, list)) and len(longrepr) == 3 else str(longrepr)
    text = text.removeprefix("Skipped: ")
    # a skip inside a shared fixture says whose reason it was; the reason itself follows
    return text.removeprefix("the reference cannot run here: ")


def allowed(reason: str) -> bool:
    return any(p.search(reason) for p in ALLOWED_SKIPS.values())


def pytest_runtest_logreport(report):
    """Runs in the controller for every report, also those xdist's workers send back."""
    if report.skipped and not hasattr(report, "wasxfail"):
        _SKIPS.append((report.nodeid, skip_reason(report)))


def pytest_collectreport(report):
    if report.skipped:  # a whole module skipped at collection
        _SKIPS.append((report.nodeid, skip_reason(report)))


def pytest_sessionfinish(session, exitstatus):
    if hasattr(session.config, "workerinput"):  # an xdist worker: the controller sees its reports
        return
    bad = [(node, why) for node, why in _SKIPS if not allowed(why)]
    if bad and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    session.config._dl_rosetta_bad_skips = bad


def pytest_terminal_summary(terminalreporter):
    bad = getattr(terminalreporter.config, "_dl_rosetta_bad_skips", [])
    if bad:
        terminalreporter.section("skips that are failures (tests/conftest.py ALLOWED_SKIPS)", red=True)
        for node, why in bad:
            terminalreporter.line(f"{node}: {why}")


@pytest.fixture
def variant_worker(tmp_path, monkeypatch):
    """Make the runner start tests/wrong_variants.py as the worker, building the named variant
    (the wrong variants of tests/test_equivalence.py and tests/test_inference.py)."""
    import stat

    import wrong_variants
    from harness import launch

    script = tmp_path / "python-wrong"
    script.write_text(f'#!/bin/sh\nshift 2\nexec "{sys.executable}" "{Path(wrong_variants.__file__)}" "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)

    def use(name: str):
        monkeypatch.setenv(wrong_variants.ENV, name)
        monkeypatch.setattr(launch, "interpreter", lambda env: script)

    return use
