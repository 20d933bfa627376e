"""`python -m harness predict`: load canonical weights into an implementation, write eval-mode logits."""
from __future__ import annotations

import sys


def add_arguments(p) -> None:
    from harness.cli_options import add_implementation

    add_implementation(p)
    p.add_argument("--weights", required=True, help="canonical weights (.npz, keys and layouts of the spec)")
    p.add_argument("--input", required=True, help=".npy: (N,3,32,32) float32 images, (N,150) integer token ids "
                   "(rnn) or (N,256) bytes (transformer)")
    p.add_argument("--out", required=True, help="the .npy file to write: float32 logits, (N, classes) or, for the "
                   "transformer, (N, 256, 256): a next-byte distribution per position")


def read_input(path: str, spec):
    """Validate an input array against the model's spec; returns (array, problem or None)."""
    import numpy as np

    try:
        x = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        return None, f"--input {path}: not a readable .npy file ({e})"
    want = spec.input_shape
    if x.ndim != len(want) + 1 or tuple(x.shape[1:]) != tuple(want):
        return None, f"--input {path}: shape {tuple(x.shape)}, {spec.name} takes (N, {', '.join(map(str, want))})"
    if spec.input_dtype == "int64":
        if x.dtype.kind not in "iu":
            return None, f"--input {path}: dtype {x.dtype}, {spec.name} takes integer token ids"
        vocab = spec.arch.vocab
        if x.size and (x.min() < 0 or x.max() >= vocab):
            return None, f"--input {path}: token ids must lie in [0, {vocab}), found [{x.min()}, {x.max()}]"
        return x, None
    if x.dtype != np.float32:
        return None, f"--input {path}: dtype {x.dtype}, {spec.name} takes float32 images"
    if not np.isfinite(x).all():
        return None, f"--input {path}: contains NaN or infinite values"
    return x, None


def main(args) -> int:
    import tempfile
    from pathlib import Path

    import numpy as np

    from harness.canonical import load_weights, shapes_of, weight_problems
    from harness.cli_options import selection
    from harness.errors import UsageError
    from harness.launch import run_worker
    from harness.protocol import RunOptions
    from harness.requests import one_implementation
    from harness.specs import get_spec

    impl = one_implementation(selection(args))
    spec = get_spec(impl.model)
    try:
        weights = load_weights(Path(args.weights).expanduser())
    except (OSError, ValueError) as e:
        raise UsageError(f"--weights {args.weights}: not a readable .npz file ({e})") from None
    problems = weight_problems(spec, shapes_of(weights))
    if problems:
        raise UsageError(f"--weights {args.weights} is not a canonical {spec.name} file: {'; '.join(problems[:5])}")
    x, problem = read_input(args.input, spec)
    if problem:
        raise UsageError(problem)
    out = Path(args.out).expanduser().resolve()
    if not out.parent.is_dir():
        raise UsageError(f"--out {args.out}: folder {out.parent} does not exist")
    with tempfile.TemporaryDirectory(prefix="dl-rosetta-predict-") as tmp:
        source = Path(args.input).expanduser().resolve()
        if x.dtype != np.dtype(spec.input_dtype):  # e.g. int32 token ids: the workers read int64
            source = Path(tmp) / "input.npy"
            np.save(source, np.asarray(x, dtype=spec.input_dtype))
        pair = {"weights": str(Path(args.weights).expanduser().resolve()), "out": str(out)}
        outcome = run_worker(impl, RunOptions(device=args.device, backend=impl.backend), "predict",
                             timeout=args.timeout, extra={"input": str(source), "pairs": [pair]})
        if outcome.status != "ok":
            print(f"error: {impl.label} failed: {outcome.error}", file=sys.stderr)
            print(outcome.log, file=sys.stderr)
            return 1
    logits = np.load(out)
    print(f"wrote {args.out}: logits {logits.shape} {logits.dtype} ({impl.label})")
    return 0
