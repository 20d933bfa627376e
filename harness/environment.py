"""The environment written beside every number: machine, accelerator, software, commit, command."""
from __future__ import annotations

import functools
import os
import platform
import re
import socket
import subprocess
import sys

from harness.interpreters import REPO


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


# nvidia-smi topo -m's link codes, best first (its legend)
LINKS = {"NV": "NVLink", "PIX": "PCIe, at most one PCIe bridge", "PXB": "PCIe, several PCIe bridges",
         "PHB": "PCIe through a CPU's host bridge", "NODE": "PCIe and the links between host bridges of one NUMA node",
         "SYS": "PCIe and the SMP link between NUMA nodes (QPI/UPI)"}


def parse_topology(text: str) -> dict:
    """`nvidia-smi topo -m` -> the link between every pair of GPUs, a one-line summary, and the NICs."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # some drivers underline the header
    lines = [line for line in text.splitlines() if line.strip()]
    # the header names the columns (GPU0 .. NIC0 .. "CPU Affinity"); the rows below start with a GPU or NIC
    header = next((line for line in lines if "Affinity" in line), lines[0] if lines else "")
    columns = [c for c in header.split() if re.fullmatch(r"(GPU|NIC)\d+", c)]
    rows = [line.split() for line in lines if line is not header and re.match(r"\s*GPU\d+\s", line)]
    links, nics = {}, {}
    for cells in rows:
        for col, cell in zip(columns, cells[1:]):
            if col.startswith("GPU") and int(col[3:]) > int(cells[0][3:]):
                links[f"{cells[0]}-{col}"] = cell
    for line in lines:  # the NIC legend: "NIC0: mlx5_0"
        m = re.match(r"\s*(NIC\d+):\s*(\S+)", line)
        if m:
            nics[m[1]] = m[2]
    gpus = len(rows)
    kinds = sorted(set(links.values()))
    if gpus <= 1:
        summary = "one GPU: no link between GPUs"
    elif kinds and all(k.startswith("NV") for k in kinds):
        summary = f"NVLink between every pair of GPUs ({', '.join(kinds)}: bonded links per pair)"
    else:
        summary = "; ".join(f"{sum(v == k for v in links.values())} pair(s) over {k} "
                            f"({LINKS.get('NV' if k.startswith('NV') else k, 'unknown')})" for k in kinds)
    return {"gpu_links": links, "summary": summary, "nics": nics}


def network() -> list[dict]:
    """InfiniBand/RoCE adapters (sysfs): what a multi-node all-reduce can run over."""
    out = []
    base = "/sys/class/infiniband"
    for dev in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        for port in sorted(os.listdir(f"{base}/{dev}/ports")):
            p = f"{base}/{dev}/ports/{port}"
            out.append({"device": dev, "port": port, "rate": _read(f"{p}/rate").strip(),
                        "link_layer": _read(f"{p}/link_layer").strip(), "state": _read(f"{p}/state").strip()})
    return out


def interconnect() -> dict | None:
    """How this machine's GPUs (nvidia-smi topo -m) and nodes (InfiniBand/RoCE) are linked; None
    without GPUs."""
    text = _run(["nvidia-smi", "topo", "-m"])
    if text is None:
        return None
    return {**parse_topology(text), "network": network(), "topo": text}


def git_commit() -> dict:
    """The checkout's commit; DL_ROSETTA_COMMIT names it for a copy of the tree without .git (a
    tree shipped to a lent machine)."""
    commit = _run(["git", "rev-parse", "HEAD"], cwd=REPO)
    if commit is None and os.environ.get("DL_ROSETTA_COMMIT"):
        return {"commit": os.environ["DL_ROSETTA_COMMIT"], "dirty": None, "from": "DL_ROSETTA_COMMIT"}
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
        "interconnect": interconnect(),
        "python": sys.version.split()[0],
        "git": git_commit(),
        "blas_env": {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
                     if k in os.environ},
    }
