"""`python -m harness weights`: write the initial canonical weights an implementation creates."""
from __future__ import annotations

import sys


def add_arguments(p) -> None:
    add_implementation(p)
    p.add_argument("--seed", type=int, default=0, help="weight init seed (default: 0)")
    p.add_argument("--out", required=True, help="the .npz file to write")


def add_implementation(p) -> None:
    """One implementation: --lang/--framework/--backend/--model, as `run` names them."""
    from harness.commands.run import positive_float

    p.add_argument("--lang", default="python", help="python, r or julia (default: python)")
    p.add_argument("--framework", required=True, help="e.g. pytorch, tensorflow, keras, jax, mxnet, chainer, "
                   "pytensor, flux, knet")
    p.add_argument("--backend", help="Keras 3 backend: tensorflow, jax or torch")
    p.add_argument("--model", required=True, help="cnn, resnet50 or rnn")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--timeout", type=positive_float, default=1800.0, help="seconds for the worker (default: 1800)")


def one_implementation(args):
    """The single runnable implementation the arguments name; UsageError otherwise."""
    from harness import runtimes
    from harness.errors import UsageError
    from harness.registry import select

    impls = select(args.lang, args.framework, args.backend, args.model)
    if not impls:
        raise UsageError(f"nothing registered for --lang {args.lang} --framework {args.framework} --model {args.model}")
    if len(impls) > 1:
        choices = ", ".join(i.backend for i in impls)
        raise UsageError(f"{args.framework} needs --backend; choices: {choices}")
    impl = impls[0]
    reason = runtimes.availability(impl)
    if reason:
        raise UsageError(f"{impl.label} cannot run here: {reason}")
    return impl


def run_mode(impl, args, mode: str, extra: dict, seed: int = 0):
    """Launch one worker in `mode`; returns its result or prints the failure and returns None."""
    from harness.protocol import RunOptions
    from harness.launch import Job, run_job
    from harness.specs import get_spec

    spec = get_spec(impl.model)
    options = RunOptions(seed=seed, device=args.device, backend=impl.backend)
    job = Job(impl, options.to_dict(), {}, epochs=0, batch_size=spec.batch_size, mode=mode,
              timeout=args.timeout, extra=extra)
    outcome = run_job(job)
    if outcome.status != "ok":
        print(f"error: {impl.label} failed: {outcome.error}", file=sys.stderr)
        if outcome.log:
            print(outcome.log, file=sys.stderr)
        return None
    return outcome.result


def main(args) -> int:
    from pathlib import Path

    from harness.canonical import load_weights, shapes_of, weight_problems
    from harness.errors import UsageError
    from harness.specs import get_spec

    impl = one_implementation(args)
    out = Path(args.out).expanduser().resolve()
    if not out.parent.is_dir():
        raise UsageError(f"--out {args.out}: folder {out.parent} does not exist")
    if run_mode(impl, args, "weights", {"out": str(out)}, seed=args.seed) is None:
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
