"""JAX/Flax to ONNX with jax2onnx: the eval-mode model (running BatchNorm statistics, no dropout)
traced as a function of its input, the weights baked in as initializers, batch dynamic."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from harness.onnx_files import ONNX_OPSET
from harness.protocol import ExportUnsupported


def export(trainer, fmt: str, path: str, example) -> dict:
    if fmt != "onnx":
        raise ExportUnsupported(f"JAX exports onnx, not {fmt}")
    import jax2onnx
    import onnx

    params, rest, _ = trainer.state
    # The eval view of the merged model: only parameters and batch statistics enter the trace (the
    # dropout RNG keys stay out: jax2onnx cannot hold a PRNG key as a constant).
    model = nnx.view(nnx.merge(trainer.graphdef, params, rest), deterministic=True, use_running_average=True,
                     raise_if_not_found=False)
    x = np.asarray(example)
    dtype = np.int32 if x.dtype.kind in "iu" else np.float32  # the trainer's own input dtypes
    proto = jax2onnx.to_onnx(lambda x: model(x).astype(jnp.float32), [jax.ShapeDtypeStruct(("B", *x.shape[1:]), dtype)],
                             opset=ONNX_OPSET, input_names=["input"], output_names=["logits"])
    onnx.save(proto, path)  # one file (return_mode="file" spills large initializers into a sidecar)
    from importlib.metadata import version

    return {"exporter": f"jax2onnx {version('jax2onnx')}, jax {jax.__version__}",
            "layout": "NHWC" if x.ndim == 4 else "tokens", "dynamic_batch": True}
