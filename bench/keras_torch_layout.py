"""Where Keras 3 on the torch backend loses its time on ResNet-50: image layout and compilation.

On the lent H100 the harness measured Keras/torch at 333 images/s on ResNet-50 (224 px, batch 64,
fp32) against PyTorch's 2,266, holding 39 GB. Two suspects: the torch backend transposing around
every convolution for channels_last (torch's convolutions are channels_first), and eager
execution. This trains keras.applications.ResNet50 (the same layers in Keras' own code, so the
layout can be switched) on synthetic data in every combination of data format and jit_compile
(torch.compile on this backend), each in a fresh process, and prints one row per variant:

    python bench/keras_torch_layout.py --device cuda                # all four variants
    python bench/keras_torch_layout.py --device cpu --image-size 32 --steps 3   # a rehearsal

Images/s is over the timed steps after the warm-up steps (compilation, cuDNN autotuning), with the
device synchronised before each clock reading.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

VARIANTS = [("channels_last", False), ("channels_first", False), ("channels_last", True), ("channels_first", True)]


def one(args) -> dict:
    os.environ["KERAS_BACKEND"] = "torch"
    import keras
    import numpy as np
    import torch

    keras.config.set_image_data_format(args.data_format)
    keras.utils.set_random_seed(0)
    shape = (3, args.image_size, args.image_size) if args.data_format == "channels_first" else (args.image_size, args.image_size, 3)
    model = keras.applications.ResNet50(weights=None, input_shape=shape, classes=10)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), jit_compile=args.jit,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=False))
    rng = np.random.default_rng(0)
    x = rng.random((args.batch, *shape), dtype=np.float32)
    y = rng.integers(0, 10, args.batch)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    for _ in range(args.warmup):
        model.train_on_batch(x, y)
    sync()
    t = time.monotonic()
    for _ in range(args.steps):
        model.train_on_batch(x, y)
    sync()
    seconds = time.monotonic() - t
    peak = torch.cuda.max_memory_allocated() if args.device == "cuda" else None
    return {"data_format": args.data_format, "jit_compile": args.jit, "images_per_s": args.steps * args.batch / seconds,
            "peak_gib": peak / 2**30 if peak else None, "keras": keras.__version__, "torch": torch.__version__}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--timeout", type=float, default=240, help="seconds per variant")
    p.add_argument("--data-format", help=argparse.SUPPRESS)  # one variant, in a child process
    p.add_argument("--jit", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.data_format:
        print(json.dumps(one(args)))
        return 0
    common = [f"--device={args.device}", f"--image-size={args.image_size}", f"--batch={args.batch}",
              f"--steps={args.steps}", f"--warmup={args.warmup}"]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=os.environ.get("CUDA_VISIBLE_DEVICES", "0"))
    print(f"{'data_format':<15} {'jit_compile':<11} {'images/s':>9} {'peak GiB':>9}")
    for data_format, jit in VARIANTS:
        cmd = [sys.executable, __file__, *common, f"--data-format={data_format}", *(["--jit"] if jit else [])]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
            row = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else None
            error = None if row else (proc.stderr.strip().splitlines() or ["no output"])[-1][:100]
        except subprocess.TimeoutExpired:
            row, error = None, f"timed out after {args.timeout:g} s"
        if row is None:
            print(f"{data_format:<15} {str(jit):<11} {'failed':>9}  {error}")
        else:
            peak = f"{row['peak_gib']:.1f}" if row["peak_gib"] else "-"
            print(f"{data_format:<15} {str(jit):<11} {row['images_per_s']:>9.0f} {peak:>9}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
