"""`python -m harness check --model M`: prove every runnable implementation is the same model.

Runs the checks of harness.equivalence for every runnable implementation of the model against the
reference (PyTorch), prints the matrix implementation x check with the worst deviation of each,
and exits 1 if any check fails or any worker breaks (implementations that cannot run here are
listed as skipped with their reason and do not fail the command).
"""
from __future__ import annotations

import sys


def add_arguments(p) -> None:
    from harness.cli_options import no_abbreviations, positive_int, seed, timeout_seconds
    from harness.protocol import DEVICES, PRECISIONS
    from harness.specs import MODELS

    no_abbreviations(p)
    p.add_argument("--model", required=True, help=", ".join(MODELS))
    p.add_argument("--lang", help="only this language (default: every language)")
    p.add_argument("--framework", help="only this framework (the reference always runs)")
    p.add_argument("--backend", help="only this Keras backend")
    p.add_argument("--checks", help="comma-separated subset of shapes,init,logits,steps,dropout,data,transfer "
                   "(default: all), or deploy: every implementation's export on every installed deployment runtime "
                   "against its own and PyTorch's eval logits")
    p.add_argument("--runtime", help="--checks deploy: comma-separated runtimes (default: every installed one)")
    p.add_argument("--threads", type=positive_int, default=1, help="--checks deploy: threads per runtime (default: 1)")
    p.add_argument("--seed", type=seed, default=0, help="probe weights, batches and init (default: 0)")
    p.add_argument("--device", default="cpu", choices=DEVICES)
    p.add_argument("--precision", default="fp32", choices=PRECISIONS)
    p.add_argument("--samples", type=positive_int, help="synthetic training examples for check 5 "
                   "(default: cnn 512, resnet50 128, rnn 512, transformer 256)")
    p.add_argument("--data-dir", help="data cache (default: $DL_ROSETTA_DATA or ~/.cache/dl-rosetta)")
    p.add_argument("--keep", help="keep the weights, logits and worker logs in this folder")
    p.add_argument("--timeout", type=timeout_seconds, default=1800.0, help="seconds per worker (default: 1800)")
    p.add_argument("--format", default="table", choices=("table", "json"))
    p.add_argument("--quiet", action="store_true", help="no progress lines")


TRANSFER_SAMPLES = {"cnn": 512, "resnet50": 128, "rnn": 512, "transformer": 256}


def main(args) -> int:
    from pathlib import Path

    from harness import equivalence, runtimes
    from harness.errors import UsageError, choices_error
    from harness.protocol import RunOptions
    from harness.requests import DeviceSetup, Selection, check_setup, implementations

    checks = tuple(c.strip() for c in args.checks.split(",") if c.strip()) if args.checks else equivalence.CHECKS
    for c in checks:
        if c not in equivalence.CHECKS + ("deploy",):
            raise choices_error("check", c, equivalence.CHECKS + ("deploy",))
    deploy_runtimes = None
    if "deploy" in checks:
        from harness import inference

        deploy_runtimes = inference.parse_runtimes(args.runtime) or tuple(
            n for n in inference.runtime_names() if n != inference.NATIVE and inference.deploy_api().availability(n) is None)
        for name in deploy_runtimes:
            if name not in inference.runtime_names() or name == inference.NATIVE:
                raise choices_error("runtime", name, [n for n in inference.runtime_names() if n != inference.NATIVE])
            reason = inference.deploy_api().availability(name)
            if reason:
                raise UsageError(f"--runtime {name}: {reason}")
        if not deploy_runtimes:
            raise UsageError("--checks deploy: no deployment runtime is installed; e.g. pip install -e '.[onnxruntime]'")
        checks = tuple(c for c in checks if c != "deploy")
    elif args.runtime:
        raise UsageError("--runtime belongs to --checks deploy")
    runnable, skipped = implementations(Selection(args.lang, args.framework, args.backend, args.model), strict=False)
    ref = equivalence.reference_impl(args.model)
    reason = runtimes.availability(ref)
    if reason:
        raise UsageError(f"the reference {ref.label} cannot run here: {reason}")
    check_setup(DeviceSetup(device=args.device, precision=args.precision))
    options = RunOptions(seed=args.seed, device=args.device, precision=args.precision)
    say = (lambda *a: None) if args.quiet else (lambda text: print(text, file=sys.stderr, flush=True))
    samples = args.samples or TRANSFER_SAMPLES[args.model]
    if deploy_runtimes:
        code = _deploy(args, runnable, skipped, deploy_runtimes, options, say)
        if not checks:
            return code
    else:
        code = 0
    try:
        if args.keep:
            report = equivalence.check_model(args.model, runnable, skipped, options, Path(args.keep).expanduser(),
                                             checks, args.data_dir, samples, args.timeout, say)
        else:
            with equivalence.temporary_work() as tmp:
                report = equivalence.check_model(args.model, runnable, skipped, options, Path(tmp), checks,
                                                 args.data_dir, samples, args.timeout, say)
    except equivalence.WorkerFailed as e:
        print(f"error: the reference failed, nothing to compare with: {e}", file=sys.stderr)
        return 1
    if args.format == "json":
        print(equivalence.dumps(report))
    else:
        print(f"model {report['model']} against {report['reference']} "
              f"({args.device}, {args.precision}; tolerances: {equivalence.describe_tolerance(report)})")
        print(equivalence.matrix(report))
        said = equivalence.declared(report)
        if said:
            print("\ndeclared deviations:\n  " + "\n  ".join(said))
        bad = equivalence.failures(report)
        if bad:
            print("\nfailures:\n  " + "\n  ".join(bad))
    return code or (0 if report["passed"] else 1)


def _deploy(args, runnable, skipped, runtimes, options, say) -> int:
    from pathlib import Path

    from harness import equivalence, equivalence_deploy

    work = Path(args.keep).expanduser() / "deploy" if args.keep else None
    try:
        if work is not None:
            report = equivalence_deploy.check(args.model, runnable, runtimes, options, work, args.data_dir,
                                              args.threads, args.timeout, say)
        else:
            with equivalence.temporary_work() as tmp:
                report = equivalence_deploy.check(args.model, runnable, runtimes, options, Path(tmp), args.data_dir,
                                                  args.threads, args.timeout, say)
    except equivalence.WorkerFailed as e:
        print(f"error: the reference failed, nothing to compare with: {e}", file=sys.stderr)
        return 1
    if args.format == "json":
        print(equivalence_deploy.dumps(report))
    else:
        t = report["tolerance"]
        print(f"model {report['model']}: deployed logits against each implementation's own and PyTorch's "
              f"({args.device}; rtol {t['logits_rtol']:g}, atol {t['logits_atol']:g}; cell: worst |logit difference|)")
        print(equivalence_deploy.matrix(report))
        gone = equivalence_deploy.skipped(report) + [f"{i.label}: {r}" for i, r in skipped]
        if gone:
            print("\nnot applicable or skipped:\n  " + "\n  ".join(gone))
        bad = equivalence_deploy.failures(report)
        if bad:
            print("\nfailures:\n  " + "\n  ".join(bad))
    return 0 if report["passed"] else 1
