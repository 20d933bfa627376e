"""`check --checks deploy`: every (implementation, runtime) pair's deployed model computes what the
implementation does, and through the canonical weights what PyTorch does.

For one model: the probe weights of harness.equivalence (every tensor drawn at random, BatchNorm
statistics included) go into every implementation, which exports itself with its framework's own
exporter ("infer-prepare" worker: its eval logits and its exports, cached per weights digest);
PyTorch's "predict" worker gives the reference logits of the same input; then one "deploy-logits"
worker per runtime compiles every export it reads and writes its logits. A pair passes when its
logits match the implementation's own eval logits *and* PyTorch's within check 2's bound (the fp32
logits bound, rtol = atol = 1e-4 on CPU). A runtime that cannot compile an operator is that
pair's error with the runtime's own message; a planted wrong export (tests/wrong_variants.py:
BatchNorm folded with the wrong epsilon, NHWC read as NCHW at the input) fails its pair.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from harness import equivalence
from harness.canonical import save_weights


@dataclass
class Cell:
    status: str  # "ok" | "FAIL" | "error" | "skipped"
    own: float | None = None  # max |logit - the implementation's own|
    reference: float | None = None  # max |logit - PyTorch's|
    detail: str = ""

    def text(self) -> str:
        if self.status in ("ok", "FAIL"):
            return f"{self.status} {max(self.own or 0, self.reference or 0):.2g}"
        return self.status


@dataclass
class DeployInputs:
    model: str
    work: Path
    options: object  # RunOptions
    data: object  # harness.data.Prepared
    probe: Path
    examples: int
    cache: Path
    threads: int = 1
    timeout: float = 1800.0
    reference_logits: np.ndarray | None = None
    tol: object = None
    input: Path | None = None  # the check input (NCHW), written by reference()


def make_inputs(model: str, work: Path, options, data_dir=None, threads: int = 1, timeout: float = 1800.0):
    from harness import data as datasets
    from harness.inference import cache_root
    from harness.specs import get_spec

    spec = get_spec(model)
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    prepared = datasets.prepare("synthetic", spec, equivalence.DATA_SAMPLES, data_dir)
    probe = save_weights(work / "probe.npz", equivalence.probe_weights(spec, options.seed))
    tol = equivalence.tolerance(model, options)
    return DeployInputs(model, work, options, prepared, probe, tol.eval_examples, cache_root(data_dir),
                        threads, timeout, tol=tol)


def _job(inputs: DeployInputs) -> dict:
    return {"model": inputs.model, "examples": inputs.examples, "batch": inputs.examples,
            "image_size": inputs.options.image_size, "cache": str(inputs.cache), "seed": inputs.options.seed}


def reference(inputs: DeployInputs, say=print) -> np.ndarray:
    """PyTorch's eval logits of the check input on the probe weights."""
    from harness.data.cache import open_prepared
    from harness.launch import run_worker
    from harness.model_input import upsample

    ref = equivalence.reference_impl(inputs.model)
    x = np.asarray(open_prepared(inputs.data.folder)["x_test"][:inputs.examples])
    if inputs.model == "resnet50":
        x = upsample(x, inputs.options.image_size)
    inputs.input = inputs.work / "input.npy"
    np.save(inputs.input, x)
    out = inputs.work / "reference_logits.npy"
    outcome = run_worker(ref, replace(inputs.options, backend=None), "predict", timeout=inputs.timeout,
                         extra={"input": str(inputs.work / "input.npy"),
                                "pairs": [{"weights": str(inputs.probe), "out": str(out)}]},
                         log_path=inputs.work / "reference.log")
    if outcome.status != "ok":
        raise equivalence.WorkerFailed(f"reference predict: {outcome.error}\n{outcome.log}")
    inputs.reference_logits = np.load(out)
    return inputs.reference_logits


def export_impl(impl, inputs: DeployInputs, formats, interpreter_override=None) -> dict:
    """One implementation on the probe weights: its own logits and its exports (infer-prepare)."""
    from harness.launch import run_worker
    from harness.inference import thread_env

    d = inputs.work / impl.label.replace("/", "_").replace("[", "-").replace("]", "")
    d.mkdir(parents=True, exist_ok=True)
    job = {**_job(inputs), "work": str(d), "formats": sorted(formats), "weights": str(inputs.probe), "epochs": 0,
           "latency": False}
    outcome = run_worker(impl, replace(inputs.options, backend=impl.backend, dropout=True), "infer-prepare",
                         inputs.data, 0, inputs.examples, inputs.timeout, extra=job, log_path=d / "prepare.log",
                         env=thread_env(inputs.threads))
    if outcome.status != "ok":
        raise equivalence.WorkerFailed(f"{outcome.error}\n{outcome.log}")
    res = outcome.result
    res["own_logits"] = np.load(d / "own_logits.npy")
    res["dir"] = str(d)
    return res


def input_for(inputs: DeployInputs, meta: dict, path: Path) -> Path:
    """The check input in the layout and dtype the exported file takes."""
    from harness.model_input import to_layout

    x = to_layout(np.load(inputs.input), meta.get("layout") or "NCHW")
    dtype = (meta.get("input") or {}).get("dtype")
    np.save(path, x.astype(dtype) if dtype else x)
    return path


def run_runtimes(runs: list[dict], inputs: DeployInputs, impl_for_launch, name: str) -> dict:
    """One deploy-logits worker for `runs` ([{"runtime", "items"}]): {runtime: {item id: result}};
    a worker that crashes makes every item of it that error."""
    from harness.launch import run_worker
    from harness.inference import thread_env

    job = {"runs": runs, "threads": inputs.threads, "device": inputs.options.device, "cache": str(inputs.cache)}
    outcome = run_worker(impl_for_launch, inputs.options, "deploy-logits", None, 0, 0, inputs.timeout, extra=job,
                         log_path=inputs.work / f"deploy-{name}.log", env=thread_env(inputs.threads),
                         python_env="main")
    if outcome.status != "ok":
        return {r["runtime"]: {item["id"]: {"ok": False, "error": f"{r['runtime']} worker: {outcome.error}"}
                               for item in r["items"]} for r in runs}
    return outcome.result["results"]


def judge(logits: np.ndarray, own: np.ndarray, ref: np.ndarray, tol) -> Cell:
    c_own = equivalence.check_logits(own, logits, tol)
    c_ref = equivalence.check_logits(ref, logits, tol)
    status = "ok" if c_own.ok and c_ref.ok else "FAIL"
    detail = f"against its own eval logits: {c_own.detail}; against PyTorch's: {c_ref.detail}"
    return Cell(status, c_own.deviation, c_ref.deviation, detail)


def check(model: str, impls, runtimes, options, work: Path, data_dir=None, threads: int = 1,
          timeout: float = 1800.0, say=print, isolate: bool = True, inputs: DeployInputs | None = None) -> dict:
    """The deploy matrix of one model: every implementation's export on every runtime that reads it.

    isolate: one worker per runtime (a runtime that crashes its process fails only its own pairs);
    False: one worker for all runtimes (the tests: fewer process starts). `inputs`: made by
    make_inputs + reference() already (shared by several calls)."""
    from harness import inference

    if inputs is None:
        inputs = make_inputs(model, work, options, data_dir, threads, timeout)
        say(f"[check] {model}: deploy, reference {equivalence.reference_impl(model).label}")
        reference(inputs, say)
    ref = inputs.reference_logits
    cells: dict = {}
    exported: dict = {}
    for impl in impls:
        formats = {e.format for rt in runtimes if (e := inference.export_for(impl, rt))}
        for rt in runtimes:
            if inference.export_for(impl, rt) is None:
                cells[impl.label, rt] = Cell("skipped", detail=impl.no_export() or
                                             f"{runtime_reads(rt)}; {impl.framework.display} exports "
                                             f"{', '.join(e.format for e in impl.exports)}")
        if not formats:
            continue
        t = time.monotonic()
        try:
            exported[impl] = export_impl(impl, inputs, formats)
        except equivalence.WorkerFailed as e:
            for rt in runtimes:
                if (impl.label, rt) not in cells:
                    cells[impl.label, rt] = Cell("error", detail=f"export worker: {str(e).splitlines()[0]}")
            say(f"  {impl.label}: export worker failed")
            continue
        say(f"  {impl.label}: exported {', '.join(sorted(formats))} ({time.monotonic() - t:.0f} s)")
    runs, owners = [], {}
    for rt in runtimes:
        items = []
        for impl, res in exported.items():
            export = inference.export_for(impl, rt)
            if export is None:
                continue
            meta = next((m for m in res["exports"] if m["format"] == export.format), None)
            if meta is None:
                cells[impl.label, rt] = Cell("error", detail=f"export {export.format}: "
                                             f"{res['export_errors'].get(export.format, 'not written')}")
                continue
            d = Path(res["dir"])
            item = {"id": impl.label, "export": meta, "out": str(d / f"{rt}_logits.npy"),
                    "input": str(input_for(inputs, meta, d / f"input-{meta['format']}-{meta.get('layout')}.npy"))}
            items.append(item)
            owners[impl.label, rt] = (impl, res, item)
        if items:
            runs.append({"runtime": rt, "items": items})
    launcher = next(iter(exported), impls[0] if impls else equivalence.reference_impl(model))
    got = {}
    t = time.monotonic()
    for group in ([[r] for r in runs] if isolate else [runs] if runs else []):
        got.update(run_runtimes(group, inputs, launcher, "-".join(r["runtime"] for r in group)))
    for (label, rt), (impl, res, item) in owners.items():
        r = got.get(rt, {}).get(label, {"ok": False, "error": "no result"})
        if not r["ok"]:
            cells[label, rt] = Cell("error", detail=r["error"])
        else:
            cells[label, rt] = judge(np.load(item["out"]), res["own_logits"], ref, inputs.tol)
    for rt in runtimes:
        done = [f"{i.label} {cells[i.label, rt].text()}" for i in impls if (i.label, rt) in cells
                and cells[i.label, rt].status != "skipped"]
        if done:
            say(f"  {rt}: " + ", ".join(done))
    labels = [i.label for i in impls]
    rows = [{"impl": label, "cells": {rt: vars(cells[label, rt]) for rt in runtimes if (label, rt) in cells}}
            for label in labels]
    failed = [c for c in cells.values() if c.status in ("FAIL", "error")]
    return {"model": model, "check": "deploy", "runtimes": list(runtimes), "rows": rows,
            "tolerance": {"logits_rtol": inputs.tol.logits_rtol, "logits_atol": inputs.tol.logits_atol},
            "passed": not failed, "options": inputs.options.to_dict(), "seconds": time.monotonic() - t}


def runtime_reads(rt: str) -> str:
    from harness import inference

    return f"{inference.runtime_display(rt)} reads {', '.join(inference.runtime_formats(rt))}"


def matrix(report: dict) -> str:
    runtimes = report["runtimes"]
    head = ["implementation"] + runtimes
    lines = []
    for row in report["rows"]:
        cells = [row["impl"]]
        for rt in runtimes:
            c = row["cells"].get(rt)
            cells.append("-" if c is None else Cell(**c).text())
        lines.append(cells)
    widths = [max(len(str(x[i])) for x in [head] + lines) for i in range(len(head))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip() for cells in [head] + lines)


def failures(report: dict) -> list[str]:
    return [f"{row['impl']} on {rt}: {c['status']}: {c['detail'][:600]}"
            for row in report["rows"] for rt, c in row["cells"].items() if c["status"] in ("FAIL", "error")]


def skipped(report: dict) -> list[str]:
    seen, out = set(), []
    for row in report["rows"]:
        for rt, c in row["cells"].items():
            if c["status"] == "skipped" and (row["impl"], c["detail"]) not in seen:
                seen.add((row["impl"], c["detail"]))
                out.append(f"{row['impl']} on {rt}: {c['detail']}")
    return out


def dumps(report: dict) -> str:
    return json.dumps(report, indent=1, default=str)
