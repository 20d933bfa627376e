"""Apache TVM: the Relax ONNX frontend, compiled for the host's llvm target, run by the Relax VM.

Target: llvm with -mcpu = LLVM's name for this CPU (tvm.target.codegen.llvm_get_system_cpu(), e.g.
znver4), which sets the vector width TVM's code generator uses (recorded: vector_width, 512 bits on
an AVX-512 CPU) and "num-cores" = opts.threads. Shapes are static: the model is compiled for the
example's batch and once more for each new batch size run() sees (timed into info["compile_s_by_batch"];
the caller's untimed warm-up pass absorbs it). Threads: TVM's thread pool is set to opts.threads
(TVM_NUM_THREADS and runtime.config_threadpool); untuned kernels are single loops nests that the
pool parallelises only where a schedule says so.
Tuning: with opts.tuning_trials > 0 MetaSchedule tunes every kernel first (timed apart: tune_s);
with 0 the kernels keep TVM's default (untuned) schedules, which the record says.
The exported shared library (.so, per batch) is the cached artefact.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from harness.deploy import cache
from harness.deploy.common import CompileError, Compiled, DeployOptions, Timer, base_info, model_sha256
from harness.deploy.host import cpu_fingerprint, onnx_input

NAME = "tvm"
BIG_CORES = 1  # runtime.config_threadpool mode: kBig (every core on a homogeneous CPU)
TUNING_TIMEOUT_S = 600  # per candidate build / measurement (see _tune)


def _target(tvm, threads: int):
    from tvm.target import codegen

    return tvm.target.Target({"kind": "llvm", "mcpu": codegen.llvm_get_system_cpu(), "num-cores": threads})


def _build(model_path: Path, input_name: str, shape: tuple, dtype: str, target, trials: int, out: Path) -> dict:
    import onnx
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    times = {}
    with Timer() as t:
        mod = from_onnx(onnx.load(str(model_path)), shape_dict={input_name: shape}, dtype_dict={input_name: dtype},
                        keep_params_in_input=False)
        mod = relax.transform.DecomposeOpsForInference()(mod)  # BatchNorm etc. in their inference form
    times["import_s"] = t.s
    times["tune_s"] = 0.0
    if trials > 0:
        with Timer() as t:
            mod = _tune(mod, target, trials, out / "tuning")
        times["tune_s"] = t.s
    with Timer() as t:
        executable = tvm.compile(mod, target=target)
        executable.export_library(str(out / "model.so"))
    times["compile_s"] = t.s
    return times


def _load_library(library: Path):
    """Load the library through a copy at a fresh path, then remove the copy (the mapping stays).
    dlopen returns the library already loaded under the same path, so a rebuilt entry loaded from the
    old path would run the old code."""
    import tvm

    folder = Path(tempfile.mkdtemp(prefix="dl-rosetta-tvm-"))
    try:
        copy = folder / library.name
        shutil.copyfile(library, copy)
        return tvm.runtime.load_module(str(copy))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _tune(mod, target, trials: int, work_dir: Path):
    """MetaSchedule: legalize and fuse (the zero pipeline), tune every fused kernel within `trials`
    measured candidates in all (at least 2 per kernel), apply the best schedules. The builder and runner
    get generous time-outs: with MetaSchedule's default 30 s per candidate, every build failed on this
    loaded 2-core machine (its builder processes import TVM first); with 600 s they succeed."""
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    with target:
        mod = relax.get_pipeline("zero")(mod)
    ms.relax_integration.tune_relax(mod, params={}, target=target, work_dir=str(work_dir), max_trials_global=trials,
                                    max_trials_per_task=max(2, trials // 16),
                                    builder=ms.builder.LocalBuilder(timeout_sec=TUNING_TIMEOUT_S),
                                    runner=ms.runner.LocalRunner(timeout_sec=TUNING_TIMEOUT_S))
    with target:
        mod = relax.transform.MetaScheduleApplyDatabase(str(work_dir))(mod)
    shutil.rmtree(work_dir / "logs", ignore_errors=True)  # per-task logs; the database stays with the library
    return mod


class TvmCompiled(Compiled):
    def __init__(self, model_path: Path, input_name: str, dims: list, dtype: str, target, opts: DeployOptions,
                 info: dict):
        self.model_path, self.input_name, self.dims, self.dtype = model_path, input_name, dims, dtype
        self.target, self.opts, self.info = target, opts, info
        self.vms: dict[int, object] = {}

    def prepare(self, batch: int) -> None:
        """Compile (or load from the cache) the executable for this batch size."""
        import tvm
        from tvm import relax

        if batch in self.vms:
            return
        shape = (batch, *self.dims[1:])
        key = {**self.info["cache_key"], "shape": list(shape), "dtype": self.dtype}
        times = {}

        def build(out: Path) -> None:
            times.update(_build(self.model_path, self.input_name, shape, self.dtype, self.target,
                                self.opts.tuning_trials, out))

        try:
            with Timer() as t:
                entry = cache.cached(self.opts.cache_dir, NAME, key, build)
                vm = relax.VirtualMachine(_load_library(entry.path / "model.so"), tvm.cpu())
        except Exception as e:  # TVM's frontend (OpNotImplemented ...) or codegen message
            raise CompileError(NAME, f"{type(e).__name__}: {e}") from e
        self.vms[batch] = vm
        self.info["compile_s_by_batch"][batch] = t.s
        self.info["cache_by_batch"][batch] = {**entry.record(), **times}
        if "compile_s" not in self.info:
            self.info["compile_s"] = t.s
            self.info["tune_s"] = times.get("tune_s", 0.0)

    def run(self, x: np.ndarray) -> np.ndarray:
        import tvm

        self.prepare(len(x))
        out = self.vms[len(x)]["main"](tvm.runtime.tensor(np.ascontiguousarray(x)))
        return np.asarray(out.numpy(), np.float32)


def compile(model_path, fmt: str, example: np.ndarray, opts: DeployOptions) -> Compiled:
    model_path = Path(model_path)
    if fmt != "onnx":
        raise CompileError(NAME, f"reads ONNX here, not {fmt}", "setup")
    if opts.device != "cpu" or opts.precision != "fp32":
        raise CompileError(NAME, f"compiles fp32 for the CPU here, not {opts.precision} on {opts.device}", "setup")
    os.environ["TVM_NUM_THREADS"] = str(opts.threads)  # read when the thread pool starts
    import tvm
    from tvm.target import codegen

    try:
        input_name, dims = onnx_input(model_path)
    except Exception as e:
        raise CompileError(NAME, f"{type(e).__name__}: {e}", "import") from e
    target = _target(tvm, opts.threads)
    import tvm_ffi

    tvm.get_global_func("runtime.config_threadpool")(BIG_CORES, opts.threads)
    info = base_info(NAME, tvm.__version__, opts, target=str(target), cpu=codegen.llvm_get_system_cpu(),
                     vector_width=int(codegen.llvm_get_vector_width(target)), llvm=int(codegen.llvm_version_major()),
                     tvm_ffi=getattr(tvm_ffi, "__version__", None), tuning_trials=opts.tuning_trials,
                     tuned=opts.tuning_trials > 0, pool_threads=int(tvm.get_global_func("runtime.NumThreads")()),
                     threads_applied=f"TVM_NUM_THREADS={opts.threads}, config_threadpool(big cores, {opts.threads}), "
                                     f"target num-cores={opts.threads}",
                     model_sha256=model_sha256(model_path), compile_s_by_batch={}, cache_by_batch={})
    info["cache_key"] = {"model_sha256": info["model_sha256"], "runtime": tvm.__version__, "precision": opts.precision,
                         "target": str(target), "host": cpu_fingerprint(), "tuning_trials": opts.tuning_trials}
    compiled = TvmCompiled(model_path, input_name, dims, str(example.dtype), target, opts, info)
    compiled.prepare(len(example))
    return compiled
