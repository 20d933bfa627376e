"""`python -m harness weights`: write the initial canonical weights an implementation creates."""
from __future__ import annotations

import sys

from harness.cli_options import add_implementation, seed


def add_arguments(p) -> None:
    add_implementation(p)
    p.add_argument("--seed", type=seed, default=0, help="weight init seed (default: 0)")
    p.add_argument("--out", required=True, help="the .npz file to write")


def main(args) -> int:
    from pathlib import Path

    from harness.canonical import load_weights, shapes_of, weight_problems
    from harness.cli_options import selection
    from harness.errors import UsageError
    from harness.launch import run_worker
    from harness.protocol import RunOptions
    from harness.requests import one_implementation
    from harness.specs import get_spec

    impl = one_implementation(selection(args))
    out = Path(args.out).expanduser().resolve()
    if not out.parent.is_dir():
        raise UsageError(f"--out {args.out}: folder {out.parent} does not exist")
    options = RunOptions(seed=args.seed, device=args.device, backend=impl.backend)
    outcome = run_worker(impl, options, "weights", timeout=args.timeout, extra={"out": str(out)})
    if outcome.status != "ok":
        print(f"error: {impl.label} failed: {outcome.error}", file=sys.stderr)
        print(outcome.log, file=sys.stderr)
        return 1
    spec = get_spec(impl.model)
    weights = load_weights(out)
    problems = weight_problems(spec, shapes_of(weights))
    if problems:
        print(f"error: {impl.label} exported weights that are not canonical: {'; '.join(problems)}", file=sys.stderr)
        return 1
    total = sum(v.size for k, v in weights.items() if k in {w.key for w in spec.weights if w.trainable})
    print(f"wrote {args.out}: {len(weights)} tensors, {total:,} trainable parameters "
          f"({impl.label}, seed {args.seed})")
    return 0
