"""The Python environments a worker can run in, and what is installed in each.

"main" is the interpreter running the harness. "legacy" is a second virtual environment with
numpy 1.23.5 for MXNet, Chainer and PyTensor; the harness only ever reaches it through a worker.
"""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LEGACY_VAR = "DL_ROSETTA_LEGACY_PYTHON"


def interpreter(env: str) -> Path | None:
    if env == "main":
        return Path(sys.executable)
    if env == "legacy":
        path = Path(os.environ.get(LEGACY_VAR) or REPO / ".venv-legacy" / "bin" / "python")
        return path if path.exists() else None
    raise ValueError(f"unknown environment {env!r}")


_PROBE = "import importlib.util as u, json, sys; print(json.dumps([m for m in sys.argv[1:] if u.find_spec(m) is None]))"


@functools.lru_cache(maxsize=None)
def missing_modules(env: str, modules: tuple[str, ...]) -> tuple[str, ...] | None:
    """The modules that env cannot import (found by spec, not imported); None if env is absent."""
    if env == "main":
        import importlib.util

        return tuple(m for m in modules if importlib.util.find_spec(m) is None)
    python = interpreter(env)
    if python is None:
        return None
    out = subprocess.run([str(python), "-c", _PROBE, *modules], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        return None
    return tuple(json.loads(out.stdout))
