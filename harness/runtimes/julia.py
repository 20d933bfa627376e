"""Julia implementations (`julia_models/<framework>/<model>.jl`), hosted in the worker by juliacall.

Each framework has its own Julia environment, declared the juliacall way: juliapkg reads
`julia_models/<framework>/env/juliapkg.json` (Flux and Knet cannot share one: Knet 1.4.10 needs
NNlib <= 0.8 and CUDA.jl <= 3, Flux 0.16 needs NNlib >= 0.9.22 and CUDA.jl 5) and resolves it into
`<venv>/julia_env/<framework>`. The files sit one folder below the framework's, because juliapkg
also reads `<package>/<folder>/juliapkg.json` of every editable package (julia_models is one):
at julia_models/<framework>/ both would be merged into one unsolvable environment.
`python -m harness setup --julia` (or `python -m harness.runtimes.julia install`) installs Julia
and the packages once; needs network.

The spec reaches Julia as plain data (ModelSpec.as_data) through one generic call,
`DLRosetta.build(module, spec; seed, dropout, device)`; every array goes through
julia_models/handoff.py and each framework's weight mapping (julia_models/<framework>/weights.py).

On the parent side, `availability` only reads files and runs `julia --version`: it never imports
juliacall, whose import would download Julia. In the worker, the import runs offline
(PYTHON_JULIAPKG_OFFLINE): a timed import never downloads anything.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import io
import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np

from harness import registry
from harness import resources
from harness.interpreters import REPO, missing_modules
from harness.protocol import Trainer, check_weights

# Each Julia framework's package, as its registry row gives it (harness.registry.JuliaPackage).
FRAMEWORKS = {f.name: f.package for f in registry.FRAMEWORKS if f.lang == "julia"}

MODELS_DIR = resources.package_dir("julia_models")
JULIA_MIN = "1.10.3"  # juliacall 0.9.x's own juliapkg.json requires Julia ^1.10.3
# PythonCall PR #758 (GC re-entrancy in _pyjl_dealloc, a crash with Julia threads) was merged after
# the 0.9.34 release; juliacall and PythonCall share version numbers. Below this, Julia starts with
# one thread unless PYTHON_JULIACALL_THREADS asks otherwise.
THREADS_SAFE = (0, 9, 35)
FIX = "python -m harness setup --julia"


def project(framework: str) -> Path:
    """The Julia environment juliapkg resolves for one framework."""
    base = os.environ.get("DL_ROSETTA_JULIA_ENVS")
    return (Path(base) if base else Path(sys.prefix) / "julia_env") / framework


def env_dir(framework: str) -> Path:
    """The folder of the framework's juliapkg.json (and Project.toml for plain Julia)."""
    return MODELS_DIR / framework / "env"


def deps_file(framework: str) -> Path:
    return env_dir(framework) / "juliapkg.json"


def weights(framework: str):
    """The framework's weight mapping module (native_shapes, to_julia, from_julia)."""
    return importlib.import_module(FRAMEWORKS[framework].weights)


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".")[:3] if p.isdigit())


def threads_setting(juliacall_version: str) -> tuple[str, str]:
    """(PYTHON_JULIACALL_THREADS value, why) for this juliacall, unless the user set it."""
    if "PYTHON_JULIACALL_THREADS" in os.environ:
        return os.environ["PYTHON_JULIACALL_THREADS"], "set by PYTHON_JULIACALL_THREADS"
    if _version_tuple(juliacall_version) >= THREADS_SAFE:
        return "auto", "NNlib's CPU kernels use Julia threads"
    return "1", (f"juliacall {juliacall_version} predates PythonCall's fix of a GC crash with Julia threads "
                 "(PR #758, after 0.9.34): one thread")


_THREADS = {"why": ""}  # why Julia got the threads it has (recorded with the versions)


def configure(framework: str) -> None:
    """Point juliapkg at this framework's environment and dependency file. Call before importing juliacall."""
    os.environ["PYTHON_JULIAPKG_PROJECT"] = str(project(framework))
    folder = str(env_dir(framework))  # juliapkg reads juliapkg.json in every folder on sys.path
    if folder not in sys.path:
        sys.path.insert(0, folder)
    threads, why = threads_setting(metadata.version("juliacall"))
    _THREADS["why"] = why
    os.environ["PYTHON_JULIACALL_THREADS"] = threads
    if threads != "1":
        os.environ.setdefault("PYTHON_JULIACALL_HANDLE_SIGNALS", "yes")  # juliacall's advice with threads > 1


# --------------------------------------------------------------------------- parent side
def _installed(framework: str) -> tuple[str, str] | None:
    """(julia executable, version) if juliapkg resolved this framework's current juliapkg.json."""
    try:
        meta = json.loads((project(framework) / "pyjuliapkg" / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    exe = meta.get("executable") or ""
    want = os.path.normcase(os.path.normpath(os.path.abspath(deps_file(framework))))
    seen = (meta.get("deps_files") or {}).get(want) or {}
    current = hashlib.sha256(deps_file(framework).read_bytes()).hexdigest()
    if not Path(exe).exists() or seen.get("hash_sha256") != current:
        return None
    return exe, str(meta.get("version"))


def _julia_on_machine(framework: str) -> tuple[str, str, bool] | None:
    """(executable, version, new enough) of a Julia juliapkg would use, found without installing anything."""
    with contextlib.redirect_stdout(io.StringIO()):  # juliapkg logs with print(); `list --format json` must stay JSON
        try:
            from juliapkg.compat import Compat
            from juliapkg.find_julia import find_julia, julia_version

            prefix = project(framework) / "pyjuliapkg" / "install"
            try:
                exe, ver = find_julia(compat=Compat.parse("^" + JULIA_MIN), prefix=str(prefix), install=False)
                return str(exe), str(ver), True
            except Exception:  # noqa: BLE001 - juliapkg raises a plain Exception when nothing fits
                exe = shutil.which("julia")
                ver = julia_version(exe) if exe else None
                return (exe, str(ver), False) if ver else None
        except ImportError:
            return None


@functools.lru_cache(maxsize=None)
def _reason(framework: str) -> str | None:
    if _installed(framework):
        return None
    pkgs = resources.display(deps_file(framework))
    note = FRAMEWORKS[framework].note
    found = _julia_on_machine(framework)
    if found is None:
        return (f"Julia not found: juliacall {metadata.version('juliacall')} needs Julia >= {JULIA_MIN} and the "
                f"packages of {pkgs}; run `{FIX}` once where julialang.org and pkg.julialang.org can be reached "
                f"(juliapkg installs Julia, then the packages)" + note)
    exe, version, new_enough = found
    if not new_enough:
        return f"Julia {version} at {exe} is older than {JULIA_MIN}, which juliacall needs: run `{FIX}`" + note
    return (f"Julia {version} found at {exe}, but the packages of {pkgs} are not installed in "
            f"{project(framework)}: run `{FIX}` (needs pkg.julialang.org)" + note)


def availability(impl) -> str | None:
    path = resources.source(impl.entry)
    if not path.exists():
        return f"not implemented: {impl.entry} does not exist"
    if missing_modules(impl.framework.env, ("juliacall",)):
        return f"juliacall not installed in the {impl.framework.env} environment: {FIX}"
    return _reason(impl.name)


# --------------------------------------------------------------------------- worker side
def import_framework(impl, options) -> dict:
    configure(impl.name)
    os.environ.setdefault("PYTHON_JULIAPKG_OFFLINE", "yes")
    from juliacall import Main as jl  # starts Julia (part of the timed import)

    fw = FRAMEWORKS[impl.name]
    jl.include(str(MODELS_DIR / "DLRosetta.jl"))
    jl.seval(f"using {fw.name}")
    cuda = options.device == "cuda"
    if cuda:
        if fw.cuda_load:
            jl.seval(f"using {', '.join(fw.cuda_load)}")  # Flux's GPU path (MLDataDevices) needs both loaded
        jl.seval(f"DLRosetta.DEVICE_SYNC[] = {fw.cuda_sync}")
    version = lambda m: str(jl.seval(f"string(pkgversion({m}))"))  # noqa: E731
    juliacall = metadata.version("juliacall")
    versions = {impl.name: version(fw.name), "julia": str(jl.seval("string(VERSION)")),
                "juliacall": juliacall, "PythonCall": version("PythonCall"),
                "numpy": np.__version__, "julia_threads": str(jl.seval("Threads.nthreads()")),
                "julia_threads_why": _THREADS["why"]}
    for m in fw.versions + (fw.cuda_load if cuda else ()):
        versions[m.split(".")[-1]] = version(m)
    return versions


def _python(v):
    """A juliacall value (Dict, Vector, String, number) as plain Python data."""
    if v is None or isinstance(v, (str, bool, int, float)):
        return v
    if hasattr(v, "items"):
        return {str(k): _python(x) for k, x in v.items()}
    return [_python(x) for x in v]


class JuliaTrainer(Trainer):
    """harness.protocol's Trainer around a Julia trainer; handoff.py and the framework's weights.py
    do every conversion."""

    def __init__(self, jl, impl, spec, handle):
        self._dl, self._t = jl.DLRosetta, handle
        self.framework, self.spec = impl.name, spec
        self._weights = weights(impl.name)
        info = _python(self._dl.info(handle))
        self.info = {"layout": "NCHW",  # handed over as is: Julia reads the same bytes as WHCN
                     "julia_layout": "WHCN, the column-major view of the NCHW bytes (julia_models/handoff.py)",
                     "data_digest": ("computed in Julia over the arrays the trainer trains on (device arrays "
                                     "copied back; labels and token ids with Julia's +1 taken off again)"),
                     "fast_path": info["fast_path"], "deviations": info["deviations"],
                     "threads": info.get("threads")}  # BLAS threads: the matmul peak's
        keys = {str(k) for k in self._dl.weight_keys(handle)}
        want = set(self._weights.native_shapes(spec))
        if keys != want:
            raise RuntimeError(f"{impl.label}: the Julia model's weights {sorted(keys ^ want)[:6]} do not match "
                               f"{FRAMEWORKS[impl.name].weights}")
        self._held = ()

    def fit_data(self, x, y) -> None:
        from julia_models import handoff

        inputs, labels = handoff.inputs(x, self.spec), handoff.labels(y)
        self._held = (x, inputs, labels)  # kept alive: Julia aliases this memory (the trainer's `source`)
        self._dl.fit_data_b(self._t, inputs, labels)

    def train_epoch(self, batches) -> np.ndarray:
        from julia_models import handoff

        plan = handoff.epoch_plan(getattr(batches, "index", batches))
        return self._dl.train_epoch_b(self._t, plan).to_numpy()  # a copy; Julia synchronised before returning

    def predict(self, x) -> np.ndarray:
        from julia_models import handoff

        return handoff.logits(self._dl.predict(self._t, handoff.inputs(x, self.spec)).to_numpy())

    def get_weights(self) -> dict[str, np.ndarray]:
        keys = self._weights.native_shapes(self.spec)
        native = {k: self._dl.get_weight(self._t, k).to_numpy() for k in keys}
        return self._weights.from_julia(self.spec, native)

    def set_weights(self, weights: dict) -> None:
        check_weights(self.spec, weights)
        for key, a in self._weights.to_julia(self.spec, weights).items():
            self._dl.set_weight_b(self._t, key, a)

    def param_count(self) -> int:
        return int(self._dl.param_count(self._t))

    def peak_device_memory(self) -> int | None:
        return None  # CUDA.jl keeps no peak counter

    def matmul_peak(self, precision: str) -> float | None:
        """The Julia trainer's matmul! (an n x n Float32 product on its device, synchronised), timed
        here; the Julia trainers train in Float32 only."""
        from harness.peak import CPU_N, GPU_N, best_rate

        if precision != "fp32":
            return None
        n = GPU_N if self.info["fast_path"].get("device") == "cuda" else CPU_N
        return best_rate(lambda: self._dl.matmul_b(self._t, n), 2.0 * n**3)

    def data_digest(self, name: str) -> str:
        """SHA-256 computed by Julia (SHA stdlib) over what the trainer holds, in the harness's encoding."""
        return str(self._dl.data_digest(self._t, name))

    def export(self, fmt: str, path: str, example) -> dict:
        """Flux's ONNX exporter (DLRosetta.export_onnx, julia_models/flux/trainer.jl); Knet has none."""
        from juliacall import Main as jl

        from harness.protocol import ExportUnsupported

        if fmt != "onnx" or self.framework != "flux":
            raise ExportUnsupported(f"julia/{self.framework} has no {fmt} exporter")
        shape = tuple(reversed(np.shape(example)[1:]))  # C-order (N, C, H, W) is Julia's (W, H, C, N)
        inshape = jl.Tuple([*shape, jl.Symbol("Batch")])
        exporter = str(self._dl.export_onnx(self._t, str(path), inshape))
        return {"exporter": exporter, "layout": "NCHW" if np.ndim(example) == 4 else "tokens", "dynamic_batch": True}


def build(impl, spec, options):
    from juliacall import Main as jl

    jl.DLRosetta.load(impl.name, impl.model)  # includes the files; the module is looked up in a later call
    module = getattr(jl.DLRosetta, str(jl.DLRosetta.modulename(impl.name, impl.model)))
    handle = jl.DLRosetta.build(module, spec.as_data(), seed=options.seed, dropout=options.dropout,
                                device=options.device)
    return JuliaTrainer(jl, impl, spec, handle)


# --------------------------------------------------------------------------- installation
def install(frameworks=tuple(FRAMEWORKS)) -> int:
    """Resolve each framework's environment in a fresh process laid out as the worker is (needs network).

    juliapkg downloads Julia if none fits, then the packages, and precompiles them. Knet is
    expected to fail (see its registry row's note); that is reported and does not fail Flux's installation."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    failed = []
    for fw in frameworks:
        code = (f"from harness.runtimes import julia; julia.configure({fw!r}); import juliapkg; juliapkg.resolve(); "
                f"from juliacall import Main as jl; jl.seval('using {FRAMEWORKS[fw].name}')")
        print(f"[julia] installing Julia and the packages of {resources.display(deps_file(fw))} into {project(fw)}",
              file=sys.stderr, flush=True)
        if subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env).returncode != 0:
            failed.append(fw)
            print(f"[julia] {fw}: installation failed" + FRAMEWORKS[fw].note, file=sys.stderr)
    return 1 if "flux" in failed or len(failed) == len(frameworks) else 0


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or args[0] != "install" or not set(args[1:]) <= set(FRAMEWORKS):
        raise SystemExit(f"usage: python -m harness.runtimes.julia install [{' '.join(FRAMEWORKS)}]")
    raise SystemExit(install(tuple(args[1:]) or tuple(FRAMEWORKS)))
