"""R implementations: `r_models/<framework>/<model>.R`, hosted inside the worker process by rpy2.

R runs embedded in the worker (rpy2) and its reticulate attaches to this very interpreter (the
one already running, never a second one), so R code drives Python Keras. The harness's numpy
arrays reach R untouched: they are set on an in-memory module (BRIDGE) that R imports with
`convert = FALSE`, so R holds the same numpy objects and nothing becomes an R double. Results
come back the same way. Every call into R is wrapped so that an R error arrives as one RError
naming the R call (and file:line) that failed.

Exit: rpy2 ends R from an atexit hook that runs R's exit finalizers, which call back into Python
(reticulate's) while the interpreter shuts down and can hang. That hook is replaced by one that
only removes R's temporary directory; the worker ends with os._exit anyway, and a stale R
temporary directory of a worker that ended that way is removed by the next R start.
"""
from __future__ import annotations

import atexit
import functools
import os
import shutil
import stat
import sys
import tempfile
import time
import types
from pathlib import Path

from harness import resources
from harness.interpreters import REPO, missing_modules
from harness.protocol import Trainer, check_weights

R_LIB = REPO / ".r-lib"  # the project's R library: reticulate >= 1.31 (harness/install_r.py)
RETICULATE_MIN = (1, 31)
BRIDGE = "dl_rosetta_r_bridge"
R_OPTIONS = ("rpy2", "--quiet", "--no-save", "--no-restore", "--no-init-file")
TMP_PREFIX = "dl-rosetta-r-"
MESSAGE_CHARS = 800  # an R error's message is cut here (Keras repeats whole tensors in some)


class RError(RuntimeError):
    """An error raised in R (or in Python code that R called through reticulate)."""


# --------------------------------------------------------------------------- parent side
@functools.lru_cache(maxsize=None)
def _reticulate_version() -> str | None:
    from harness import install_r

    return install_r.reticulate_version()


def availability(impl) -> str | None:
    fix = impl.framework.install
    path = resources.source(impl.entry)
    if not path.exists():
        return f"not implemented: {impl.entry} does not exist"
    if shutil.which("R") is None:
        return f"R is not installed: {fix}"
    missing = missing_modules("main", ("rpy2",))
    if missing is None or missing:
        return f"rpy2 not installed in the main environment: {fix}"
    missing = missing_modules("main", ("keras", impl.backend))
    if missing:
        extra = {"torch": "pytorch"}.get(impl.backend, impl.backend)
        return f"{', '.join(missing)} not installed in the main environment: pip install -e '.[keras,{extra}]'"
    try:
        found = _reticulate_version()
    except RuntimeError as e:  # install_r.RscriptFails: a broken R is not a missing package
        return f"R is installed but {e}; reinstall R (r-base-core), then {fix}"
    if found is None:
        return f"the R package reticulate is not installed: {fix}"
    if tuple(int(p) for p in found.split(".")[:2]) < RETICULATE_MIN:
        return f"reticulate {found} is older than 1.31 and crashes inside rpy2: {fix}"
    return None


# --------------------------------------------------------------------------- inside the worker
GLUE = resources.source("r_models/dl_rosetta.R")  # the R side of this bridge

_SESSION: dict = {}  # facts about the R session started in this process


def _bridge() -> types.ModuleType:
    if BRIDGE not in sys.modules:
        sys.modules[BRIDGE] = types.ModuleType(BRIDGE, "Values handed between the harness and R.")
    return sys.modules[BRIDGE]


def _r_tmpdir() -> str:
    """A fresh, private parent for R's session temporary directory (tempfile.mkdtemp: a name no
    one can guess or plant beforehand, mode 0700). Stale ones of ended workers are removed: only
    folders (never links) of this user whose pid has ended."""
    base = Path(tempfile.gettempdir())
    for old in base.glob(TMP_PREFIX + "*"):
        pid = old.name[len(TMP_PREFIX):].split("-")[0]  # dl-rosetta-r-<pid>-<random>
        try:
            st = old.lstat()
        except OSError:
            continue
        if not pid.isdigit() or not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(old, ignore_errors=True)
        except PermissionError:
            pass
    return tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-")


def _start_r() -> None:
    """Start the embedded R (once per process) with .r-lib first and reticulate on this Python."""
    if _SESSION:
        return
    t = time.monotonic()
    os.environ["R_LIBS_USER"] = str(R_LIB)
    os.environ["RETICULATE_PYTHON"] = sys.executable  # reticulate prefers the running process anyway
    tmp, saved = _r_tmpdir(), os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = tmp  # read once, by R's start-up
    try:
        import rpy2.rinterface_lib.embedded as embedded

        embedded.set_initoptions(R_OPTIONS)
        import rpy2.rinterface as ri
        import rpy2.robjects as ro
    finally:
        if saved is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved
    atexit.unregister(ri.endr)
    atexit.register(_teardown, tmp)
    # rpy2 warns on every reticulate load since some versions crashed; >= 1.31 is checked below.
    ro.r('setHook(packageEvent("reticulate", "onLoad"), NULL, "replace")')
    started = time.monotonic()
    _bridge()
    ro.r["source"](str(GLUE), **{"keep.source": False})
    ro.r["dl_rosetta_start"](str(R_LIB), BRIDGE)
    facts = _call(ro.r(".dl_rosetta$facts"))
    attached = time.monotonic()
    if os.path.realpath(facts["python"]) != os.path.realpath(sys.executable):
        raise RError(f"reticulate attached to {facts['python']}, not to this Python ({sys.executable})")
    if tuple(int(p) for p in facts["reticulate"].split(".")[:2]) < RETICULATE_MIN:
        raise RError(f"R loaded reticulate {facts['reticulate']} (< 1.31, unsafe inside rpy2) from "
                     f"{facts['libpaths'][0]}: python3 -m harness setup --r")
    _SESSION.update(facts, python_pid=os.getpid(), r_start_s=started - t, reticulate_s=attached - started)


def _teardown(tmp: str) -> None:
    """At interpreter exit, instead of rpy2's endr: stop reticulate's event-polling thread while
    Python is alive (it queues calls into R that would otherwise run during finalization), and
    remove R's temporary directory. R's exit finalizers are not run."""
    try:
        import rpy2.robjects as ro

        ro.r("if (!isTRUE(reticulate:::.globals$finalized)) reticulate:::py_finalize()")
    except Exception:  # noqa: BLE001 - nothing may stop the exit
        pass
    shutil.rmtree(tmp, ignore_errors=True)


def _call(fun, trainer=None, keep: bool = False, **args):
    """Call an R function (or trainer[[name]]) on Python values, which R receives unconverted."""
    import rpy2.robjects as ro

    bridge = _bridge()
    for name, value in args.items():
        setattr(bridge, f"arg_{name}", value)
    try:
        out = ro.r(".dl_rosetta$invoke")(trainer if trainer is not None else ro.NULL, fun,
                                         ro.StrVector([f"arg_{n}" for n in args]), keep)
        error = list(out.rx2("error"))
        if error:
            call, where, message = error
            message = message.replace("Run `reticulate::py_last_error()` for details.", "").strip()
            if len(message) > MESSAGE_CHARS:
                message = message[:MESSAGE_CHARS] + " [...]"
            at = f" at {where}" if where else ""
            raise RError(f"R error in {call}{at}: {message}" if call else f"R error{at}: {message}")
        if keep:
            return out.rx2("value")
        return getattr(bridge, "result", None)
    finally:
        for name in [*(f"arg_{n}" for n in args), "result"]:
            bridge.__dict__.pop(name, None)


def import_framework(impl, options) -> dict:
    os.environ[impl.framework.backend_variable] = impl.backend  # fixed per process: one worker per backend
    _start_r()
    import importlib

    import numpy
    import rpy2
    import rpy2.robjects as ro

    t = time.monotonic()
    _call(ro.r("function() reticulate::import('keras')"))  # Keras is imported by R, as an R user would
    _SESSION["keras_import_s"] = time.monotonic() - t
    keras = sys.modules["keras"]
    return {"rpy2": rpy2.__version__, "R": _SESSION["R"], "reticulate": _SESSION["reticulate"],
            "keras": keras.__version__, impl.backend: importlib.import_module(impl.backend).__version__,
            "numpy": numpy.__version__}


def build(impl, spec, options):
    entry = resources.source(impl.entry)
    shared = entry.parent / "train.R"  # a framework's shared training loop, sourced first
    return load([shared, entry] if shared.exists() else [entry], spec, options)


def load(files, spec, options) -> RTrainer:
    """Source R files into one fresh environment and wrap what their build_model(spec, options) returns."""
    import rpy2.robjects as ro

    trainer = _call(ro.r(".dl_rosetta$build"), keep=True, files=[str(f) for f in files],
                    spec=spec.as_data(), options=options.to_dict())
    return RTrainer(trainer, spec)


class RTrainer(Trainer):
    """The harness protocol over an R list of functions (fit_data, train_epoch, ...)."""

    def __init__(self, r_trainer, spec):
        self._r = r_trainer
        self.spec = spec
        self._r_facts = dict(_SESSION)  # where R runs; fit_data adds what R holds

    @property
    def info(self) -> dict:
        """The R model's own info (layout, fast path, deviations), and the facts of the R session."""
        return {**_call("info", self._r), "r": self._r_facts}

    def _method(self, method, **args):
        return _call(method, self._r, **args)

    def param_count(self) -> int:
        return int(self._method("param_count"))

    def fit_data(self, x, y) -> None:
        import rpy2.robjects as ro

        held = ro.r(".dl_rosetta$held")
        bridge = _bridge()
        bridge.probe = x
        start = time.monotonic()
        before = _call(held, name="probe")
        t = time.monotonic()
        self._method("fit_data", x=x, y=y)
        seconds = time.monotonic() - t
        after = _call(held, name="probe")
        del bridge.probe
        # What R's trainer holds now (its data$x, handed back unconverted): the very array given?
        kept = self._method("held_array", name="x")
        # probe_s: the two probes' full garbage collections, the harness's measurement, not the hand-off
        self._r_facts["handoff"] = {"same_object": kept is x, "seconds": seconds,
                                     "probe_s": time.monotonic() - start - seconds,
                                     "r_heap_growth_bytes": int(after["r_heap_bytes"] - before["r_heap_bytes"]),
                                     "array_bytes": int(x.nbytes) + int(y.nbytes)}

    def train_epoch(self, batches):
        import numpy as np

        return np.atleast_1d(np.asarray(self._method("train_epoch", batches=batches), dtype=np.float64))

    def predict(self, x):
        import numpy as np

        return np.asarray(self._method("predict", x=x), dtype=np.float32)

    def get_weights(self) -> dict:
        import numpy as np

        weights = self._method("get_weights")
        return {k: np.asarray(weights[k]) for k in self.spec.weight_shapes()}

    def set_weights(self, weights: dict) -> None:
        import numpy as np

        check_weights(self.spec, weights)
        self._method("set_weights", weights={k: np.asarray(weights[k]) for k in self.spec.weight_shapes()})

    def data_digest(self, name: str) -> str:
        return str(self._method("data_digest", name=name))

    def matmul_peak(self, precision: str) -> float | None:
        """The R model's own matmul benchmark (r_models/<framework>/train.R: matmul_peak)."""
        value = self._method("matmul_peak", precision=precision)
        return None if value is None else float(value)

    def export(self, fmt: str, path: str, example) -> dict:
        """Keras' own Model.export, called from R through reticulate (r_models/keras/train.R)."""
        import numpy as np

        from harness.onnx_files import ONNX_OPSET
        from harness.protocol import ExportUnsupported

        backend = os.environ.get("KERAS_BACKEND")
        if fmt not in ("onnx", "tflite") or (fmt == "tflite" and backend != "tensorflow"):
            raise ExportUnsupported(f"R Keras on {backend} exports onnx{' and tflite' if backend == 'tensorflow' else ''}, "
                                    f"not {fmt}")
        self._method("export", format=fmt, path=str(path), example=np.asarray(example), opset=ONNX_OPSET)
        keras = sys.modules["keras"]
        return {"exporter": f"keras {keras.__version__} Model.export(format={'onnx' if fmt == 'onnx' else 'litert'!r}) "
                            f"on {backend}, called from R", "layout": "NHWC" if np.ndim(example) == 4 else "tokens",
                "dynamic_batch": True}

