"""The device's peak FLOP/s, measured: what MFU (model FLOPs utilisation) divides by.

A short dense matmul benchmark in the run's own framework, precision and thread count, inside
the worker after the timed epochs (so it never touches the clock): square products of n x n
matrices, repeated until `SECONDS` have passed, the best rate kept. A trainer that offers
`matmul_peak(precision)` measures in its framework (PyTorch: torch.matmul on the run's device);
every other gets the protocol's default, numpy's BLAS (float32 only), declared as such.

Results are cached per machine in the data cache (`<cache>/peaks/<key>.json`), keyed by the
machine, framework and version, device, precision, thread count and matrix size, and every
record carries the peak it used. On a GPU the vendor's datasheet peak (dense, no sparsity) for
the run's precision is recorded beside it.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

SECONDS = 1.0  # time spent per measurement (at least 3 products)
CPU_N, GPU_N = 1024, 8192  # matrix side: big enough to reach the BLAS's peak, small enough to be quick

# NVIDIA's datasheet peaks in TFLOP/s, dense (without 2:4 sparsity): fp32 is the CUDA cores' FP32
# (PyTorch's default float32 matmul, TF32 off), tf32 the Tensor Cores' TF32, bf16/fp16 the Tensor
# Cores'. First match of the name wins (A100 before A10, the H100 variants before "H100").
DATASHEET_TFLOPS = (
    ("H200", {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4}),  # H200 SXM = H100 SXM's compute
    ("H100 PCIe", {"fp32": 51.2, "tf32": 378.0, "bf16": 756.5, "fp16": 756.5}),
    ("H100 NVL", {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5, "fp16": 835.5}),
    ("H100", {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4}),  # SXM5
    ("A100", {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0}),
    ("L40S", {"fp32": 91.6, "tf32": 183.0, "bf16": 362.05, "fp16": 362.05}),
    ("A10", {"fp32": 31.2, "tf32": 62.5, "bf16": 125.0, "fp16": 125.0}),
    ("L4", {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0, "fp16": 121.0}),
    ("V100", {"fp32": 15.7, "fp16": 125.0}),  # SXM2; no bf16
)


def datasheet(device_name: str, precision: str) -> dict | None:
    """{"flops_per_s", "part", "precision"} of a known NVIDIA GPU, None otherwise."""
    for part, peaks in DATASHEET_TFLOPS:
        if part in device_name and precision in peaks:
            return {"flops_per_s": peaks[precision] * 1e12, "part": part, "precision": precision,
                    "tf32_flops_per_s": peaks["tf32"] * 1e12 if precision == "fp32" and "tf32" in peaks else None,
                    "source": "NVIDIA datasheet, dense"}
    return None


def best_rate(run, flops: float, seconds: float = SECONDS) -> float:
    """FLOP/s of the fastest of repeated calls of `run` (which must return only when its work is
    done), after one warm-up call; at least 3 timed calls, more until `seconds` have passed."""
    run()
    best, spent, calls = float("inf"), 0.0, 0
    while calls < 3 or spent < seconds:
        t = time.perf_counter()
        run()
        dt = time.perf_counter() - t
        best, spent, calls = min(best, dt), spent + dt, calls + 1
    return flops / best


def blas_threads() -> int | None:
    try:
        from threadpoolctl import threadpool_info

        return max((p.get("num_threads") or 0 for p in threadpool_info() if p.get("user_api") == "blas"), default=None)
    except ImportError:
        return None


def numpy_matmul_peak(precision: str, n: int = CPU_N) -> float | None:
    """float32 FLOP/s of numpy's BLAS; None for reduced precisions (numpy has no bf16 product)."""
    import numpy as np

    if precision != "fp32":
        return None
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    return best_rate(lambda: a @ b, 2.0 * n**3)


def machine_id() -> str:
    try:
        with open("/etc/machine-id") as f:
            return f.read().strip()[:12] or os.uname().nodename
    except OSError:
        return os.uname().nodename


def _key(facts: dict) -> str:
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]


def measured(trainer, precision: str, device: str, framework: str, versions: dict, cache_root: Path | None,
             own: bool = True) -> dict:
    """The peak for this run: from the cache, or measured now (and cached). own: the trainer
    measures in its framework (False: it has the protocol's numpy default)."""
    threads = trainer.info.get("threads") if own else blas_threads()
    facts = {"machine": machine_id(), "framework": framework if own else "numpy",
             "versions": versions if own else {"numpy": versions.get("numpy")}, "device": device,
             "precision": precision, "threads": threads or os.environ.get("OMP_NUM_THREADS")}
    path = Path(cache_root) / "peaks" / f"{_key(facts)}.json" if cache_root else None
    if path is not None and path.exists():
        try:
            return {**json.loads(path.read_text()), "cached": True}
        except (OSError, ValueError):
            pass  # damaged: measure again
    rate = trainer.matmul_peak(precision)
    out = {"flops_per_s": rate, "measured_by": f"{framework} matmul" if own else "numpy BLAS matmul (the protocol's "
           "default: this implementation measures no peak of its own)", **facts,
           "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cached": False}
    if path is not None and rate:
        from harness.results import write_atomic

        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps({k: v for k, v in out.items() if k != "cached"}, indent=1))
    return out
