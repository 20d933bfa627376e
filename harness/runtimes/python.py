"""Python implementations: `python_models/<framework>/<model>.py`, imported in the worker."""
from __future__ import annotations

import importlib
import os

from harness import parallel
from harness.environments import REPO, missing_modules


def availability(impl) -> str | None:
    fw = impl.framework
    path = REPO / (impl.entry.replace(".", "/") + ".py")
    if not path.exists():
        return f"not implemented: {path.relative_to(REPO)} does not exist"
    missing = missing_modules(fw.env, fw.modules)
    if missing is None:
        return f"the {fw.env} environment is missing: {fw.install}"
    if missing:
        return f"{', '.join(missing)} not installed in the {fw.env} environment: {fw.install}"
    return None


def import_framework(impl, options) -> dict:
    if impl.name == "keras":
        os.environ["KERAS_BACKEND"] = impl.backend  # fixed per process: one worker per backend
    versions = {}
    for name in impl.framework.modules:
        mod = importlib.import_module(name)
        versions[name] = getattr(mod, "__version__", None) or _installed_version(name)
    if impl.name == "keras":
        versions[impl.backend] = getattr(importlib.import_module(impl.backend), "__version__", None)
    import numpy

    versions["numpy"] = numpy.__version__
    parallel.join_nodes(impl, options)  # --nodes K: before the framework touches a device
    return versions


def _installed_version(name: str) -> str | None:
    """The installed distribution's version, for a module without __version__ (tinygrad)."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def build(impl, spec, options):
    return importlib.import_module(impl.entry).build(spec, options)
