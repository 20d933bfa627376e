"""Worker processes: a crash, a hang or a kill ends that run with its reason, never the suite."""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

from conftest import REPO, children
from harness import data, launch
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


def test_sigterm_to_the_harness_takes_its_worker_along(data_cache):
    """kill (SIGTERM) of `python -m harness` kills the worker too: no orphan trains on."""
    env = dict(os.environ, DL_ROSETTA_DATA=str(data_cache))
    proc = subprocess.Popen([sys.executable, "-m", "harness", "--framework", "pytorch", "--model", "cnn", "--data",
                             "synthetic", "--samples", "128", "--epochs", "1000", "--quiet"],
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
