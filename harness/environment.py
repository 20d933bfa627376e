"""The environment written beside every number: machine, accelerator, software, commit, command."""
from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
import sys

from harness.environments import REPO


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def memory_bytes() -> int | None:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return None


def _run(cmd: list[str], cwd=None) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def gpus() -> list[dict]:
    """One dict per NVIDIA GPU from nvidia-smi; empty where there is none."""
    out = _run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version,pci.bus_id",
                "--format=csv,noheader,nounits"])
    if not out:
        return []
    rows = []
    for line in out.splitlines():
        name, mem, driver, bus = [p.strip() for p in line.split(",")]
        rows.append({"name": name, "memory_mib": int(mem), "driver": driver, "bus_id": bus})
    return rows


def git_commit() -> dict:
    commit = _run(["git", "rev-parse", "HEAD"], cwd=REPO)
    dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO)
    return {"commit": commit, "dirty": bool(dirty) if dirty is not None else None}


@functools.lru_cache(maxsize=1)
def collect() -> dict:
    """Facts of this machine and checkout; framework versions come from each worker."""
    return {
        "hostname": socket.gethostname(),
        "machine_id": (_read("/etc/machine-id").strip() or socket.gethostname())[:12],
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_bytes": memory_bytes(),
        "gpus": gpus(),
        "python": sys.version.split()[0],
        "git": git_commit(),
        "blas_env": {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
                     if k in os.environ},
    }
