"""IREE: iree-import-onnx (ONNX -> MLIR torch dialect), iree-compile for llvm-cpu, the local-task driver.

Target: llvm-cpu with --iree-llvmcpu-target-cpu=host (the compiler's LLVM resolves this CPU and its
vector extensions; the cache key carries the CPU's name and feature digest). Shapes are static:
the ONNX input's batch is fixed to the example's (IREE 3.13 cannot compile ONNX GRU with a dynamic
batch), and a run() with another batch size compiles once more for it (compile_s_by_batch).
Threads: the local-task driver's worker pool is limited with --task_topology_max_group_count =
opts.threads (a process-wide runtime flag, set before the device is created).
Precision: bf16 demotes the inputs of every contraction (conv, matmul) to bf16 with f32 accumulation
(--iree-global-opt-demote-contraction-inputs-type=bf16); fp16 demotes every f32 op and value to f16
(--iree-input-demote-f32-to-f16). The .vmfb module per batch is the cached artefact.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.deploy import cache
from harness.deploy.common import CompileError, Compiled, DeployOptions, Timer, base_info, model_sha256
from harness.deploy.host import cpu_fingerprint, onnx_input, static_batch

NAME = "iree"
FLAGS = {
    "fp32": [],
    "bf16": ["--iree-global-opt-demote-contraction-inputs-type=bf16",
             "--iree-global-opt-demote-contraction-inputs-operations=all"],
    "fp16": ["--iree-input-demote-f32-to-f16"],
}
_DEVICE = {}  # one local-task device per process: the thread flag is process-wide


def _device(threads: int):
    import iree.runtime as ireert

    if "device" not in _DEVICE:
        ireert.flags.parse_flags(f"--task_topology_max_group_count={threads}")
        _DEVICE["device"], _DEVICE["threads"] = ireert.get_driver("local-task").create_default_device(), threads
    elif _DEVICE["threads"] != threads:
        raise CompileError(NAME, f"this process's IREE device already runs {_DEVICE['threads']} threads, "
                                 f"not {threads} (one thread count per worker process)", "setup")
    return _DEVICE["device"]


def _build(model_path: Path, batch: int, precision: str, out: Path) -> None:
    import iree.compiler as ireec
    from iree.compiler.tools.import_onnx import __main__ as import_onnx

    fixed = static_batch(model_path, batch, out / "static.onnx")
    mlir = out / "model.mlir"
    import_onnx.main(import_onnx.parse_arguments([str(fixed), "-o", str(mlir)]))
    ireec.compile_file(str(mlir), output_file=str(out / "model.vmfb"), target_backends=["llvm-cpu"],
                       extra_args=["--iree-llvmcpu-target-cpu=host", *FLAGS[precision]])
    fixed.unlink()
    mlir.unlink()


class IreeCompiled(Compiled):
    def __init__(self, model_path: Path, opts: DeployOptions, info: dict):
        self.model_path, self.opts, self.info = model_path, opts, info
        self.functions: dict[int, object] = {}

    def prepare(self, batch: int) -> None:
        import iree.runtime as ireert

        if batch in self.functions:
            return
        key = {**self.info["cache_key"], "batch": batch}
        try:
            with Timer() as t:
                entry = cache.cached(self.opts.cache_dir, NAME, key,
                                     lambda out: _build(self.model_path, batch, self.opts.precision, out))
                config = ireert.Config(device=_device(self.opts.threads))
                context = ireert.SystemContext(config=config)
                vm_module = ireert.VmModule.mmap(config.vm_instance, str(entry.path / "model.vmfb"))
                context.add_vm_module(vm_module)
                # the graph's function (the importer names it after the ONNX graph), not its $async twin or __init
                name = next(n for n in vm_module.function_names if "$" not in n and not n.startswith("__"))
                self.functions[batch] = context.modules[vm_module.name][name]
        except CompileError:
            raise
        except Exception as e:  # iree-compile's diagnostics (CompilerToolError) or the importer's
            raise CompileError(NAME, _diagnostics(e)) from e
        self.info["compile_s_by_batch"][batch] = t.s
        self.info["cache_by_batch"][batch] = entry.record()
        self.info.setdefault("compile_s", t.s)

    def run(self, x: np.ndarray) -> np.ndarray:
        self.prepare(len(x))
        return np.asarray(self.functions[len(x)](np.ascontiguousarray(x)).to_host(), np.float32)


def _diagnostics(e: Exception) -> str:
    """iree-compile's error lines without its (very long) target attribute dumps."""
    text = str(e)
    lines = [ln if len(ln) < 600 else ln[:600] + " ..." for ln in text.splitlines()]
    return "\n".join(lines[:40])


def compile(model_path, fmt: str, example: np.ndarray, opts: DeployOptions) -> Compiled:
    import iree.compiler.version as compiler_version
    import iree.runtime.version as runtime_version

    model_path = Path(model_path)
    if fmt != "onnx":
        raise CompileError(NAME, f"reads ONNX here, not {fmt}", "setup")
    if opts.device != "cpu" or opts.precision not in FLAGS:
        raise CompileError(NAME, f"compiles fp32/bf16/fp16 for llvm-cpu here, not {opts.precision} on {opts.device}",
                           "setup")
    try:
        onnx_input(model_path)
    except Exception as e:
        raise CompileError(NAME, f"{type(e).__name__}: {e}", "import") from e
    version = compiler_version.VERSION
    info = base_info(NAME, version, opts, runtime_version=runtime_version.VERSION,
                     target=f"llvm-cpu, target-cpu=host ({cpu_fingerprint()})", flags=FLAGS[opts.precision],
                     threads_applied=f"--task_topology_max_group_count={opts.threads} (local-task driver)",
                     model_sha256=model_sha256(model_path), compile_s_by_batch={}, cache_by_batch={})
    info["cache_key"] = {"model_sha256": info["model_sha256"], "runtime": version, "target": "llvm-cpu host",
                         "host": cpu_fingerprint(), "precision": opts.precision}
    compiled = IreeCompiled(model_path, opts, info)
    compiled.prepare(len(example))
    return compiled
