"""LiteRT (ai-edge-litert, the TFLite runtime) for TensorFlow/Keras exports made by the TFLite converter.

Threads: Interpreter(num_threads=opts.threads), used by its default XNNPACK delegate and the
builtin kernels. Nothing is compiled ahead: "compile" is building the interpreter and allocating
its tensors for the batch (compile_s), so there is no cached artefact. The precision is the
file's: the TFLite converter quantizes (int8) or halves (fp16) at export, so this runtime takes
fp32 here and records the file's input/output types.
A file converted with a fixed batch (a GRU needs one for the builtin ops) is refused for another
batch size: resizing such a file can return the converted batch's outputs, silently wrong.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.deploy.common import CompileError, Compiled, DeployOptions, Timer, base_info, model_sha256

NAME = "litert"


class LiteRTCompiled(Compiled):
    def __init__(self, model_path: Path, opts: DeployOptions, info: dict):
        self.model_path, self.opts, self.info = model_path, opts, info
        self.interpreters: dict[int, tuple] = {}

    def prepare(self, batch: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        if batch in self.interpreters:
            return
        try:
            with Timer() as t:
                it = Interpreter(model_path=str(self.model_path), num_threads=self.opts.threads)
                inp = it.get_input_details()[0]
                fixed = int(inp["shape_signature"][0])
                if fixed not in (-1, batch):
                    raise CompileError(NAME, f"this file was converted for a fixed batch of {fixed}, not {batch}: "
                                             "convert it with a dynamic batch or run that batch size", "setup")
                if int(inp["shape"][0]) != batch:
                    it.resize_tensor_input(inp["index"], [batch, *inp["shape"][1:]], strict=True)
                it.allocate_tensors()
        except CompileError:
            raise
        except Exception as e:  # the interpreter's own message (bad flatbuffer, unsupported op ...)
            raise CompileError(NAME, f"{type(e).__name__}: {e}") from e
        out = it.get_output_details()[0]
        self.interpreters[batch] = (it, inp["index"], out["index"], inp["dtype"])
        self.info["compile_s_by_batch"][batch] = t.s
        self.info.setdefault("compile_s", t.s)
        self.info.setdefault("file_types", {"input": np.dtype(inp["dtype"]).name, "output": np.dtype(out["dtype"]).name})

    def run(self, x: np.ndarray) -> np.ndarray:
        self.prepare(len(x))
        it, i, o, dtype = self.interpreters[len(x)]
        it.set_tensor(i, np.ascontiguousarray(x, dtype=dtype))
        it.invoke()
        y = it.get_tensor(o)
        if len(y) != len(x):
            raise RuntimeError(f"LiteRT returned {len(y)} rows for a batch of {len(x)}")
        return np.array(y, np.float32)


def compile(model_path, fmt: str, example: np.ndarray, opts: DeployOptions) -> Compiled:
    import ai_edge_litert

    model_path = Path(model_path)
    if fmt != "tflite":
        raise CompileError(NAME, f"reads TFLite flatbuffers, not {fmt}", "setup")
    if opts.device != "cpu" or opts.precision != "fp32":
        raise CompileError(NAME, "runs the file's own precision on the CPU here (fp32); quantize in the TFLite converter",
                           "setup")
    info = base_info(NAME, getattr(ai_edge_litert, "__version__", "?"), opts, target="CPU, XNNPACK delegate",
                     threads_applied=f"Interpreter(num_threads={opts.threads})", model_sha256=model_sha256(model_path),
                     cache={"status": "none: the interpreter reads the flatbuffer; nothing is compiled ahead"},
                     compile_s_by_batch={})
    compiled = LiteRTCompiled(model_path, opts, info)
    compiled.prepare(len(example))
    return compiled
