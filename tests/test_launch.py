"""Worker processes: a crash, a hang or a kill ends that run with its reason, never the suite."""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, children
from harness import data, launch, results
from harness.commands import run as run_command
from harness.protocol import RunOptions
from harness.registry import select
from harness.launch import Job, run_job
from harness.specs import CNN

(PYTORCH_CNN,) = select("python", "pytorch", None, "cnn")


def job(prepared, **kw) -> Job:
    base = dict(impl=PYTORCH_CNN, options=RunOptions().to_dict(),
                data={"folder": str(prepared.folder), "samples": 128, "name": "synthetic"}, epochs=1, batch_size=64)
    return Job(**{**base, **kw})


def test_error_inside_the_worker_is_reported(data_cache):
    prepared = data.prepare("synthetic", CNN, 128)
    broken = job(prepared, data={"folder": "/nonexistent", "samples": None, "name": "synthetic"})
    outcome = run_job(broken)
    assert outcome.status == "failed"
    assert "FileNotFoundError" in outcome.error and "/nonexistent" in outcome.error


def test_hang_past_the_timeout_is_killed(data_cache):
    prepared = data.prepare("synthetic", CNN, 128)
    outcome = run_job(job(prepared, epochs=1000, timeout=8.0))
    assert outcome.status == "failed" and outcome.error == "timed out after 8 s"


def test_killed_worker_keeps_the_epochs_it_finished(data_cache):
    prepared = data.prepare("synthetic", CNN, 128)
    pid = {}

    def on_event(kind, event):
        if kind == "phase" and event["name"] == "start":
            pid["worker"] = event["pid"]
        if kind == "epoch" and event["epoch"] == 1:  # as the kernel's OOM killer would
            os.kill(pid["worker"], signal.SIGKILL)

    outcome = run_job(job(prepared, epochs=50), on_event=on_event)
    assert outcome.status == "failed"
    assert outcome.error.startswith("worker killed by SIGKILL (out of memory?)")
    assert [e["epoch"] for e in outcome.epochs][:2] == [0, 1]


def test_a_failed_run_does_not_end_the_suite(data_cache, tmp_path, monkeypatch, capsys):
    calls = []
    real = launch.run_job

    def first_one_hangs(job, **kw):
        calls.append(job)
        if len(calls) == 1:
            job.timeout = 0.5
        return real(job, **kw)

    monkeypatch.setattr(launch, "run_job", first_one_hangs)
    parser = argparse.ArgumentParser()
    run_command.add_arguments(parser)
    args = parser.parse_args(["--framework", "pytorch", "--model", "cnn", "--data", "synthetic", "--samples", "128",
                              "--epochs", "2", "--repeats", "2", "--quiet", "--out", str(tmp_path), "--format", "json"])
    assert run_command.main(args) == 1  # non-zero: one run failed
    records = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in records] == ["failed", "ok"]
    assert records[0]["error"] == "timed out after 0.5 s" and "log_tail" in records[0]
    assert len(records[1]["epochs"]) == 2
    assert len(list(tmp_path.glob("*.json"))) == 2  # both records kept on disk


def test_sigterm_to_the_harness_takes_its_worker_along(data_cache, tmp_path):
    """kill (SIGTERM) of `python -m harness` kills the worker too: no orphan trains on."""
    env = dict(os.environ, DL_ROSETTA_DATA=str(data_cache))
    proc = subprocess.Popen([sys.executable, "-m", "harness", "--framework", "pytorch", "--model", "cnn", "--data",
                             "synthetic", "--samples", "128", "--epochs", "1000", "--quiet", "--out", str(tmp_path)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (workers := children(proc.pid)):
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no worker started"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    for pid in workers:
        for _ in range(100):
            if not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read().split(")")[1][:3]:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"worker {pid} outlived the harness")


# --------------------------------------------------------------------------- the worker dies with the harness
def _wait_for(predicate, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _gone(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().split(")")[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")  # a zombie has ended; only its parent (now init) has to reap it


def test_sigkill_of_the_harness_takes_its_worker_along(data_cache, tmp_path):
    """kill -9 of the harness while its worker works without a word (no event write to fail): the
    worker must be gone within a second (PR_SET_PDEATHSIG), not train on as an orphan."""
    import worker_stubs

    marker = tmp_path / "building"
    env = dict(os.environ, DL_ROSETTA_DATA=str(data_cache), WORKER_STUB="silent-build", STUB_DIR=str(tmp_path),
               STUB_MARKER=str(marker), PYTHONPATH=str(REPO))
    proc = subprocess.Popen(worker_stubs.driver_argv("--framework", "pytorch", "--model", "cnn", "--data", "synthetic",
                                                      "--samples", "128", "--epochs", "1", "--quiet",
                                                      "--out", str(tmp_path / "out")),
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: marker.exists() or proc.poll() is not None, 120, "the worker never reached its build")
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        worker = int(marker.read_text())
        assert worker in children(proc.pid)
        proc.kill()
        proc.wait()
        _wait_for(lambda: _gone(worker), 1.0, f"worker {worker} outlived the harness by more than a second")
    finally:
        proc.kill()
        if marker.exists() and not _gone(int(marker.read_text())):
            os.kill(int(marker.read_text()), signal.SIGKILL)


def test_the_watchdog_ends_a_worker_whose_parent_ended_without_prctl(tmp_path):
    """The portable fallback: where PR_SET_PDEATHSIG is unavailable, the worker's watchdog thread
    ends it once its parent's pid changes (the parent ended: the worker now belongs to init)."""
    ready = tmp_path / "child"
    code = f"""
import os, sys, time
sys.path.insert(0, {str(REPO)!r})
from harness import launch
launch._PRCTL = None  # as on a system without prctl
child = os.fork()
if child == 0:
    os.environ[launch.PARENT_VAR] = str(os.getppid())
    launch.guard_parent()
    open({str(ready)!r}, "w").write(str(os.getpid()))
    time.sleep(60)
    os._exit(3)  # the watchdog did not end it
while not os.path.exists({str(ready)!r}) or not open({str(ready)!r}).read():
    time.sleep(0.01)
os._exit(0)  # the parent ends; its child is an orphan now
"""
    subprocess.run([sys.executable, "-c", code], timeout=60, check=True)
    child = int(ready.read_text())
    try:
        _wait_for(lambda: _gone(child), 2 * launch.WATCHDOG_INTERVAL_S + 1, f"orphan {child} lives on")
    finally:
        if not _gone(child):
            os.kill(child, signal.SIGKILL)


def sigint_as_at_a_terminal():
    """Ctrl-C delivered and at its default in the child. Both an ignored SIGINT and a blocked one are
    inherited across exec, and then Python raises no KeyboardInterrupt: the SIGINT case hung in full
    suites, its harness started from an xdist worker that had one or the other."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@pytest.mark.parametrize("sig, code, name", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "SIGINT (Ctrl-C)")])
def test_an_interrupted_run_is_recorded_with_what_finished(data_cache, tmp_path, sig, code, name):
    """SIGTERM (a scheduler, a CI timeout) and Ctrl-C end the harness and its worker, and the run in
    progress is recorded: status "interrupted", the reason, the epochs that finished; --resume runs it."""
    import worker_stubs

    env = dict(os.environ, DL_ROSETTA_DATA=str(data_cache), WORKER_STUB="sleep-steps", STUB_STEP_S="0.1",
               STUB_DIR=str(tmp_path), PYTHONPATH=str(REPO))
    out = tmp_path / "out"
    proc = subprocess.Popen(worker_stubs.driver_argv("--framework", "pytorch", "--model", "cnn", "--data", "synthetic",
                                                      "--samples", "128", "--epochs", "1000", "--quiet",
                                                      "--out", str(out)),
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=sigint_as_at_a_terminal)
    logs = out / "logs"
    _wait_for(lambda: proc.poll() is not None or (logs.exists() and any(logs.iterdir()) and children(proc.pid)), 120,
              "no worker started")
    worker = children(proc.pid)[0]
    time.sleep(1.5)  # a few epochs of 0.2 s
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)  # stderr read meanwhile: no full pipe can block the parent
    assert proc.returncode == code, err
    _wait_for(lambda: _gone(worker), 5, "the worker outlived the harness")
    (record,) = results.read_records([out])
    assert record["status"] == "interrupted", record
    finished = len(record["epochs"])
    assert record["error"] == f"interrupted by {name} after {finished} of 1000 epochs; --resume runs it again"
    assert [e["epoch"] for e in record["epochs"]] == list(range(finished)) and finished >= 1
    assert f"recorded in {record['_path']}" in err and "Traceback" not in err
