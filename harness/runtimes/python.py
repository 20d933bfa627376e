"""Python implementations: `python_models/<framework>/<model>.py`, imported in the worker."""
from __future__ import annotations

import importlib
import os
import shutil

from harness import parallel, resources
from harness.interpreters import missing_modules


def availability(impl) -> str | None:
    fw = impl.framework
    path = resources.source(impl.entry)
    if not path.exists():
        return f"not implemented: {resources.display(path)} does not exist"
    missing = missing_modules(fw.env, fw.modules)
    if missing is None:
        return f"the {fw.env} environment is missing: {fw.install}"
    if missing:
        return f"{', '.join(missing)} not installed in the {fw.env} environment: {fw.install}"
    absent = [e for e in fw.executables if shutil.which(e) is None]
    if absent:
        return (f"{', '.join(absent)} not found on PATH: python3 -m harness setup --frameworks "
                f"(installs Debian's {', '.join(fw.debian)})")
    return None


def import_framework(impl, options) -> dict:
    variable = impl.framework.backend_variable
    if variable:
        os.environ[variable] = impl.backend  # fixed per process: one worker per backend
    versions = {}
    for name in impl.framework.modules:
        mod = importlib.import_module(name)
        versions[name] = getattr(mod, "__version__", None) or _distribution_version(name)
    if impl.backend:
        versions[impl.backend] = getattr(importlib.import_module(impl.backend), "__version__", None)
    import numpy

    versions["numpy"] = numpy.__version__
    parallel.join_nodes(impl, options)  # --nodes K: before the framework touches a device
    return versions


def _distribution_version(module: str) -> str | None:
    """The installed distribution's version, for a module without __version__ (e.g. tinygrad)."""
    from importlib import metadata

    try:
        return metadata.version(module)
    except metadata.PackageNotFoundError:
        return None


def build(impl, spec, options):
    return importlib.import_module(impl.entry).build(spec, options)
