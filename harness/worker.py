"""The worker process: hosts one run of one mode of one implementation.

Started by harness.launch as `<env python> -m harness.worker JOB.json --events-fd N`. It speaks
only through JSON lines on fd N (events: phase, progress, epoch, result, error); whatever the
frameworks print goes to stderr, which the parent keeps as the run's log.

The worker imports the framework and builds the model (both timed), then hands the opened
implementation to the job's mode. Each mode lives beside its feature (MODES); the worker knows
none of them but by name.
"""
from __future__ import annotations

import time

T_MAIN = time.monotonic()  # before anything heavy is imported: the end of interpreter start-up

import argparse  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

import numpy as np  # noqa: E402, F401 - every mode needs it; imported before the timed framework import

from harness import parallel, runtimes  # noqa: E402
from harness.launch import SPAWN_VAR, guard_parent  # noqa: E402
from harness.protocol import RunOptions, Trainer  # noqa: E402
from harness.registry import select  # noqa: E402
from harness.specs import get_spec  # noqa: E402

# mode -> "module:function(job, opened, events) -> result dict"
MODES = {"train": "harness.benchmark:run_train",
         "weights": "harness.canonical:run_weights",
         "predict": "harness.canonical:run_predict",
         "equivalence": "harness.equivalence_modes:run_equivalence",
         "train-export": "harness.equivalence_modes:run_train_export",
         "infer-prepare": "harness.inference:run_prepare",
         "infer": "harness.inference:run_infer",
         "deploy-logits": "harness.inference:run_deploy_logits"}
# Modes that run without the implementation: no framework import or model build, `opened` is None
# (a deployment runtime compiling an exported file runs in the main environment, whatever framework
# exported it). The job may still name an implementation, for the record.
BARE = {"deploy-logits"}

class Events:
    def __init__(self, fd: int | None):
        self._f = None if fd is None else os.fdopen(fd, "w", buffering=1)  # None: a replica other than rank 0

    def send(self, event: str, **data):
        if self._f is None:
            return
        self._f.write(json.dumps({"event": event, **data}, default=_jsonable) + "\n")
        self._f.flush()


def _jsonable(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


@dataclass
class Opened:
    """An implementation imported and built in this process; `build` makes another trainer."""

    impl: object  # harness.registry.Implementation
    spec: object  # harness.specs.ModelSpec
    options: RunOptions
    runtime: object  # the harness.runtimes module of the implementation's language
    trainer: object  # harness.protocol.Trainer
    versions: dict
    param_count: int
    timing: dict = field(default_factory=dict)

    def build(self, options: RunOptions):
        return self.runtime.build(self.impl, self.spec, options)


def open_implementation(job: dict, events: Events) -> Opened:
    """Import the framework and build the model, timing both."""
    i = job["impl"]
    (impl,) = select(i["lang"], i["framework"], i["backend"], i["model"])
    spec = get_spec(impl.model)
    options = RunOptions(**job["options"])
    runtime = runtimes.get(impl.lang)
    events.send("phase", name="import")
    t = time.monotonic()
    versions = runtime.import_framework(impl, options)
    import_s = time.monotonic() - t
    events.send("phase", name="build")
    t = time.monotonic()
    trainer = runtime.build(impl, spec, options)
    build_s = time.monotonic() - t
    if not isinstance(trainer, Trainer):
        raise TypeError(f"{impl.label}: build() returned a {type(trainer).__name__}, which does not subclass "
                        "harness.protocol.Trainer (the contract: required methods, and defaults for the optional ones)")
    timing = {"import_s": import_s, "build_s": build_s}
    compiled = trainer.info.get("compile") or {}
    if compiled.get("seconds") is not None:  # code compiled for this run (C++): start-up, not import
        timing["compile_s"] = compiled["seconds"]
        timing[f"{compiled.get('phase', 'build')}_s"] -= compiled["seconds"]
    return Opened(impl, spec, options, runtime, trainer, versions, int(trainer.param_count()), timing)


def mode_function(mode: str):
    module, name = MODES[mode].split(":")
    return getattr(importlib.import_module(module), name)


def main(argv=None) -> int:
    guard_parent()  # this process ends with the harness, whatever phase it is in
    parser = argparse.ArgumentParser(prog="harness.worker")
    parser.add_argument("job")
    parser.add_argument("--events-fd", type=int)
    parser.add_argument("--events-path", help="a FIFO (workers started by torchrun inherit no descriptors)")
    args = parser.parse_args(argv)
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun replica: only rank 0 speaks to the harness
        events = Events(None)
    elif args.events_path:
        events = Events(os.open(args.events_path, os.O_WRONLY))
    else:
        events = Events(args.events_fd)
    os.dup2(2, 1)  # framework chatter on stdout joins stderr, the run's log
    sys.stdout = sys.stderr
    spawn = float(os.environ.get(SPAWN_VAR, T_MAIN))
    try:
        job = json.loads(open(args.job).read())
        events.send("phase", name="start", startup_s=T_MAIN - spawn, pid=os.getpid())
        mode = job.get("mode", "train")
        run = mode_function(mode)
        bare = mode in BARE or job.get("bare", False)
        result = run(job, None if bare else open_implementation(job, events), events)
        result.setdefault("timing", {})["startup_s"] = T_MAIN - spawn
        events.send("result", **result)
        parallel.leave_nodes()  # --nodes K: every node has sent its result before any exits
        return 0
    except BaseException as e:  # noqa: BLE001 - everything is reported, then the process ends
        trace = traceback.format_exc()
        print(trace, file=sys.stderr, flush=True)  # the run's log keeps the whole traceback
        events.send("error", type=type(e).__name__, message=str(e) or type(e).__name__, traceback=trace)
        return 1


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # skip interpreter teardown: some runtimes (R, TF threads) can hang in it
