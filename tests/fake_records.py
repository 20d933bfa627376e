"""Run records with chosen epoch times, shaped like harness.benchmark.execute writes them.

For tests of the store, the statistics and the report that need setups this machine cannot run
(several GPUs, another machine); timings of real runs come from real runs in those tests. Every
key a real record has, a fake one has too: tests/test_seams.py compares them with a record a real
run writes.
"""
from __future__ import annotations

import itertools

_counter = itertools.count()

ENV = {"hostname": "testbox", "machine_id": "feedfacecafe", "platform": "Linux-test", "cpu": "Test CPU 9000",
       "cores": 8, "memory_bytes": 64 * 2**30, "gpus": [], "python": "3.11.7",
       "git": {"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": False}, "blas_env": {},
       "interconnect": {"summary": "one device", "links": [], "nics": [], "infiniband": []}}
FAKE_DIGEST = "0" * 64


def manifest(samples: int, n_test: int = 512) -> dict:
    shapes = {"x_train": [samples, 3, 32, 32], "y_train": [samples], "x_test": [n_test, 3, 32, 32], "y_test": [n_test]}
    return {"source": {"kind": "synthetic", "shape_of": "cifar10", "seed": 0, "generator_version": 2},
            "arrays": {k: {"shape": v, "dtype": "float32" if k.startswith("x") else "int64", "sha256": FAKE_DIGEST}
                       for k, v in shapes.items()}}


def record(framework="pytorch", model="cnn", seconds=(2.0, 1.0, 1.0, 1.0), lang="python", backend=None,
           gpus=1, nodes=1, device="cpu", precision="fp32", samples=2048, repeat=0, accuracy=0.8, status="ok",
           version="2.13.0", env=None, gpu_names=(), plan=None, started="2026-01-02T03:04:05+00:00") -> dict:
    """One run: `seconds` are its epochs' times (the first is the warm-up)."""
    from harness.benchmark import flops_record, timing_summary
    from harness.protocol import RunOptions, setup_record
    from harness.specs import get_spec

    env = dict(ENV if env is None else env)
    if gpu_names:
        env["gpus"] = [{"name": n, "memory_mib": 81559, "driver": "550.54", "bus_id": f"0:{i}"}
                       for i, n in enumerate(gpu_names)]
    label = f"{lang}/{framework}{f'[{backend}]' if backend else ''}/{model}"
    examples = (samples // 64) * 64
    epochs = [{"epoch": i, "seconds": s, "steps": samples // 64, "examples": examples,
               "examples_per_s": examples / s, "loss": 1.0 / (i + 1)} for i, s in enumerate(seconds)]
    if status != "ok":
        epochs = []
    n = next(_counter)
    options = RunOptions(device=device, gpus=gpus, nodes=nodes, precision=precision, backend=backend)
    data = manifest(samples)
    timing = {"startup_s": 0.1, "import_s": 1.5, "build_s": 0.4, "verify_s": 0.01, "data_s": 0.05, "eval_s": 0.2,
              **timing_summary(epochs), "wall_s": 3.0 + sum(seconds)}
    peak = {"flops_per_s": 1e11, "precision": precision, "device": device, "threads": 2, "framework": framework,
            "measured_by": "fake", "versions": {framework: version, "numpy": "2.1.0"}, "machine": "feedfacecafe",
            "when": started, "cached": True}
    return {
        "run_id": f"20260102T030405-{label.replace('/', '-').replace('[', '-').replace(']', '')}-r{repeat}-{n:06d}",
        "started": started, "status": status, "error": None if status == "ok" else "RuntimeError: boom",
        "impl": {"lang": lang, "framework": framework, "backend": backend, "model": model, "label": label,
                 "version": version},
        "config": {"data": "synthetic", "n_train": samples, "n_test": 512, "epochs": len(seconds),
                   "batch_size": 64, "repeat": repeat, "timeout_s": 3600.0, **options.to_dict()},
        "timing": timing,
        "flops": (flops := flops_record(get_spec(model), options, timing, peak)),
        "flops_per_example": flops["per_example"],
        "load_average": {"before": [0.5, 0.4, 0.3], "after": [1.5, 0.6, 0.4]},
        "epochs": epochs,
        "metrics": {"final_loss": 0.3, "test_loss": 0.35, "test_accuracy": accuracy if status == "ok" else None, "test_examples": 512},
        "memory": {"peak_rss_bytes": 2**30, "peak_device_bytes": None},
        "param_count": 3441592, "spec_param_count": 3441592, "layout": "NCHW",
        "info": {"layout": "NCHW", "fast_path": {}, "deviations": [], "threads": 2,
                 "setup": setup_record(options, devices=[device] * gpus, replicas=gpus * nodes)},
        "versions": {framework: version, "numpy": "2.1.0"},
        "data_manifest": data,
        "data_seen": {"match": status == "ok", "detail": "fake",
                      "sha256": {k: FAKE_DIGEST for k in data["arrays"]} if status == "ok" else None},
        "environment": env, "command": "python -m harness (test)",
        "plan": plan or {"suite": None, "config": f"fake{n:08d}", "repeat": repeat},
    }
