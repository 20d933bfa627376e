"""Julia implementations (`julia_models/<framework>/<model>.jl`), hosted in the worker by juliacall.

Each framework has its own Julia environment, declared the juliacall way: juliapkg reads
`julia_models/<framework>/juliapkg.json` (Flux and Knet cannot share one: Knet 1.4.10 needs NNlib
<= 0.8 and CUDA.jl <= 3, Flux 0.16 needs NNlib >= 0.9.22 and CUDA.jl 5) and resolves it into
`<venv>/julia_env/<framework>`. `python -m harness setup --julia` (or `python -m
harness.runtimes.julia install`) installs Julia and the packages once; needs network.

On the parent side, `availability` only reads files and runs `julia --version`: it never imports
juliacall, whose import would download Julia. In the worker, the import runs offline
(PYTHON_JULIAPKG_OFFLINE): a timed import never downloads anything.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np

from harness import julia_layout
from harness.interpreters import REPO, missing_modules
from harness.protocol import Trainer

MODELS_DIR = REPO / "julia_models"
JULIA_MIN = "1.10.3"  # juliacall 0.9.x's own juliapkg.json requires Julia ^1.10.3
FIX = "python -m harness setup --julia"
PACKAGES = {"flux": "Flux", "knet": "Knet"}
KNET_NOTE = ("; and Knet 1.4.10, Knet's last release (2022), requires CUDA.jl 1-3 (General registry), whose "
             "GPUCompiler/LLVM.jl stack predates Julia 1.10, the oldest Julia juliacall accepts: Knet loading there "
             "is unproven and expected to fail at precompilation")


def project(framework: str) -> Path:
    """The Julia environment juliapkg resolves for one framework."""
    base = os.environ.get("DL_ROSETTA_JULIA_ENVS")
    return (Path(base) if base else Path(sys.prefix) / "julia_env") / framework


def deps_file(framework: str) -> Path:
    return MODELS_DIR / framework / "juliapkg.json"


def configure(framework: str) -> None:
    """Point juliapkg at this framework's environment and dependency file. Call before importing juliacall."""
    os.environ["PYTHON_JULIAPKG_PROJECT"] = str(project(framework))
    folder = str(MODELS_DIR / framework)  # juliapkg reads juliapkg.json in every folder on sys.path
    if folder not in sys.path:
        sys.path.insert(0, folder)
    os.environ.setdefault("PYTHON_JULIACALL_THREADS", "auto")  # NNlib's CPU convolutions use Julia threads
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
    pkgs = f"julia_models/{framework}/juliapkg.json"
    note = KNET_NOTE if framework == "knet" else ""
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
    path = REPO / impl.entry
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

    jl.include(str(MODELS_DIR / "DLRosetta.jl"))
    pkg = PACKAGES[impl.name]
    jl.seval(f"using {pkg}")
    if options.device == "cuda":
        if impl.name == "flux":
            jl.seval("using CUDA, cuDNN")  # Flux's GPU path (MLDataDevices) needs both loaded
        jl.seval(f"DLRosetta.DEVICE_SYNC[] = {'CUDA' if impl.name == 'flux' else 'Knet.CUDA'}.synchronize")
    version = lambda m: str(jl.seval(f"string(pkgversion({m}))"))  # noqa: E731
    deps = {"flux": ("Flux.NNlib", "Flux.Zygote", "Flux.Optimisers"), "knet": ("Knet.AutoGrad", "Knet.CUDA")}
    versions = {impl.name: version(pkg), "julia": str(jl.seval("string(VERSION)")),
                "juliacall": metadata.version("juliacall"), "PythonCall": version("PythonCall"),
                "numpy": np.__version__, "julia_threads": str(jl.seval("Threads.nthreads()"))}
    for m in deps[impl.name] + (("CUDA", "cuDNN") if options.device == "cuda" and impl.name == "flux" else ()):
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
    """harness.protocol's Trainer around a Julia trainer; julia_layout does every conversion."""

    def __init__(self, jl, impl, spec, handle):
        self._dl, self._t = jl.DLRosetta, handle
        self.framework, self.spec = impl.name, spec
        info = _python(self._dl.info(handle))
        self.info = {"layout": "NCHW",  # handed over as is: Julia reads the same bytes as WHCN
                     "julia_layout": "WHCN, the column-major view of the NCHW bytes (harness/julia_layout.py)",
                     "fast_path": info["fast_path"], "deviations": info["deviations"]}
        keys = {str(k) for k in self._dl.weight_keys(handle)}
        want = set(julia_layout.native_shapes(impl.name, spec))
        if keys != want:
            raise RuntimeError(f"{impl.label}: the Julia model's weights {sorted(keys ^ want)[:6]} do not match "
                               "harness/julia_layout.py")
        self._raw = {}

    def fit_data(self, x, y) -> None:
        self._raw = {"x": julia_layout.raw(x), "y": julia_layout.raw(y)}  # kept alive: Julia may alias them
        self._x, self._y = julia_layout.inputs(x, self.spec), julia_layout.labels(y)
        self._dl.fit_data_b(self._t, self._x, self._y)

    def train_epoch(self, batches) -> np.ndarray:
        plan = julia_layout.epoch_plan(getattr(batches, "index", batches))
        return self._dl.train_epoch_b(self._t, plan).to_numpy()  # a copy; Julia synchronised before returning

    def predict(self, x) -> np.ndarray:
        return julia_layout.logits(self._dl.predict(self._t, julia_layout.inputs(x, self.spec)).to_numpy())

    def get_weights(self) -> dict[str, np.ndarray]:
        keys = julia_layout.native_shapes(self.framework, self.spec)
        native = {k: self._dl.get_weight(self._t, k).to_numpy() for k in keys}
        return julia_layout.from_julia(self.framework, self.spec, native)

    def set_weights(self, weights: dict) -> None:
        for key, a in julia_layout.to_julia(self.framework, self.spec, weights).items():
            self._dl.set_weight_b(self._t, key, a)

    def param_count(self) -> int:
        return int(self._dl.param_count(self._t))

    def peak_device_memory(self) -> int | None:
        return None  # CUDA.jl keeps no peak counter

    def data_digest(self, name: str) -> str:
        """SHA-256 computed by Julia (SHA stdlib) over the very bytes fit_data received."""
        return str(self._dl.digest(self._raw[name]))


def build(impl, spec, options):
    from juliacall import Main as jl

    jl.DLRosetta.load(impl.name, impl.model)  # includes the files; the module is looked up in a later call
    module = getattr(jl.DLRosetta, str(jl.DLRosetta.modulename(impl.name, impl.model)))
    opt = spec.optimizer
    handle = module.build(seed=options.seed, dropout=options.dropout, device=options.device, optimizer=opt.name,
                          lr=opt.lr, momentum=opt.momentum, beta1=opt.beta1, beta2=opt.beta2, eps=opt.eps)
    return JuliaTrainer(jl, impl, spec, handle)


# --------------------------------------------------------------------------- installation
def install(frameworks=tuple(PACKAGES)) -> int:
    """Resolve each framework's environment in a fresh process laid out as the worker is (needs network).

    juliapkg downloads Julia if none fits, then the packages, and precompiles them. Knet is
    expected to fail (see KNET_NOTE); that is reported and does not fail Flux's installation."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    failed = []
    for fw in frameworks:
        code = (f"from harness.runtimes import julia; julia.configure({fw!r}); import juliapkg; juliapkg.resolve(); "
                f"from juliacall import Main as jl; jl.seval('using {PACKAGES[fw]}')")
        print(f"[julia] installing Julia and the packages of julia_models/{fw}/juliapkg.json into {project(fw)}",
              file=sys.stderr, flush=True)
        if subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env).returncode != 0:
            failed.append(fw)
            print(f"[julia] {fw}: installation failed" + (KNET_NOTE if fw == "knet" else ""), file=sys.stderr)
    return 1 if "flux" in failed or len(failed) == len(frameworks) else 0


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or args[0] != "install" or not set(args[1:]) <= set(PACKAGES):
        raise SystemExit(f"usage: python -m harness.runtimes.julia install [{' '.join(PACKAGES)}]")
    raise SystemExit(install(tuple(args[1:]) or tuple(PACKAGES)))
