"""Runtimes host implementations of one language inside the worker process.

Each runtime module offers, on the parent side,
    availability(impl) -> str | None        why impl cannot run here (None: it can)
and, inside the worker,
    import_framework(impl, options) -> dict  import the framework; return its versions
    build(impl, spec, options) -> Trainer    the object of harness.protocol
"""
from __future__ import annotations

import importlib


def get(lang: str):
    return importlib.import_module(f"harness.runtimes.{lang}")


def availability(impl) -> str | None:
    if impl.framework.retired:
        return f"retired: {impl.framework.retired}"
    return get(impl.lang).availability(impl)
