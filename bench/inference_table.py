"""The README's inference table (issue 14), measured in one sitting on a quiet machine.

    .venv/bin/python bench/inference_table.py run --out bench/results/inference-<machine>   # the runs
    .venv/bin/python bench/inference_table.py table bench/results/inference-<machine>       # the tables
    .venv/bin/python bench/inference_table.py table bench/results/inference-<machine> --readme README.md

`run` trains ResNet-50 briefly once, in PyTorch (the exported model is a trained one, with real
BatchNorm statistics), and hands those canonical weights (--weights) to every other
implementation, so that every row deploys the same model. It times it at 224 px through
`python -m harness infer`: natively (eager, and compiled where the framework has a compiled form:
torch.compile, XLA) and on every installed runtime that reads its export, offline at batch 32
(--examples test images, --passes timed passes after a warm-up pass) and single-stream at batch 1
(--queries), --repeats fresh workers each, every runtime with the same threads. TVM (untuned: its
default schedules) and IREE are timed on fewer images and queries (--compiler-examples,
--compiler-queries, --compiler-passes), said in each row, and only on PyTorch's export unless
--compilers-all (every exporter x compiler is proven in CI's deploy matrix); then int8 against
fp32 (ONNX Runtime static quantization, OpenVINO NNCF) for PyTorch's export, calibrated on
training examples, on that ResNet-50 and on the cnn trained to a real accuracy (three epochs; the
brief training leaves ResNet-50 near chance, where MLPerf's 99 % rule says little). A failed pair
stays a failed record.

`table` prints two Markdown tables from those records: throughput (images/s at batch 32) and p50
latency (ms at batch 1), each with its ratio to PyTorch eager of the same run (> 1: faster), and
the int8 rows (test accuracy against fp32, MLPerf's 99 % rule, how often int8's top-1 is fp32's,
speed-up); with --readme it replaces the README's block between the `inference-table` markers
instead.
"""
from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.readme_block import markers, replace  # noqa: E402
from harness.errors import UsageError  # noqa: E402

IMPLEMENTATIONS = [  # (--lang, --framework, --backend, the runtimes that read its exports besides TVM and IREE)
    ("python", "pytorch", None, "native,onnxruntime,openvino"),
    ("python", "tensorflow", None, "native,onnxruntime,openvino,litert"),
    ("python", "keras", "tensorflow", "native,onnxruntime,openvino,litert"),
    ("python", "keras", "jax", "native,onnxruntime,openvino"),
    ("python", "keras", "torch", "native,onnxruntime,openvino"),
    ("python", "jax", None, "native,onnxruntime,openvino"),
    ("python", "mxnet", None, "native,onnxruntime,openvino"),
    ("python", "chainer", None, "native,onnxruntime,openvino"),
    ("python", "pytensor", None, "native"),  # no exporter (registry: no_export)
]
COMPILERS = "tvm,iree"  # ONNX compilers: timed on fewer examples and queries (--compiler-queries), see run()
COMPILED = {"pytorch", "tensorflow", "keras"}  # --compile changes the native path (JAX is always jitted)


def run(args) -> int:
    base = [sys.executable, "-m", "harness", "infer", "--model", "resnet50", "--image-size", str(args.image_size),
            "--data", args.data, "--samples", str(args.samples), "--batch-size", "32", "--queries", str(args.queries),
            "--examples", str(args.examples), "--passes", str(args.passes), "--repeats", str(args.repeats),
            "--out", args.out, "--quiet", "--timeout", str(args.timeout)]
    if args.threads:
        base += ["--threads", str(args.threads)]
    weights = args.weights
    failed = 0

    def call(command) -> None:
        nonlocal failed
        command = command + (["--weights", weights] if weights else [])
        print("$", " ".join(command[1:]), flush=True)
        failed += subprocess.run(command, cwd=REPO).returncode != 0

    # TVM's kernels are untuned (its default schedules) and run an order of magnitude slower than the
    # others, so the compilers get --compiler-examples/--compiler-queries/--compiler-passes (the same
    # clock and warm-up; fewer samples of it, said in the table's "timed" column)
    fewer = {"--queries": args.compiler_queries, "--examples": args.compiler_examples, "--passes": args.compiler_passes}
    compilers = [str(fewer.get(base[i - 1], a)) if i and base[i - 1] in fewer else a for i, a in enumerate(base)]
    for lang, framework, backend, runtimes in IMPLEMENTATIONS:
        sel = ["--lang", lang, "--framework", framework] + (["--backend", backend] if backend else [])
        call(base + sel + ["--runtime", runtimes])
        if weights is None:  # the first (PyTorch) trained: every other row deploys those weights
            trained = sorted(Path(args.out, "infer").glob(f"*-{lang}-{framework}-resnet50/weights.npz"))
            if not trained:
                print(f"{lang}/{framework} wrote no weights.npz under {args.out}/infer: stopped", file=sys.stderr)
                return 1
            weights = str(trained[-1])
            print(f"every other implementation deploys {weights}", flush=True)
        if framework in COMPILED:
            call(base + sel + ["--compile", "--runtime", "native"])
        if runtimes != "native" and (args.compilers_all or framework == "pytorch"):
            # the compilers take every export (CI's deploy matrix proves each pair's logits); timed here on
            # PyTorch's unless --compilers-all: a ResNet-50 compile costs minutes here, an untuned TVM row more
            call(compilers + sel + ["--runtime", COMPILERS])
    # int8 beside the fp32 rows of PyTorch's export above (the same weights and test images)
    call(base + ["--framework", "pytorch", "--runtime", "onnxruntime,openvino", "--precision", "int8"])
    # the brief training leaves ResNet-50 near chance on these images, where MLPerf's 99 % rule says little:
    # the cnn, trained to a real accuracy (--cnn-samples, 3 epochs), fp32 then int8 on the same weights
    cnn = [sys.executable, "-m", "harness", "infer", "--framework", "pytorch", "--model", "cnn", "--data", args.data,
           "--samples", str(args.cnn_samples), "--epochs", "3", "--queries", str(args.queries), "--passes",
           str(args.passes), "--runtime", "onnxruntime,openvino", "--out", args.out, "--quiet", "--timeout",
           str(args.timeout)] + (["--threads", str(args.threads)] if args.threads else [])
    weights = None
    call(cnn)
    trained = sorted(Path(args.out, "infer").glob("*-python-pytorch-cnn/weights.npz"))
    if trained:
        weights = str(trained[-1])
        call(cnn + ["--precision", "int8"])
    print(f"{failed} command(s) had a failed record; `table` lists them", file=sys.stderr)
    return 0


def table(args) -> int:
    from harness import results

    records = [r for r in results.read_records([args.results]) if r.get("task") == "infer"]
    if not records:
        print(f"{args.results}: no inference records", file=sys.stderr)
        return 2
    if args.readme:
        return write_block(records, args.results, args.readme)
    print_tables(records)
    return 0


def print_tables(records: list[dict]) -> None:
    """The throughput/latency table and the int8 table, in Markdown on stdout."""
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

    def fmt(v, spec="{:.2f}"):
        return "–" if v is None else spec.format(v)

    def failure(key) -> str:  # the first line of the first failed record's error, safe in a table cell
        return (groups[key][0].get("error") or "failed").splitlines()[0][:100].replace("|", "/")

    ok = {k: [r for r in rs if r["status"] == "ok"] for k, rs in groups.items()}
    # the baseline: PyTorch eager fp32, on resnet50 where it ran (the int8 cnn's rows only serve the int8 table)
    eager = [k for k in ok if k[0].startswith("python/pytorch/") and k[1] == "native" and k[2] == "fp32"]
    base_key = min(eager, key=lambda k: not k[0].endswith("/resnet50"), default=None)
    model = base_key[0].rsplit("/", 1)[1] if base_key else "resnet50"
    base_eps = med(ok.get(base_key, []), ("inference", "offline", "median_examples_per_s"))
    base_p50 = med(ok.get(base_key, []), ("inference", "latency", "p50_ms"))
    print("| implementation | runtime | img/s, batch 32 | × PyTorch eager | p50 ms, batch 1 | p99 ms | "
          "× PyTorch eager | compile s (native: warm-up pass) | timed: images × passes, queries |")
    print("| :-- | :-- | --: | --: | --: | --: | --: | --: | :-- |")
    for key in sorted((k for k in groups if k[2] == "fp32" and k[0].endswith(f"/{model}")),
                      key=lambda k: (base_key is None or k[0] != base_key[0], k[0], not k[1].startswith("native"), k[1])):
        rs = ok[key]
        if not rs:
            print(f"| {key[0]} | {key[1]} | failed: {failure(key)} | | | | | | |")
            continue
        eps = med(rs, ("inference", "offline", "median_examples_per_s"))
        p50, p99 = med(rs, ("inference", "latency", "p50_ms")), med(rs, ("inference", "latency", "p99_ms"))
        # a runtime's compile is timed apart; a native row's (torch.compile, XLA, jit) falls in its warm-up pass
        comp = med(rs, ("timing", "warmup_s" if key[1].startswith("native") else "compile_s"))
        off, lat = rs[0]["inference"].get("offline") or {}, rs[0]["inference"].get("latency") or {}
        timed = f"{off.get('examples', '?')} × {off.get('passes', '?')}, {lat.get('queries', 0)}" + (
            f" ({len(rs)} runs)" if len(rs) > 1 else "")
        ratio = f"{eps / base_eps:.2f}" if eps and base_eps else "–"
        lat_ratio = f"{base_p50 / p50:.2f}" if p50 and base_p50 else "–"
        print(f"| {key[0]} | {key[1]} | {eps:,.1f} | {ratio} | {fmt(p50)} | {fmt(p99)} | {lat_ratio} | "
              f"{fmt(comp, '{:.1f}')} | {timed} |")
    quantized = sorted(k for k in groups if k[2] == "int8")
    if quantized:
        print("\n| implementation | runtime | int8 accuracy | fp32 accuracy | kept >= 99 % (MLPerf) | "
              "top-1 = fp32's | int8 img/s | × fp32 |")
        print("| :-- | :-- | --: | --: | :-- | --: | --: | --: |")
        for key in quantized:
            rs = ok[key]
            if not rs:
                print(f"| {key[0]} | {key[1]} | failed: {failure(key)} | | | | | |")
                continue
            fp32 = ok.get((key[0], key[1], "fp32"), [])
            eps, eps32 = (med(x, ("inference", "offline", "median_examples_per_s")) for x in (rs, fp32))
            acc = med(rs, ("metrics", "test_accuracy"))
            acc32 = med(rs, ("metrics", "fp32_accuracy"))
            kept = all((r["metrics"].get("mlperf_99") or {}).get("kept") for r in rs)
            agree = med(rs, ("metrics", "logits", "framework", "argmax_agree"))
            speed = f"{eps / eps32:.2f}" if eps and eps32 else "–"
            print(f"| {key[0]} | {key[1]} | {acc:.4f} | {acc32:.4f} | {'yes' if kept else 'no'} | {fmt(agree, '{:.3f}')} | "
                  f"{eps:,.1f} | {speed} |")


BEGIN, END = markers("inference-table")


def write_block(records: list[dict], results: str, readme: str) -> int:
    """Replace the README's block with the tables and the environment they were measured in."""
    ok = [r for r in records if r["status"] == "ok"] or records
    env = ok[0].get("environment") or {}
    commits = sorted({str(((r.get("environment") or {}).get("git") or {}).get("commit", "?"))[:12] for r in records})
    loads = [r["load_average"]["before"][0] for r in records if (r.get("load_average") or {}).get("before")]
    threads = sorted({r["runtime"].get("threads") for r in ok if r.get("runtime")} - {None})
    cfg = ok[0]["config"]
    out = io.StringIO()
    with redirect_stdout(out):
        print_tables(records)
    head = (f"{BEGIN}: python bench/inference_table.py table {results} --readme README.md; do not edit by hand -->\n"
            f"{env.get('cpu', '?')}, {env.get('cores', '?')} cores, {env.get('platform', '?')}, Python {env.get('python', '?')}; commit {', '.join(commits)}; ResNet-50 at {cfg.get('image_size')} px, "
            f"{len(records)} records, threads {', '.join(map(str, threads)) or '?'} for every runtime; the 1-minute load "
            f"before each run: median {statistics.median(loads):.2f}, max {max(loads):.2f} (cores: {env.get('cores', '?')}).\n")
    try:
        replace(Path(readme), "inference-table", head + "\n" + out.getvalue() + END)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{readme}: the inference-table block written from {results}", file=sys.stderr)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    r = sub.add_parser("run")
    r.add_argument("--out", required=True)
    r.add_argument("--image-size", type=int, default=224)
    r.add_argument("--data", default="synthetic", help="synthetic (default) or cifar10 (real-shaped int8 accuracy)")
    r.add_argument("--samples", type=int, default=512, help="the brief training's examples (default: 512)")
    r.add_argument("--weights", help="canonical weights (.npz) for every row (default: PyTorch trains once)")
    r.add_argument("--queries", type=int, default=300, help="single-stream queries at batch 1 (default: 300)")
    r.add_argument("--examples", type=int, default=64, help="offline test images, in batches of 32 (default: 64)")
    r.add_argument("--passes", type=int, default=3, help="timed offline passes after the warm-up (default: 3)")
    r.add_argument("--compiler-examples", type=int, default=32, help="offline images on TVM and IREE (default: 32)")
    r.add_argument("--compiler-queries", type=int, default=30, help="batch-1 queries on TVM and IREE (default: 30)")
    r.add_argument("--compiler-passes", type=int, default=1, help="timed passes on TVM and IREE (default: 1)")
    r.add_argument("--cnn-samples", type=int, default=2048, help="the int8 cnn's training examples (default: 2048)")
    r.add_argument("--compilers-all", action="store_true", help="time TVM and IREE on every export, not only PyTorch's")
    r.add_argument("--repeats", type=int, default=1, help="fresh workers per (implementation, runtime) (default: 1)")
    r.add_argument("--threads", type=int)
    r.add_argument("--timeout", type=float, default=3600)
    t = sub.add_parser("table")
    t.add_argument("results")
    t.add_argument("--readme", help="write the tables into this README's inference-table block")
    args = p.parse_args()
    return run(args) if args.what == "run" else table(args)


if __name__ == "__main__":
    sys.exit(main())
