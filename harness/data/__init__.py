"""One set of arrays for everyone: prepare a data set once, as .npy files with a digest manifest.

`prepare` runs in the parent process (it may download and decode); workers only memory-map the
prepared folder, so every implementation reads the very same bytes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.data import cache
from harness.errors import UsageError
from harness.specs import ModelSpec

BUILTIN = ("cifar10", "imdb", "shakespeare", "synthetic")
REAL = ("cifar10", "imdb", "shakespeare")
FULL_SIZES = {"cifar10": (50_000, 10_000), "imdb": (25_000, 25_000)}  # shakespeare: full_sizes()
SYNTHETIC_KIND = {"cifar10": "images", "imdb": "tokens", "shakespeare": "text"}
SYNTHETIC_SEED = 0  # synthetic data does not follow --seed: every run and repeat sees the same bytes


@dataclass(frozen=True)
class Prepared:
    folder: Path
    name: str  # "cifar10" | "imdb" | "synthetic" | the user's file path
    samples: int | None  # first N training examples, None for all
    manifest: dict

    @property
    def n_train(self) -> int:
        full = self.manifest["arrays"]["x_train"]["shape"][0]
        return full if self.samples is None else min(self.samples, full)


def full_sizes(spec: ModelSpec) -> tuple[int, int]:
    """(training, test) examples of the model's real data set: what --data synthetic mirrors."""
    if spec.dataset == "shakespeare":
        from harness.data import shakespeare, text

        return text.split_sizes(shakespeare.SIZE, spec.input_shape[0])
    return FULL_SIZES[spec.dataset]


def _load_real(name: str, root: Path, spec: ModelSpec):
    if name == "shakespeare":
        from harness.data import shakespeare

        return shakespeare.load(root / "raw", spec.input_shape[0])
    if name == "cifar10":
        from harness.data import cifar10 as mod
    else:
        from harness.data import imdb as mod
    return mod.load(root / "raw")


def _file_choice(spec: ModelSpec) -> str:
    return "FILE.txt or FILE.npz" if spec.sequence else "FILE.npz"


def prepare(data: str, spec: ModelSpec, samples: int | None = None, data_dir=None) -> Prepared:
    root = cache.data_dir(data_dir)
    if data not in BUILTIN and not data.endswith((".npz", ".txt")):
        raise UsageError(f"unknown data {data!r}; choices: {', '.join(BUILTIN)}, a FILE.npz or (transformer) a FILE.txt")
    if data in REAL and data != spec.dataset:
        raise UsageError(f"model {spec.name} trains on {spec.dataset}, not {data}; choices: {spec.dataset}, synthetic, "
                         f"{_file_choice(spec)}")
    if data.endswith(".txt") and not spec.sequence:
        raise UsageError(f"--data {data}: a text file is next-byte data for the transformer; model {spec.name} takes "
                         f"{spec.dataset}, synthetic or FILE.npz")
    if samples is not None and samples < spec.batch_size:
        raise UsageError(f"--samples {samples} is below the batch size {spec.batch_size}: no full batch to train on")

    if data == "synthetic":
        from harness.data import synthetic

        full_train, full_test = full_sizes(spec)
        n_train = samples or full_train
        n_test = synthetic.test_size(n_train, full_test)
        kind = SYNTHETIC_KIND[spec.dataset]
        context = spec.input_shape[0] if kind == "text" else None
        shape = f"{kind}{context}" if context else kind
        key = f"synthetic-v{synthetic.VERSION}-{shape}-n{n_train}-t{n_test}-seed{SYNTHETIC_SEED}"
        folder = root / "prepared" / key
        if not (folder / "manifest.json").exists():
            arrays = synthetic.make(kind, n_train, n_test, SYNTHETIC_SEED, context)
            cache.write_prepared(folder, arrays, {"kind": "synthetic", "shape_of": spec.dataset, "seed": SYNTHETIC_SEED,
                                                  "generator_version": synthetic.VERSION,
                                                  **({"context": context} if context else {})})
        return Prepared(folder, data, None, cache.read_manifest(folder))

    if data.endswith((".npz", ".txt")):
        from harness.data import text, userfile

        path = Path(data).expanduser()
        if not path.is_file():
            raise UsageError(f"data file {path} does not exist; choices: {', '.join(BUILTIN)} or an existing "
                             f"{_file_choice(spec)}")
        digest = cache.file_digest(path, "sha256")
        size = f"-c{spec.input_shape[0]}" if spec.sequence else ""  # a text's windows follow the context
        folder = root / "prepared" / f"user-{spec.name}{size}-{digest[:16]}"
        if not (folder / "manifest.json").exists():
            arrays = text.load_file(path, spec) if data.endswith(".txt") else userfile.load(path, spec)
            cache.write_prepared(folder, arrays, {"kind": "file", "path": str(path.resolve()), "sha256": digest})
    else:
        # the transformer's windows follow its context (the test-only size has its own)
        folder = root / "prepared" / (f"{data}-c{spec.input_shape[0]}" if spec.sequence else data)
        if not (folder / "manifest.json").exists():
            cache.write_prepared(folder, _load_real(data, root, spec), {"kind": data})
    prepared = Prepared(folder, data, samples, cache.read_manifest(folder))
    available = prepared.manifest["arrays"]["x_train"]["shape"][0]
    if samples is not None and samples > available:
        raise UsageError(f"--samples {samples} exceeds the {available} training examples of {data}")
    return prepared
