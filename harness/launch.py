"""Launches one worker process per run and turns its events into a run record.

A worker that crashes, hangs past its timeout or is killed (out of memory) becomes a failed
record with the reason; the caller goes on with the next run.

A worker never outlives the harness. It starts in a process group of its own (so the harness
kills it with everything it started, and the terminal's Ctrl-C reaches only the harness) but in
the harness's session (so the kernel's autogroup scheduling does not give every worker a whole
session's share of the CPU). On Linux the kernel SIGKILLs it the moment its parent ends
(PR_SET_PDEATHSIG, set before exec and again by the worker itself for torchrun's children);
elsewhere the worker's own watchdog ends it when its parent's pid changes. Ctrl-C or SIGTERM of
the harness kills the worker and hands what finished to the caller (KeyboardInterrupt.outcome).
"""
from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import parallel
from harness.interpreters import REPO, interpreter

LOG_TAIL_LINES = 30
SPAWN_VAR = "DL_ROSETTA_T_SPAWN"  # our monotonic clock when we launched the worker (its start-up time)
PARENT_VAR = "DL_ROSETTA_PARENT_PID"  # the harness's pid, which the worker watches
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WATCHDOG_INTERVAL_S = 0.5


def _libc_prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _libc_prctl()  # looked up before any fork: the child between fork and exec only calls it


def die_with_parent() -> bool:
    """Linux: have the kernel SIGKILL this process when the thread that started it ends."""
    return _PRCTL is not None and _PRCTL(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0


def _child_setup() -> None:
    """Between fork and exec of a worker: its own process group, and death with the harness."""
    os.setpgid(0, 0)
    die_with_parent()


def guard_parent() -> None:
    """In the worker, first thing: end with the harness. A parent that ended before this ran (the
    worker now belongs to init or a subreaper) ends the worker at once; the watchdog thread covers
    systems without PR_SET_PDEATHSIG."""
    parent = os.getppid()
    expected = os.environ.get(PARENT_VAR)
    direct = "TORCHELASTIC_RUN_ID" not in os.environ  # torchrun's workers are its children, not ours
    if direct and expected and int(expected) != parent:
        os._exit(1)
    die_with_parent()  # again: torchrun's agent starts its workers without it
    if os.getppid() != parent:
        os._exit(1)

    def watch():
        while True:
            time.sleep(WATCHDOG_INTERVAL_S)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="dl-rosetta-parent-watchdog", daemon=True).start()


@dataclass
class Job:
    impl: object  # harness.registry.Implementation
    options: dict  # harness.protocol.RunOptions as a dict
    data: dict  # {"folder": ..., "samples": ..., "name": ...}
    epochs: int
    batch_size: int
    mode: str = "train"
    timeout: float | None = None  # seconds for the whole worker
    extra: dict = field(default_factory=dict)  # mode-specific inputs (paths of weights, inputs, ...)
    env: dict = field(default_factory=dict)  # variables set in the worker's environment (e.g. thread counts)
    python_env: str | None = None  # the environment whose interpreter runs it; None: the implementation's

    def payload(self) -> dict:
        i = self.impl
        return {"impl": {"lang": i.lang, "framework": i.name, "backend": i.backend, "model": i.model},
                "options": self.options, "data": self.data, "epochs": self.epochs,
                "batch_size": self.batch_size, "mode": self.mode, **self.extra}


@dataclass
class Outcome:
    status: str  # "ok" | "failed" | "interrupted" | "replica" (a node other than 0 of a multi-node run: no record here)
    result: dict | None
    error: str | None
    epochs: list  # epoch events received, kept even when the run failed later
    log: str  # the tail of the worker's stderr
    returncode: int | None


def run_worker(impl, options, mode: str = "train", data=None, epochs: int = 0, batch_size: int = 0,
               timeout: float | None = None, extra: dict | None = None, on_event=None,
               log_path: Path | None = None, env: dict | None = None, python_env: str | None = None) -> Outcome:
    """Run one worker of `impl` in `mode` with RunOptions `options` on prepared `data`
    (harness.data.Prepared, or None for modes that read their own inputs). `env`: variables for
    the worker's environment; `python_env`: run it with that environment's interpreter (a mode
    that does not open the implementation, e.g. a deployment runtime, runs in "main")."""
    payload = {} if data is None else {"folder": str(data.folder), "samples": data.samples, "name": data.name,
                                       "arrays": data.manifest["arrays"]}
    job = Job(impl, options.to_dict(), payload, epochs, batch_size, mode=mode, timeout=timeout, extra=extra or {},
              env=dict(env or {}), python_env=python_env)
    return run_job(job, on_event=on_event, log_path=log_path)


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def run_job(job: Job, on_event=None, log_path: Path | None = None) -> Outcome:
    python_env = job.python_env or job.impl.framework.env
    python = interpreter(python_env)
    if python is None:
        return Outcome("failed", None, f"the {python_env} environment is missing: "
                       f"{job.impl.framework.install}", [], "", None)
    with tempfile.TemporaryDirectory(prefix="dl-rosetta-job-") as tmp:
        job_file = Path(tmp) / "job.json"
        job_file.write_text(json.dumps(job.payload()))
        log_path = log_path or Path(tmp) / "worker.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if parallel.uses_torchrun(job.impl, job.options):
            # torchrun's children inherit no file descriptors: rank 0 writes its events to a FIFO,
            # which we hold open for reading and writing, so it never reads as ended.
            fifo = Path(tmp) / "events"
            os.mkfifo(fifo)
            read_fd, write_fd = os.open(fifo, os.O_RDWR), None
            worker_args = [str(job_file), "--events-path", str(fifo)]
        else:
            read_fd, write_fd = os.pipe()
            worker_args = [str(job_file), "--events-fd", str(write_fd)]
        command, extra_env = parallel.launch(job.impl, job.options, python, worker_args)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
                   PYTHONUNBUFFERED="1", **{**extra_env, **job.env})
        env[SPAWN_VAR] = repr(time.monotonic())
        env[PARENT_VAR] = str(os.getpid())
        epochs = []  # filled as events arrive: what finished, even if we are interrupted
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=REPO,
                pass_fds=() if write_fd is None else (write_fd,), preexec_fn=_child_setup,
            )
            if write_fd is not None:
                os.close(write_fd)
            try:
                outcome = _collect(proc, read_fd, job.timeout, on_event, poll=write_fd is None, epochs=epochs)
            except BaseException as e:  # Ctrl-C, SIGTERM: the worker's group must not outlive us
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
                if isinstance(e, KeyboardInterrupt):
                    e.outcome = Outcome("interrupted", None, None, epochs, _tail(log_path), proc.returncode)
                raise
        outcome.log = _tail(log_path)
        multi_node = parallel.replicas(job.options) > job.options["gpus"]
        if multi_node and ((outcome.status == "failed" and outcome.error is None and proc.returncode == 0)
                           or (outcome.status == "ok" and (parallel.node_rank(job.options) or 0) > 0)):
            # torchrun gave rank 0 to another node, or this is node --node-rank R > 0: trained as a
            # replica; the run's record is written on node 0
            outcome.status = "replica"
        if outcome.status == "failed" and outcome.error is None:
            outcome.error = _exit_reason(proc.returncode, outcome.log)
        return outcome


def _collect(proc, read_fd: int, timeout: float | None, on_event, poll: bool = False,
             epochs: list | None = None) -> Outcome:
    """Events until the pipe ends; with `poll` (a FIFO we also hold open) until the process has
    exited and nothing is left to read. Epoch events are appended to `epochs` as they arrive."""
    deadline = None if timeout is None else time.monotonic() + timeout
    result, error, buf = None, None, b""
    epochs = [] if epochs is None else epochs
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        while True:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if poll:
                wait = 0.5 if wait is None else min(wait, 0.5)
            ready, _, _ = select.select([pipe], [], [], wait)
            if not ready and poll and proc.poll() is not None:
                break
            if not ready and poll and (deadline is None or time.monotonic() < deadline):
                continue
            if not ready:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return Outcome("failed", None, f"timed out after {timeout:g} s", epochs, "", proc.returncode)
            chunk = pipe.read(1 << 16)
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                event = json.loads(line)
                kind = event.pop("event")
                if kind == "epoch":
                    epochs.append(event)
                elif kind == "result":
                    result = event
                elif kind == "error":
                    error = f"{event['type']}: {event['message']}"
                if on_event is not None:
                    on_event(kind, event)
    try:
        proc.wait(timeout=None if deadline is None else max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    if result is not None:
        return Outcome("ok", result, None, epochs, "", proc.returncode)
    return Outcome("failed", None, error, epochs, "", proc.returncode)


def _exit_reason(code: int | None, log: str) -> str:
    last = log.strip().splitlines()[-1] if log.strip() else "no output"
    if code is not None and code < 0:
        name = _signal_name(code)
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return f"worker killed by {name}{hint}; last output: {last}"
    return f"worker exited with code {code}; last output: {last}"


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
