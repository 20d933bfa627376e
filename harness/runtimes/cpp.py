"""C++ implementations (`cpp_models/<framework>/<model>.cpp`): LibTorch models driven from the worker.

All models of a framework (and its shared trainer.cpp) compile into ONE Python extension, with
`torch.utils.cpp_extension.load` (ninja and g++) against the installed torch wheel's own headers
and libraries, so C++ and Python share one libtorch. The build is cached in

    ~/.cache/dl-rosetta/cpp/<framework>-torch<version>-<digest>/    ($DL_ROSETTA_CPP_CACHE overrides)

keyed by the SHA-256 of the sources, the torch version, the Python ABI, the compiler and the flags:
a changed source (or torch) compiles anew, every later worker imports the built module. It is not
under the data cache ($DL_ROSETTA_DATA): compiled code is not data, the tests give every session a
fresh data cache, and a compile costs minutes on two cores. The key folder keeps the sources it
was built from (src/), the build (build/), its log, and built.json, written last: a folder without
it is an unfinished or failed build. Concurrent workers serialise on a file lock (flock: released
when a killed compiler's process dies, unlike cpp_extension's own lock file).

Compilation happens in import_framework, so the record's timing.import_s includes it; how much is
in info["compile"] (seconds, cached). On the parent side `availability` only looks for files and
programs: it neither imports torch nor compiles.

Data: the harness's numpy arrays (read-only memory maps) become tensors with torch.from_numpy,
sharing their memory; the C++ trainer only reads them (info["handoff"] says whether the memory is
shared). A copy happens only where one must: to a GPU (--device cuda, once, before the clock), and
where the harness itself makes a new array (--image-size upsampling, int32 ids widened).
"""
from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import warnings
from pathlib import Path

import numpy as np

from harness.interpreters import REPO, missing_modules
from harness.protocol import Trainer, check_weights, setup_record

MODELS_VAR = "DL_ROSETTA_CPP_MODELS"  # a folder of <framework>/ sources instead of cpp_models/ (tests)
CACHE_VAR = "DL_ROSETTA_CPP_CACHE"
FIX = "python3 -m harness setup --cpp"
CFLAGS = ("-O2",)  # cpp_extension.load adds no optimisation flag of its own
ERROR_LINES = 6  # compiler error lines quoted in a failed run's message


class CompileError(RuntimeError):
    """The C++ sources did not compile; the message quotes the compiler's errors."""


def models_root() -> Path:
    from harness import resources

    return Path(os.environ.get(MODELS_VAR) or resources.package_dir("cpp_models"))


def cache_root() -> Path:
    if os.environ.get(CACHE_VAR):
        return Path(os.environ[CACHE_VAR])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dl-rosetta" / "cpp"


def sources(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in (".cpp", ".h"))


def _compiler() -> str:
    return os.environ.get("CXX", "c++")  # what cpp_extension runs


def _ninja() -> str | None:
    return shutil.which("ninja") or shutil.which("ninja", path=str(Path(sys.executable).parent))  # Debian or PyPI


# --------------------------------------------------------------------------- parent side
def availability(impl) -> str | None:
    path = models_root() / impl.name / f"{impl.model}.cpp"
    if not path.exists():
        return f"not implemented: {path} does not exist"
    missing = missing_modules(impl.framework.env, impl.framework.modules)
    if missing is None or missing:
        return f"torch not installed in the {impl.framework.env} environment: {FIX}"
    if shutil.which(_compiler()) is None:
        return f"no C++ compiler ({_compiler()}) found: {FIX} (installs g++ and ninja-build from Debian)"
    if _ninja() is None:
        return f"ninja not found: {FIX} (installs ninja-build from Debian)"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        return f"Python.h not found in {sysconfig.get_paths()['include']}: {FIX} (installs python3-dev)"
    return None


# --------------------------------------------------------------------------- compiling
def compiler_version() -> str:
    out = subprocess.run([_compiler(), "--version"], capture_output=True, text=True)
    return out.stdout.splitlines()[0].strip() if out.returncode == 0 and out.stdout else _compiler()


def cache_key(folder: Path, torch_version: str, compiler: str) -> str:
    """<framework>-torch<version>-<16 hex digits of the SHA-256 over everything the build depends on>."""
    h = hashlib.sha256()
    for part in (torch_version, sysconfig.get_config_var("EXT_SUFFIX") or sys.version, compiler, *CFLAGS):
        h.update(part.encode() + b"\0")
    for path in sources(folder):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return f"{folder.name}-torch{torch_version}-{h.hexdigest()[:16]}"


def _import(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _compiler_errors(log: str, src: Path, shown: str) -> str:
    lines = [line.replace(f"{src}/", f"{shown}/") for line in log.splitlines() if re.search(r"\berror\b", line)
             and "ninja: build stopped" not in line and not line.startswith("FAILED")]
    return "; ".join(lines[:ERROR_LINES]) or log.strip()[-800:]


def load_extension(folder: Path, root: Path | None = None):
    """Compile (or reuse) one folder's sources as a Python extension: (module, facts of the build)."""
    import torch
    from torch.utils import cpp_extension

    compiler = compiler_version()
    key = cache_key(folder, torch.__version__, compiler)
    where = (root or cache_root()) / key
    name = f"dl_rosetta_{folder.name}"
    built, library = where / "built.json", where / "build" / f"{name}.so"
    facts = {"key": key, "dir": str(where), "compiler": compiler, "flags": list(CFLAGS), "cached": True,
             "seconds": 0.0}
    t = time.monotonic()
    if not built.exists():
        where.mkdir(parents=True, exist_ok=True)
        with open(where / "build.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another worker compiling this key: wait for it
            if not built.exists():
                facts.update(cached=False, seconds=_compile(folder, where, name, cpp_extension))
            facts["waited_s"] = time.monotonic() - t - facts["seconds"]
    t = time.monotonic()
    module = _import(name, library)
    facts["load_s"] = time.monotonic() - t
    facts["built_s"] = json.loads(built.read_text())["seconds"]  # what compiling this key took
    return module, facts


def _compile(folder: Path, where: Path, name: str, cpp_extension) -> float:
    src, build = where / "src", where / "build"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir()
    for path in sources(folder):
        shutil.copy2(path, src / path.name)  # the build's own copy: the sources the key was made from
    build.mkdir(exist_ok=True)
    (build / "lock").unlink(missing_ok=True)  # cpp_extension's lock file, stale if a compiler was killed
    ninja = _ninja()
    if ninja and str(Path(ninja).parent) not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([str(Path(ninja).parent), os.environ.get("PATH", "")])
    shown = folder.relative_to(REPO) if folder.is_relative_to(REPO) else folder
    print(f"[cpp] compiling {shown} into {build}", file=sys.stderr, flush=True)
    t = time.monotonic()
    try:
        cpp_extension.load(name, [str(p) for p in sorted(src.glob("*.cpp"))], extra_cflags=list(CFLAGS),
                           build_directory=str(build), verbose=False)
    except RuntimeError as e:
        log = str(e)
        (where / "build.log").write_text(log)
        print(log, file=sys.stderr, flush=True)  # the whole compiler output goes to the run's log
        raise CompileError(f"the C++ sources of {shown} do not compile: {_compiler_errors(log, src, str(shown))} "
                           f"(whole log: {where / 'build.log'})") from None
    seconds = time.monotonic() - t
    tmp = where / "built.json.tmp"
    tmp.write_text(json.dumps({"seconds": seconds, "sources": [p.name for p in sources(src)]}))
    os.replace(tmp, where / "built.json")  # last: its presence means a finished build
    return seconds


# --------------------------------------------------------------------------- worker side
_LOADED: dict = {}  # framework -> (extension module, compile facts)


def import_framework(impl, options) -> dict:
    if options.precision != "fp32":
        raise ValueError(f"--precision {options.precision}: the C++ LibTorch trainer trains in float32 only; "
                         "choices: fp32")
    if options.compile:
        raise ValueError("--compile: torch.compile is Python's; LibTorch has no equivalent")
    import torch

    _LOADED[impl.name] = load_extension(models_root() / impl.name)
    _LOADED[impl.name][1]["phase"] = "import"  # the worker records the compile apart from the import
    return {"libtorch": torch.__version__, "torch": torch.__version__, "numpy": np.__version__,
            "compiler": _LOADED[impl.name][1]["compiler"]}


def build(impl, spec, options):
    module, facts = _LOADED[impl.name]
    return CppTrainer(module.build(impl.model, spec.as_data(), options.to_dict()), spec, options, facts)


def _tensor(a):
    """The array as a tensor on the same memory. A read-only memory map works too (torch warns that
    writing to it is undefined; the C++ trainer only reads its inputs)."""
    import torch

    a = np.asarray(a)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(a)


class CppTrainer(Trainer):
    """harness.protocol's Trainer around the C++ Trainer of cpp_models/<framework>/trainer.h."""

    def __init__(self, native, spec, options, compile_facts: dict):
        import torch

        self._t, self.spec, self.options = native, spec, options
        self.info = {
            "layout": "NCHW",
            "fast_path": {"loop": "C++ (torch::nn modules, torch::optim), the GIL released",
                          "data_on_device": True, "intra_op_threads": torch.get_num_threads()},
            "deviations": [],
            "threads": torch.get_num_threads(),  # the training's and the matmul peak's (one libtorch)
            "setup": setup_record(options),
            "compile": compile_facts,
        }

    def fit_data(self, x, y) -> None:
        self._x, self._y = _tensor(x), _tensor(y)  # kept: the C++ side holds the same memory
        self._t.fit_data(self._x, self._y)
        self.info["handoff"] = {"shares_memory": self._x.data_ptr() == np.asarray(x).ctypes.data
                                and self._y.data_ptr() == np.asarray(y).ctypes.data,
                                "read_only_source": not np.asarray(x).flags.writeable}

    def train_epoch(self, batches) -> np.ndarray:
        plan = np.ascontiguousarray(getattr(batches, "index", batches), dtype=np.int64)
        return self._t.train_epoch(_tensor(plan)).numpy()  # the per-step losses, read once per epoch

    def predict(self, x) -> np.ndarray:
        return self._t.predict(_tensor(x)).numpy()

    def get_weights(self) -> dict[str, np.ndarray]:
        native = self._t.get_weights()
        return {k: native[k].numpy() for k in self.spec.weight_shapes()}

    def set_weights(self, weights: dict) -> None:
        check_weights(self.spec, weights)
        self._t.set_weights({k: _tensor(np.ascontiguousarray(weights[k], dtype=np.float32))
                             for k in self.spec.weight_shapes()})

    def param_count(self) -> int:
        return int(self._t.param_count())

    def data_digest(self, name: str) -> str:
        """SHA-256 of the training array ("x" or "y") as the C++ trainer holds it."""
        from harness.data.cache import array_digest

        return array_digest(self._t.data(name).cpu().numpy())

    def matmul_peak(self, precision: str) -> float | None:
        """torch::mm of two n x n float32 matrices in C++ (cpp_models/<framework>/trainer.cpp Trainer::matmul)
        on the run's device, waited for; the C++ trainer trains in fp32 only."""
        from harness.peak import CPU_N, GPU_N, best_rate

        if precision != "fp32":
            return None
        n = GPU_N if self.options.device == "cuda" else CPU_N
        return best_rate(lambda: self._t.matmul(n), 2.0 * n**3)

    def peak_device_memory(self) -> int | None:
        if self.options.device != "cuda":
            return None
        import torch

        return int(torch.cuda.max_memory_allocated())
