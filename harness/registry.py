"""The one registry of implementations: every (language, framework, backend, model) the suite knows.

Tests are parametrized over `IMPLEMENTATIONS`; adding an implementation means adding its files
and, for a new framework, one row to FRAMEWORKS below.
"""
from __future__ import annotations

from dataclasses import dataclass

from harness.errors import UsageError, choices_error
from harness.specs import MODELS

LANGS = ("python", "r", "julia")


@dataclass(frozen=True)
class Framework:
    lang: str
    name: str
    env: str  # which environment's interpreter runs the worker: "main" | "legacy"
    modules: tuple[str, ...]  # importable names the implementation needs (checked without importing)
    install: str  # the fix shown when a module is missing
    backends: tuple[str | None, ...] = (None,)
    retired: str = ""  # why it can never run on the Pythons these machines have


FRAMEWORKS: tuple[Framework, ...] = (
    Framework("python", "pytorch", "main", ("torch",), "pip install -e '.[pytorch]'"),
    Framework("python", "tensorflow", "main", ("tensorflow",), "pip install -e '.[tensorflow]'"),
    Framework("python", "keras", "main", ("keras",), "pip install -e '.[keras]'", backends=("tensorflow", "jax", "torch")),
    Framework("python", "jax", "main", ("jax", "flax", "optax"), "pip install -e '.[jax]'"),
    Framework("python", "mxnet", "legacy", ("mxnet",), "python3 -m harness setup --legacy"),
    Framework("python", "chainer", "legacy", ("chainer",), "python3 -m harness setup --legacy"),
    Framework("python", "pytensor", "legacy", ("pytensor",), "python3 -m harness setup --legacy"),
    Framework("python", "tinygrad", "main", ("tinygrad",), "pip install -e '.[tinygrad]'"),
    Framework("python", "cntk", "main", ("cntk",), "",
              retired="CNTK's last release (2.7, 2019) ships wheels for Python <= 3.6 only"),
    Framework("python", "caffe2", "main", ("caffe2",), "",
              retired="Caffe2 was folded into PyTorch and removed in PyTorch 2.0; no build exists for current Python"),
    Framework("r", "keras", "main", ("rpy2",), "python3 -m harness setup --r", backends=("tensorflow", "jax", "torch")),
    Framework("julia", "flux", "main", ("juliacall",), "python3 -m harness setup --julia"),
    Framework("julia", "knet", "main", ("juliacall",), "python3 -m harness setup --julia"),
)


@dataclass(frozen=True)
class Implementation:
    framework: Framework
    backend: str | None
    model: str

    @property
    def lang(self) -> str:
        return self.framework.lang

    @property
    def name(self) -> str:
        return self.framework.name

    @property
    def label(self) -> str:
        """e.g. 'python/keras[jax]/cnn'."""
        fw = f"{self.name}[{self.backend}]" if self.backend else self.name
        return f"{self.lang}/{fw}/{self.model}"

    @property
    def entry(self) -> str:
        """Where the code lives: a module for Python, a file for R and Julia."""
        if self.lang == "python":
            return f"python_models.{self.name}.{self.model}"
        if self.lang == "r":
            return f"r_models/{self.name}/{self.model}.R"
        return f"julia_models/{self.name}/{self.model}.jl"


IMPLEMENTATIONS: tuple[Implementation, ...] = tuple(
    Implementation(fw, backend, model) for fw in FRAMEWORKS for backend in fw.backends for model in MODELS
)


def select(lang: str | None = None, framework: str | None = None, backend: str | None = None,
           model: str | None = None, include_retired: bool = False) -> list[Implementation]:
    """Implementations matching the given filters; a bad value raises UsageError naming the choices."""
    if lang is not None and lang not in LANGS:
        raise choices_error("language", lang, LANGS)
    if model is not None and model not in MODELS:
        raise choices_error("model", model, MODELS)
    pool = [i for i in IMPLEMENTATIONS if lang is None or i.lang == lang]
    if framework is not None:
        names = sorted({i.name for i in pool})
        if framework not in names:
            raise choices_error("framework", framework, names, f" for --lang {lang}" if lang else "")
        pool = [i for i in pool if i.name == framework]
    if backend is not None:
        backends = sorted({i.backend for i in pool if i.backend})
        if not backends:
            raise UsageError(f"--backend {backend!r} given, but {framework or 'this selection'} has no backends")
        if backend not in backends:
            raise choices_error("backend", backend, backends, f" for {framework}")
        pool = [i for i in pool if i.backend == backend]
    if model is not None:
        pool = [i for i in pool if i.model == model]
    if not include_retired:
        pool = [i for i in pool if not i.framework.retired]
    return pool
