"""Workers of known behaviour, for tests of the harness itself (not of any framework).

Run as the worker (`python tests/worker_stubs.py JOB --events-fd N`, WORKER_STUB=<name> in the
environment), a stub replaces the Python runtime's import and build for python/pytorch and hands
over to the real harness.worker.main: the event pipe, the parent guard, the train mode, the
harness's clock and the record are the harness's own. No framework is imported.

  sleep-steps   a trainer whose train_epoch sleeps STUB_STEP_S seconds per step (the one clock)
  silent-build  build writes the file STUB_MARKER and then sleeps without a word (no events):
                a worker the harness must take along when it dies

`stub_command(name)` writes the shell script that `harness.launch.interpreter` can return, and
`driver_argv` runs `python -m harness ...` in a process of its own whose workers are stubs
(optionally SIGKILLing itself between a record's temporary file and its link).
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ENV = "WORKER_STUB"


def build(name: str, spec, options):
    import numpy as np

    from harness.protocol import Trainer, setup_record

    if name == "silent-build":
        Path(os.environ["STUB_MARKER"]).write_text(str(os.getpid()))
        time.sleep(600)
        raise RuntimeError("silent-build was not killed")

    step_s = float(os.environ.get("STUB_STEP_S", "0.05"))

    class SleepTrainer(Trainer):
        info = {"layout": "NCHW", "fast_path": {}, "deviations": ["a test stub: sleeps instead of training"],
                "setup": setup_record(options), "pid": os.getpid(), "step_s": step_s}

        def fit_data(self, x, y):
            self.n = len(x)

        def train_epoch(self, batches):
            losses = []
            for _ in batches:
                time.sleep(step_s)
                losses.append(1.0 / (len(losses) + 1))
            return losses

        def predict(self, x):
            return np.zeros((len(x), spec.num_classes), dtype=np.float32)

        def get_weights(self):
            return {}

        def set_weights(self, weights):
            pass

        def param_count(self):
            return spec.param_count

    return SleepTrainer()


def install(name: str) -> None:
    from harness.runtimes import python as runtime

    build_real, import_real = runtime.build, runtime.import_framework

    def patched_build(impl, spec, options):
        return build(name, spec, options) if impl.name == "pytorch" else build_real(impl, spec, options)

    def patched_import(impl, options):
        return {"stub": name} if impl.name == "pytorch" else import_real(impl, options)

    runtime.build, runtime.import_framework = patched_build, patched_import


def stub_command(folder: Path) -> Path:
    """A script that takes the worker's command line (`-m harness.worker JOB ...`) and runs this file."""
    script = Path(folder) / "python-stub"
    script.write_text(f'#!/bin/sh\nshift 2\nexec "{sys.executable}" "{Path(__file__)}" "$@"\n')
    script.chmod(0o755)
    return script


DRIVER = r'''
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
import worker_stubs
from harness import launch

stub, kill_at_link = os.environ.get("WORKER_STUB"), os.environ.get("KILL_AT_LINK")
if stub:
    script = worker_stubs.stub_command(Path(os.environ["STUB_DIR"]))
    launch.interpreter = lambda env: script
if kill_at_link:
    real_link = os.link

    def link(src, dst, *a, **k):
        if str(dst).endswith(".json"):  # the record's temporary file is written: die before the link
            os.kill(os.getpid(), signal.SIGKILL)
        return real_link(src, dst, *a, **k)

    os.link = link
import runpy
sys.argv = ["harness", *sys.argv[1:]]
runpy.run_module("harness", run_name="__main__", alter_sys=True)  # harness/__main__.py: its signal handling too
'''


def driver_argv(*args: str) -> list[str]:
    """`python -m harness ARGS` in a process whose launch uses the stub named by $WORKER_STUB."""
    return [sys.executable, "-c", DRIVER.format(tests=str(HERE)), *args]


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    from harness import worker

    install(os.environ[ENV])
    code = worker.main(sys.argv[1:])
    sys.stdout.flush()
    os._exit(code)
