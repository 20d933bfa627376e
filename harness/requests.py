"""What a command asks of the library, as typed values: selections, device setups, run requests.

Commands parse their arguments and turn the Namespace into these frozen dataclasses at the edge
(harness/cli_options.py); the library (benchmark, schedule, parallel, equivalence) takes them and
never an argparse Namespace. This module also holds the checks every command makes before a
worker starts: which selected implementations can run here, whether the device setup can, and
(`RunRequest.check_data`) whether the prepared data can feed the request. A request that
contradicts itself cannot be built: the dataclasses check their values when constructed (also by
dataclasses.replace), so every bad value is one UsageError in the parent.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import UsageError
from harness.protocol import RunOptions
from harness.specs import MODELS, get_spec


CPU_REPLICAS_MIN_LIMIT = 8  # --device cpu --gpus N: up to the core count, and at least this many


@dataclass(frozen=True)
class Selection:
    """Which implementations: every field None means "all" (lang and model have defaults in `run`)."""

    lang: str | None = "python"
    framework: str | None = None
    backend: str | None = None
    model: str | None = "cnn"

    def describe(self) -> str:
        return f"--lang {self.lang} --framework {self.framework} --model {self.model}"


@dataclass(frozen=True)
class DeviceSetup:
    """Where and how a run trains: device, replicas, nodes, precision, compilation, input size."""

    device: str = "cpu"
    gpus: int = 1  # data-parallel replicas per node
    scaling: str = "weak"
    nodes: int = 1
    rdzv_endpoint: str | None = None  # HOST:PORT of node 0 (torchrun, jax.distributed)
    node_rank: int | None = None
    workers: tuple[str, ...] | None = None  # TensorFlow's worker addresses, in node-rank order
    precision: str = "fp32"
    compile: bool = False
    image_size: int = 32
    variant: tuple[tuple[str, str], ...] = ()  # --variant: (key, value) pairs an implementation declares

    def __post_init__(self):
        if self.nodes == 1:  # these name the other nodes; with one node they would be silently ignored
            for flag, value in (("--rdzv-endpoint", self.rdzv_endpoint), ("--workers", self.workers)):
                if value is not None:
                    raise UsageError(f"{flag} is for multi-node runs and --nodes is 1; choices: --nodes K (K > 1) "
                                     f"on every node, or leave {flag} out")

    @property
    def replicas(self) -> int:
        return self.gpus * self.nodes

    def launch_extra(self) -> dict:
        """The multi-node launch flags that were given, recorded verbatim in RunOptions.extra."""
        given = {"rdzv_endpoint": self.rdzv_endpoint, "node_rank": self.node_rank,
                 "workers": list(self.workers) if self.workers is not None else None}
        return {k: v for k, v in given.items() if v is not None}


@dataclass(frozen=True)
class RunRequest:
    """One `run` (or one suite entry): what to train, on what data, in which setup, how often."""

    selection: Selection = field(default_factory=Selection)
    setup: DeviceSetup = field(default_factory=DeviceSetup)
    epochs: int | None = None  # None: the spec's
    batch_size: int | None = None  # None: the spec's
    data: str | None = None  # None: the model's own data set
    samples: int | None = None
    seed: int = 0
    repeats: int = 1
    timeout: float = 3600.0
    out: str = "results"
    resume: bool = False
    data_dir: str | None = None
    refresh: bool = False  # prepare the data again whatever the cache holds (not part of the plan)

    def __post_init__(self):
        for flag, value in (("--out", self.out), ("--data-dir", self.data_dir)):
            if value is not None and Path(value).expanduser().exists() and not Path(value).expanduser().is_dir():
                raise UsageError(f"{flag} {value} is a file, not a folder; choices: a folder (it is created if missing)")
        s, model = self.setup, self.selection.model
        if s.scaling == "strong" and s.replicas > 1 and model in MODELS:  # an unknown model is refused later, by name
            batch = self.batch_size or get_spec(model).batch_size
            if batch % s.replicas:
                raise UsageError(f"--scaling strong: the global batch {batch} does not split across {s.replicas} "
                                 f"replicas; choices: a --batch-size divisible by {s.replicas}, or --scaling weak")

    def global_batch(self, model: str) -> int:
        """Examples per optimiser step over all replicas (weak scaling: the batch per replica x replicas)."""
        batch = self.resolved(model)[1]
        return batch * self.setup.replicas if self.setup.scaling == "weak" else batch

    def check_data(self, model: str, prepared) -> None:
        """Refuse what the prepared data (harness.data.Prepared) cannot feed: a global batch larger
        than the training set, or arrays (upsampled for --image-size) that would not fit in memory."""
        import math

        from harness.data.memory import check_fits

        spec = get_spec(model)
        n, batch = prepared.n_train, self.global_batch(model)
        if batch > n:
            flag = (f"--batch-size {self.resolved(model)[1]}" + (f" x {self.setup.replicas} replicas"
                                                                 if self.setup.scaling == "weak" and self.setup.replicas > 1 else ""))
            raise UsageError(f"{flag}: a global batch of {batch} exceeds the {n} training examples of {prepared.name}, "
                             f"so no full batch is left to train on; choices: a smaller --batch-size or more --samples")
        n_test = prepared.manifest["arrays"]["x_test"]["shape"][0]
        side = self.setup.image_size if model == "resnet50" else None
        shape = spec.input_shape if side is None else (spec.input_shape[0], side, side)
        per_example = math.prod(shape) * (4 if spec.input_dtype == "float32" else 8) + 8
        what = f"{n:,} training and {n_test:,} test examples" + (f" at {side} px" if side and side != 32 else "")
        check_fits((n + n_test) * per_example, f"the arrays a worker is handed ({what})",
                   "choose fewer --samples" + (" or a smaller --image-size" if side and side != 32 else ""))

    def options(self, impl) -> RunOptions:
        """The worker's view of this request for one implementation."""
        s = self.setup
        return RunOptions(seed=self.seed, device=s.device, gpus=s.gpus, precision=s.precision, scaling=s.scaling,
                          nodes=s.nodes, compile=s.compile, backend=impl.backend, image_size=s.image_size,
                          extra={**s.launch_extra(), **({"variant": dict(s.variant)} if s.variant else {})})

    def resolved(self, model: str) -> tuple[int, int, str]:
        """(epochs, batch size per replica, data set) with the spec's defaults filled in."""
        spec = get_spec(model)
        return self.epochs or spec.epochs, self.batch_size or spec.batch_size, self.data or spec.dataset

    def planned(self, model: str) -> dict:
        """What a run measures, for its plan digest (harness.schedule): these keys and their
        order are part of every stored plan, so --resume finds runs recorded by earlier versions.
        Where the nodes meet is not what a run measures: the launch flags (node_rank,
        rdzv_endpoint, workers) keep their keys but always as None, so every node of one
        multi-node run, and a run whose flags Slurm filled in (harness.slurm), answer one plan,
        and every digest of a run that gave none of them is what it always was."""
        epochs, batch_size, data = self.resolved(model)
        s = self.setup
        planned = {"batch_size": batch_size, "compile": s.compile, "data": data, "device": s.device,
                   "epochs": epochs, "gpus": s.gpus, "image_size": s.image_size, "node_rank": None,
                   "nodes": s.nodes, "precision": s.precision, "rdzv_endpoint": None,
                   "samples": self.samples, "scaling": s.scaling, "seed": self.seed, "workers": None}
        if s.variant:  # only when given: a run without one keeps the digest it always had
            planned["variant"] = dict(s.variant)
        return planned


def implementations(selection: Selection, strict: bool = True):
    """(runnable, skipped): the selected implementations that can run here, and (impl, reason)
    for the others. strict: a framework asked for by name that cannot run, or nothing runnable,
    is a UsageError naming the reason."""
    from harness import runtimes
    from harness.registry import select

    # a retired framework is only worth a message when asked for by name
    impls = select(selection.lang, selection.framework, selection.backend, selection.model,
                   include_retired=bool(selection.framework))
    if not impls:
        raise UsageError(f"nothing registered for {selection.describe()}")
    runnable, skipped = [], []
    for impl in impls:
        reason = runtimes.availability(impl)
        if reason:
            skipped.append((impl, reason))
        else:
            runnable.append(impl)
    if strict and skipped and selection.framework:
        impl, reason = skipped[0]
        raise UsageError(f"{impl.label} cannot run here: {reason}")
    if strict and not runnable:
        raise UsageError("no selected implementation can run here: "
                         + "; ".join(f"{i.label}: {r}" for i, r in skipped))
    return runnable, skipped


def one_implementation(selection: Selection):
    """The single runnable implementation a selection names (weights, predict); UsageError otherwise."""
    from harness import runtimes
    from harness.registry import select

    impls = select(selection.lang, selection.framework, selection.backend, selection.model)
    if not impls:
        raise UsageError(f"nothing registered for {selection.describe()}")
    if len(impls) > 1:
        raise UsageError(f"{selection.framework} needs --backend; choices: {', '.join(i.backend for i in impls)}")
    reason = runtimes.availability(impls[0])
    if reason:
        raise UsageError(f"{impls[0].label} cannot run here: {reason}")
    return impls[0]


def check_setup(setup: DeviceSetup, impls=(), here: bool = True) -> None:
    """A device setup this machine and these implementations cannot run is a UsageError.
    here=False: another machine runs it (a Slurm node), so this one's GPUs are not asked."""
    from harness import environment, parallel

    if setup.device == "cuda" and here:
        found = environment.gpus()
        if not found:
            raise UsageError("--device cuda: no NVIDIA GPU found here (nvidia-smi lists none); choices: cpu")
        if setup.gpus > len(found):
            raise UsageError(f"--gpus {setup.gpus}: only {len(found)} GPU(s) here")
    if setup.precision == "int8":
        raise UsageError("--precision int8 is for --task infer on a runtime that quantizes (onnxruntime, openvino); "
                         "choices for training: fp32, bf16, fp16")
    if setup.device == "cpu":  # N CPU replicas are N processes or devices: not more than a few per core
        import os

        most = max(os.cpu_count() or 1, CPU_REPLICAS_MIN_LIMIT)
        if setup.gpus > most:
            raise UsageError(f"--gpus {setup.gpus} with --device cpu starts {setup.gpus} CPU replicas; this machine "
                             f"has {os.cpu_count()} cores; choices: --gpus 1 .. {most}")
    if setup.precision == "fp16" and setup.device == "cpu":
        raise UsageError("--precision fp16 needs --device cuda; choices on cpu: fp32, bf16")
    for impl in impls:
        if setup.precision not in impl.framework.precisions:
            raise UsageError(f"--precision {setup.precision}: {impl.label} trains in "
                             f"{', '.join(impl.framework.precisions)} only; choices: {', '.join(impl.framework.precisions)}")
        if setup.compile and not impl.framework.compiles:
            raise UsageError(f"--compile: {impl.label} has no compiled mode (its code is compiled ahead of time)")
        check_variant(setup.variant, impl)
    parallel.check(setup, impls)


def check_variant(variant, impl) -> None:
    """Every --variant KEY=VALUE must be one the implementation's framework declares (registry
    Framework.variants); UsageError naming the choices otherwise."""
    from harness.registry import FRAMEWORKS

    if not variant:
        return
    declared = dict(impl.framework.variants)
    given = " ".join(f"{k}={v}" for k, v in variant)
    if not declared:
        raise UsageError(f"--variant {given}: {impl.label} has no variants; only "
                         + ", ".join(sorted({f"{f.lang}/{f.name}" for f in FRAMEWORKS if f.variants})) + " do")
    choices = "; ".join(f"{k}={'|'.join(v)}" for k, v in declared.items())
    for key, value in variant:
        if key not in declared or value not in declared[key]:
            raise UsageError(f"--variant {key}={value}: not a variant of {impl.label}; choices: {choices}")
