"""The one registry of implementations: every (language, framework, backend, model) the suite knows.

One `Framework` row says everything the harness needs to know about a framework: its name in
reports, the environment its worker runs in, the modules it needs and how to install them, its
backends (and the variable that picks one), its data-parallel engine and multi-node launch.
Tests are parametrized over `IMPLEMENTATIONS`; adding a framework is one folder of model files,
one row in FRAMEWORKS below and one extra in pyproject.toml.
"""
from __future__ import annotations

from dataclasses import dataclass

from harness.errors import UsageError, choices_error
from harness.specs import MODELS


@dataclass(frozen=True)
class Language:
    name: str
    display: str  # in reports: "R Keras 3.15.1 (TF)"
    folder: str  # where its model files live
    suffix: str  # a model file's suffix; Python models are modules of the `folder` package
    colour: str = "grey"  # in the report's charts


LANGUAGES = {lang.name: lang for lang in (
    Language("python", "Python", "python_models", ".py", "#4C72B0"),
    Language("r", "R", "r_models", ".R", "#DD8452"),
    Language("julia", "Julia", "julia_models", ".jl", "#8172B3"),
    Language("cpp", "C++", "cpp_models", ".cpp", "#55A868"),
)}
LANGS = tuple(LANGUAGES)
BACKEND_NAMES = {"tensorflow": "TF", "jax": "JAX", "torch": "PyTorch"}  # Keras 3 backends, in reports


@dataclass(frozen=True)
class MultiDevice:
    """A framework's own data-parallel engine on one machine (harness/parallel.py launches it)."""

    engine: str  # what the record names, e.g. "torchrun + DistributedDataParallel"
    short: str  # the `list` column, e.g. "DDP"
    torchrun: bool = False  # one process per replica, started by torchrun (else one process places them)
    xla_host_devices: bool = False  # N CPU replicas are N XLA host devices (XLA_FLAGS, set before start)


@dataclass(frozen=True)
class MultiNode:
    """A framework's own launch over several machines."""

    launch: str  # e.g. "jax.distributed"
    needs: tuple[str, ...]  # the flags every node's command must give (harness.parallel.FLAGS)
    join: str | None = None  # "module:function(options) -> leave" that joins the nodes in the worker
    tf_config: bool = False  # the harness writes TF_CONFIG from --workers and --node-rank
    one_cpu_replica: bool = False  # on CPU, one replica per node only


@dataclass(frozen=True)
class JuliaPackage:
    """What the Julia runtime needs of a Julia framework (harness/runtimes/julia.py)."""

    name: str  # the package the models load (`using Flux`)
    versions: tuple[str, ...]  # Julia modules whose versions every record carries (pkgversion)
    weights: str  # the Python module of its weight mapping, beside its models
    cuda_load: tuple[str, ...] = ()  # what --device cuda loads first
    cuda_sync: str = "CUDA.synchronize"  # the device synchronisation DLRosetta.synchronize calls
    note: str = ""  # appended to every "cannot run here" reason


@dataclass(frozen=True)
class Export:
    """One export path a framework offers: its own exporter writing one file format.

    The code lives beside the framework's models (`Trainer.export`); this row is what `list` and
    the parent check read without importing anything."""

    format: str  # "onnx" | "tflite": what the deployment runtimes (harness.deploy) read
    exporter: str  # the framework's own exporter, as a user would name it
    needs: tuple[str, ...] = ()  # modules the exporter imports in the framework's environment
    backends: tuple[str | None, ...] | None = None  # the backends it works on (None: every one)
    note: str = ""  # what a reader of the results must know (shown by `list --exports`)


@dataclass(frozen=True)
class Framework:
    lang: str
    name: str
    display: str  # in reports: "PyTorch"
    env: str  # which environment's interpreter runs the worker: "main" | "legacy"
    modules: tuple[str, ...]  # importable names the implementation needs (checked without importing)
    install: str  # the fix shown when a module is missing
    extra: str | None = None  # the pyproject.toml extra that installs it into .venv (`setup --frameworks`)
    debian: tuple[str, ...] = ()  # Debian packages it needs beside its Python packages (`setup` installs them)
    executables: tuple[str, ...] = ()  # programs it runs (checked on PATH without importing anything)
    backends: tuple[str | None, ...] = (None,)
    backend_variable: str | None = None  # environment variable that picks the backend, set per worker
    multi_device: tuple[tuple[str | None, MultiDevice], ...] = ()  # (backend, engine) pairs
    multi_node: tuple[tuple[str | None, MultiNode], ...] = ()  # (backend, launch) pairs
    no_multi_device: str = ""  # why there is no data-parallel path, with the choices (shown for --gpus N)
    package: JuliaPackage | None = None  # a Julia framework's package
    precisions: tuple[str, ...] = ("fp32", "bf16", "fp16")  # the --precision values its trainers take
    compiles: bool = True  # whether --compile means something (else refused)
    retired: str = ""  # why it can never run on the Pythons these machines have
    binds: str | None = None  # the Python framework whose library this one drives (libtorch: pytorch); default: its own name
    # --variant KEY=VALUE: other ways a user of this binding writes the same training (harness/bindings.py);
    # (key, (default, other values...)) pairs; the trainer reads RunOptions.extra["variant"]
    variants: tuple[tuple[str, tuple[str, ...]], ...] = ()
    exports: tuple[Export, ...] = ()  # its own exporters (the inference task exports with these)
    no_export: str = ""  # why it has none (shown by `list` and for --task infer --runtime R)


DDP = MultiDevice("torchrun + DistributedDataParallel", "DDP", torchrun=True)
MIRRORED = MultiDevice("tf.distribute.MirroredStrategy", "MirroredStrategy")
JAX_MESH = MultiDevice("jax.sharding device mesh", "mesh", xla_host_devices=True)
KERAS_DATA_PARALLEL = MultiDevice("keras.distribution.DataParallel", "DataParallel", xla_host_devices=True)
JAX_NODES = ("rdzv_endpoint", "node_rank")
# Keras 3's own model.export(format="onnx") on every backend: tf2onnx inside on TensorFlow,
# jax2onnx on JAX, torch.onnx on torch; format="litert" (the TFLite converter) on TensorFlow.
KERAS_EXPORTS = (
    Export("onnx", "keras Model.export(format='onnx') (tf2onnx)", ("tf2onnx",), backends=("tensorflow",)),
    Export("onnx", "keras Model.export(format='onnx') (jax2onnx)", ("jax2onnx",), backends=("jax",),
           note="jax2onnx 0.17 writes Keras' max pooling (lax.reduce_window_max) as a 4-D ONNX MaxPool that "
                "no runtime here takes (1-3 spatial dimensions): cnn and resnet50 fail on every ONNX runtime"),
    Export("onnx", "keras Model.export(format='onnx') (torch.onnx, TorchScript for a dynamic batch)",
           ("onnx",), backends=("torch",)),
    Export("tflite", "keras Model.export(format='litert') (TFLite converter)", backends=("tensorflow",)),
)

FRAMEWORKS: tuple[Framework, ...] = (
    Framework("python", "pytorch", "PyTorch", "main", ("torch",), "pip install -e '.[pytorch]'", extra="pytorch",
              exports=(Export("onnx", "torch.onnx.export (dynamo)", ("onnx", "onnxscript")),),
              multi_device=((None, DDP),),
              multi_node=((None, MultiNode("torchrun c10d rendezvous", ("rdzv_endpoint",))),)),
    Framework("python", "tensorflow", "TensorFlow", "main", ("tensorflow",), "pip install -e '.[tensorflow]'",
              extra="tensorflow",
              exports=(Export("onnx", "tf2onnx.convert.from_function (the tf.function)", ("tf2onnx",)),
                       Export("tflite", "tf.lite.TFLiteConverter (the tf.function)")),
              multi_device=((None, MIRRORED),),
              multi_node=((None, MultiNode("MultiWorkerMirroredStrategy (TF_CONFIG)", ("workers", "node_rank"),
                                           "python_models.tensorflow.distributed:join_nodes", tf_config=True,
                                           one_cpu_replica=True)),)),
    Framework("python", "keras", "Keras", "main", ("keras",), "pip install -e '.[keras]'", extra="keras",
              backends=("tensorflow", "jax", "torch"), backend_variable="KERAS_BACKEND",
              exports=KERAS_EXPORTS,
              multi_device=(("tensorflow", MIRRORED), ("jax", KERAS_DATA_PARALLEL)),
              multi_node=(("jax", MultiNode("keras.distribution.initialize (jax.distributed)", JAX_NODES,
                                            "python_models.keras.distributed:join_nodes")),),
              no_multi_device="Keras 3 has no data-parallel path on the {backend} backend; choices: "
                              "--backend tensorflow (MirroredStrategy), --backend jax (DataParallel)"),
    Framework("python", "jax", "JAX (Flax)", "main", ("jax", "flax", "optax"), "pip install -e '.[jax]'", extra="jax",
              exports=(Export("onnx", "jax2onnx.to_onnx (the jitted eval function)", ("jax2onnx",)),),
              multi_device=((None, JAX_MESH),),
              multi_node=((None, MultiNode("jax.distributed", JAX_NODES, "python_models.jax.parallel:join_nodes")),)),
    Framework("python", "mxnet", "MXNet (Gluon)", "legacy", ("mxnet",), "python3 -m harness setup --legacy",
              exports=(Export("onnx", "mx.onnx.export_model (the hybridized block)", ("onnx",),
                              note="opset 13: MXNet's translations stop there"),),
              multi_device=((None, MultiDevice("Gluon contexts + kvstore 'device'", "Gluon kvstore")),)),
    Framework("python", "chainer", "Chainer", "legacy", ("chainer",), "python3 -m harness setup --legacy",
              exports=(Export("onnx", "onnx_chainer.export (onnx-chainer 1.6, traced)", ("onnx", "onnx_chainer"),
                              note="traced at one batch size: a static-shape file per batch size"),)),
    Framework("python", "pytensor", "PyTensor", "legacy", ("pytensor",), "python3 -m harness setup --legacy",
              no_export="PyTensor has no exporter to ONNX or TFLite (its graphs compile to C, Numba or JAX "
                        "in-process only)"),
    Framework("python", "tinygrad", "tinygrad", "main", ("tinygrad",), "pip install -e '.[tinygrad]'",
              extra="tinygrad", debian=("clang",), executables=("clang",), precisions=("fp32",),
              no_export="tinygrad has no exporter to ONNX or TFLite (it reads ONNX files, tinygrad.frontend.onnx, "
                        "but does not write them)"),
    Framework("python", "cntk", "CNTK", "main", ("cntk",), "",
              retired="CNTK's last release (2.7, 2019) ships wheels for Python <= 3.6 only"),
    Framework("python", "caffe2", "Caffe2", "main", ("caffe2",), "",
              retired="Caffe2 was folded into PyTorch and removed in PyTorch 2.0; no build exists for current Python"),
    Framework("r", "keras", "Keras", "main", ("rpy2",), "python3 -m harness setup --r",
              backends=("tensorflow", "jax", "torch"), backend_variable="KERAS_BACKEND",
              variants=(("data", ("numpy", "r-arrays")), ("loop", ("fit", "train_on_batch"))),
              no_multi_device="{label} trains in its own R loop (r_models/keras/train.R), which has no "
                              "multi-device path; choices: --lang python --framework keras --backend tensorflow|jax",
              exports=KERAS_EXPORTS),
    Framework("julia", "flux", "Flux", "main", ("juliacall",), "python3 -m harness setup --julia",
              package=JuliaPackage("Flux", ("Flux.NNlib", "Flux.Zygote", "Flux.Optimisers", "Flux.MLDataDevices",
                                            "Flux.MLUtils"), "julia_models.flux.weights", cuda_load=("CUDA", "cuDNN")),
              exports=(Export("onnx", "ONNXNaiveNASflux.save (the Flux chain)", ("juliacall",),
                              note="written in julia_models/DLRosetta.jl; cannot run on machines without Julia"),)),
    Framework("julia", "knet", "Knet", "main", ("juliacall",), "python3 -m harness setup --julia",
              package=JuliaPackage("Knet", ("Knet.AutoGrad", "Knet.CUDA"), "julia_models.knet.weights",
                                   cuda_sync="Knet.CUDA.synchronize", note=(
                                       "; and Knet 1.4.10, Knet's last release (2022), requires CUDA.jl 1-3 (General "
                                       "registry), whose GPUCompiler/LLVM.jl stack predates Julia 1.10, the oldest Julia "
                                       "juliacall accepts: Knet loading there is unproven and expected to fail at "
                                       "precompilation")),
              no_export="Knet has no exporter to ONNX (ONNX.jl and ONNXNaiveNASflux read and write Flux models "
                        "only)"),
    # cpp_models/ compile with torch.utils.cpp_extension: a C++ compiler and ninja (Python's headers
    # too, where the interpreter lacks them: `setup --cpp` adds python3-dev then)
    Framework("cpp", "libtorch", "LibTorch", "main", ("torch",), "python3 -m harness setup --cpp",
              debian=("g++", "ninja-build"), precisions=("fp32",), compiles=False, binds="pytorch",
              no_export="LibTorch (C++) has no ONNX exporter: torch.onnx is Python-only; its weights are the "
                        "canonical file, which the PyTorch row exports"),
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
        """Where the code lives: a module for Python, a file for every other language."""
        lang = LANGUAGES[self.lang]
        if lang.suffix == ".py":
            return f"{lang.folder}.{self.name}.{self.model}"
        return f"{lang.folder}/{self.name}/{self.model}{lang.suffix}"

    @property
    def multi_device(self) -> MultiDevice | None:
        return dict(self.framework.multi_device).get(self.backend)

    @property
    def multi_node(self) -> MultiNode | None:
        return dict(self.framework.multi_node).get(self.backend)

    @property
    def exports(self) -> tuple[Export, ...]:
        """The export paths of this implementation's framework on its backend."""
        return tuple(e for e in self.framework.exports if e.backends is None or self.backend in e.backends)

    def no_export(self) -> str:
        """Why this implementation has no export path (empty when it has one)."""
        if self.exports:
            return ""
        return self.framework.no_export or f"no exporter registered for {self.framework.display}"

    @property
    def short(self) -> str:
        """framework[backend], e.g. 'keras[jax]'."""
        return f"{self.name}[{self.backend}]" if self.backend else self.name


IMPLEMENTATIONS: tuple[Implementation, ...] = tuple(
    Implementation(fw, backend, model) for fw in FRAMEWORKS for backend in fw.backends for model in MODELS
)


def framework(lang: str, name: str) -> Framework | None:
    return next((f for f in FRAMEWORKS if (f.lang, f.name) == (lang, name)), None)


def display_name(lang: str, name: str, backend: str | None = None) -> str:
    """e.g. 'PyTorch', 'R Keras', 'Keras (JAX)': the name reports give a framework."""
    fw = framework(lang, name)
    text = (fw.display if fw else name)
    if lang != "python":
        text = f"{LANGUAGES[lang].display if lang in LANGUAGES else lang} {text}"
    return text


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
