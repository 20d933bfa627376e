"""The README's inference table (issue 14), measured in one sitting on a quiet machine.

    .venv/bin/python bench/inference_table.py run --out bench/results/inference-<machine>   # the runs
    .venv/bin/python bench/inference_table.py table bench/results/inference-<machine>       # the tables

`run` trains ResNet-50 briefly once per implementation (the exported model is a trained one),
then times it at 224 px through `python -m harness infer`: natively (eager, and compiled where the
framework has a compiled form: torch.compile, XLA) and on every installed runtime that reads its
export, offline at batch 32 and single-stream at batch 1, --repeats fresh workers each, every
runtime with the same threads; then int8 against fp32 (ONNX Runtime static quantization, OpenVINO
NNCF) for PyTorch's export, calibrated on training examples. A failed pair stays a failed record.

`table` prints two Markdown tables from those records: throughput (images/s at batch 32) and p50
latency (ms at batch 1), each with its ratio to PyTorch eager of the same run (> 1: faster), and
the int8 rows (test accuracy against fp32, MLPerf's 99 % rule, speed-up).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMPLEMENTATIONS = [  # (--lang, --framework, --backend)
    ("python", "pytorch", None), ("python", "tensorflow", None), ("python", "keras", "tensorflow"),
    ("python", "keras", "jax"), ("python", "keras", "torch"), ("python", "jax", None), ("python", "mxnet", None),
    ("python", "chainer", None), ("python", "pytensor", None),
]
COMPILED = {"pytorch", "tensorflow", "keras"}  # --compile changes the native path (JAX is always jitted)


def run(args) -> int:
    base = [sys.executable, "-m", "harness", "infer", "--model", "resnet50", "--image-size", str(args.image_size),
            "--data", args.data, "--samples", str(args.samples), "--batch-size", "32", "--queries", str(args.queries),
            "--repeats", str(args.repeats), "--out", args.out, "--quiet", "--timeout", str(args.timeout)]
    if args.threads:
        base += ["--threads", str(args.threads)]
    failed = 0
    for lang, framework, backend in IMPLEMENTATIONS:
        sel = ["--lang", lang, "--framework", framework] + (["--backend", backend] if backend else [])
        commands = [base + sel]
        if framework in COMPILED:
            commands.append(base + sel + ["--compile", "--runtime", "native"])
        for command in commands:
            print("$", " ".join(command[1:]), flush=True)
            failed += subprocess.run(command, cwd=REPO).returncode != 0
    for precision in ("fp32", "int8"):
        command = base[:-2] + ["--framework", "pytorch", "--runtime", "onnxruntime,openvino", "--precision", precision,
                               "--timeout", str(args.timeout)]
        print("$", " ".join(command[1:]), flush=True)
        failed += subprocess.run(command, cwd=REPO).returncode != 0
    print(f"{failed} command(s) had a failed record; `table` lists them", file=sys.stderr)
    return 0


def table(args) -> int:
    sys.path.insert(0, str(REPO))
    from harness import results

    records = [r for r in results.read_records([args.results]) if r.get("task") == "infer"]
    groups: dict = {}
    for r in records:
        key = (r["impl"]["label"], r["runtime"]["name"] + (" (compiled)" if r["config"].get("compile") else ""),
               r["runtime"]["precision"])
        groups.setdefault(key, []).append(r)

    def med(rs, path):
        vals = []
        for r in rs:
            v = r
            for k in path:
                v = (v or {}).get(k)
            if v is not None:
                vals.append(v)
        return statistics.median(vals) if vals else None

    ok = {k: [r for r in rs if r["status"] == "ok"] for k, rs in groups.items()}
    base_key = next((k for k in ok if k[0].startswith("python/pytorch/") and k[1] == "native" and k[2] == "fp32"), None)
    base_eps = med(ok.get(base_key, []), ("inference", "offline", "median_examples_per_s"))
    base_p50 = med(ok.get(base_key, []), ("inference", "latency", "p50_ms"))
    print("| implementation | runtime | img/s, batch 32 | x PyTorch eager | p50 ms, batch 1 | x PyTorch eager | runs |")
    print("| :-- | :-- | --: | --: | --: | --: | --: |")
    for key in sorted(k for k in groups if k[2] == "fp32"):
        rs = ok[key]
        eps = med(rs, ("inference", "offline", "median_examples_per_s"))
        p50 = med(rs, ("inference", "latency", "p50_ms"))
        if not rs:
            reason = (groups[key][0].get("error") or "failed").splitlines()[0][:100]
            print(f"| {key[0]} | {key[1]} | failed: {reason} | | | | 0 |")
            continue
        ratio = f"{eps / base_eps:.2f}" if eps and base_eps else "–"
        lat = f"{base_p50 / p50:.2f}" if p50 and base_p50 else "–"
        print(f"| {key[0]} | {key[1]} | {eps:,.1f} | {ratio} | {p50:.2f} | {lat} | {len(rs)} |")
    quantized = sorted(k for k in groups if k[2] == "int8")
    if quantized:
        print("\n| implementation | runtime | int8 accuracy | fp32 accuracy | kept >= 99 % (MLPerf) | int8 img/s | x fp32 |")
        print("| :-- | :-- | --: | --: | :-- | --: | --: |")
        for key in quantized:
            rs = ok[key]
            if not rs:
                print(f"| {key[0]} | {key[1]} | failed: {(groups[key][0].get('error') or '')[:100]} | | | | |")
                continue
            fp32 = ok.get((key[0], key[1], "fp32"), [])
            eps, eps32 = (med(x, ("inference", "offline", "median_examples_per_s")) for x in (rs, fp32))
            acc = med(rs, ("metrics", "test_accuracy"))
            acc32 = med(rs, ("metrics", "fp32_accuracy"))
            kept = all((r["metrics"].get("mlperf_99") or {}).get("kept") for r in rs)
            print(f"| {key[0]} | {key[1]} | {acc:.4f} | {acc32:.4f} | {'yes' if kept else 'no'} | {eps:,.1f} | "
                  f"{eps / eps32:.2f} |" if eps32 else f"| {key[0]} | {key[1]} | {acc:.4f} | {acc32:.4f} | "
                  f"{'yes' if kept else 'no'} | {eps:,.1f} | – |")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    r = sub.add_parser("run")
    r.add_argument("--out", required=True)
    r.add_argument("--image-size", type=int, default=224)
    r.add_argument("--data", default="synthetic", help="synthetic (default) or cifar10 (real-shaped int8 accuracy)")
    r.add_argument("--samples", type=int, default=1024, help="the brief training's examples (default: 1024)")
    r.add_argument("--queries", type=int, default=300)
    r.add_argument("--repeats", type=int, default=3)
    r.add_argument("--threads", type=int)
    r.add_argument("--timeout", type=float, default=3600)
    t = sub.add_parser("table")
    t.add_argument("results")
    args = p.parse_args()
    return run(args) if args.what == "run" else table(args)


if __name__ == "__main__":
    sys.exit(main())
