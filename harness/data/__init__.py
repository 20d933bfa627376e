"""One set of arrays for everyone: prepare a data set once, as .npy files with a digest manifest.

`prepare` runs in the parent process (it may download and decode); workers only memory-map the
prepared folder, so every implementation reads the very same bytes. Every call checks the
prepared files against their manifest (harness.data.cache.verify) before it returns, and refuses
what would not fit in memory before anything is allocated.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from harness.data import cache
from harness.data.memory import GENERATION_COPIES, check_fits
from harness.errors import UsageError
from harness.specs import ModelSpec

BUILTIN = ("cifar10", "imdb", "shakespeare", "synthetic")
REAL = ("cifar10", "imdb", "shakespeare")
FULL_SIZES = {"cifar10": (50_000, 10_000), "imdb": (25_000, 25_000)}  # shakespeare: full_sizes()
SYNTHETIC_KIND = {"cifar10": "images", "imdb": "tokens", "shakespeare": "text"}
SYNTHETIC_SEED = 0  # synthetic data does not follow --seed: every run and repeat sees the same bytes
SYNTHETIC_MAX = 1_000_000  # training examples a synthetic set may have (12.3 GB of images)


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


def _example_bytes(spec: ModelSpec) -> int:
    """Bytes of one prepared example: x (float32 images or int64 ids) and its int64 target(s)."""
    import math

    return math.prod(spec.input_shape) * (4 if spec.input_dtype == "float32" else 8) + 8 * math.prod(spec.target_shape)


def _ready(folder: Path, refresh: bool) -> bool:
    """Whether the prepared folder is there to use; with `refresh`, whatever was there is removed."""
    if refresh and folder.exists():
        shutil.rmtree(folder)
    return (folder / "manifest.json").exists() or (folder.exists() and any(folder.iterdir()))


def _check_root(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise UsageError(f"data cache {root} is a file, not a folder; choose another --data-dir or ${cache.ENV_VAR}")


def prepare(data: str, spec: ModelSpec, samples: int | None = None, data_dir=None, refresh: bool = False) -> Prepared:
    """The prepared, verified data set `data` for `spec` (see the module's docstring). `refresh`:
    prepare it again from its source whatever the cache holds."""
    root = cache.data_dir(data_dir)
    _check_root(root)
    path = Path(data).expanduser()
    if data not in BUILTIN and not data.endswith((".npz", ".txt")) and not path.exists():
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
        if n_train > SYNTHETIC_MAX:
            raise UsageError(f"--samples {n_train:,}: a synthetic set holds at most {SYNTHETIC_MAX:,} training "
                             f"examples; choices: --samples {spec.batch_size} .. {SYNTHETIC_MAX}")
        n_test = synthetic.test_size(n_train, full_test)
        kind = SYNTHETIC_KIND[spec.dataset]
        context = spec.input_shape[0] if kind == "text" else None
        shape = f"{kind}{context}" if context else kind
        key = f"synthetic-v{synthetic.VERSION}-{shape}-n{n_train}-t{n_test}-seed{SYNTHETIC_SEED}"
        folder = root / "prepared" / key
        if not _ready(folder, refresh):
            check_fits(GENERATION_COPIES * (n_train + n_test) * _example_bytes(spec),
                       f"--samples {n_train:,}: the synthetic arrays ({n_train:,} + {n_test:,} test examples)",
                       "choose fewer --samples")
            arrays = synthetic.make(kind, n_train, n_test, SYNTHETIC_SEED, context)
            cache.write_prepared(folder, arrays, {"kind": "synthetic", "shape_of": spec.dataset, "seed": SYNTHETIC_SEED,
                                                  "generator_version": synthetic.VERSION,
                                                  **({"context": context} if context else {})})
        return _verified(Prepared(folder, data, None, cache.read_manifest(folder)))

    if data not in BUILTIN:  # the user's file
        from harness.data import text, userfile

        if path.is_dir():
            raise UsageError(f"--data {path} is a folder; choices: {', '.join(BUILTIN)} or a {_file_choice(spec)}")
        if not path.is_file():
            raise UsageError(f"data file {path} does not exist; choices: {', '.join(BUILTIN)} or an existing "
                             f"{_file_choice(spec)}")
        if not data.endswith(".txt"):
            userfile.check_archive(path, spec)  # before a byte of it is decompressed
        digest = cache.file_digest(path, "sha256")
        size = f"-c{spec.input_shape[0]}" if spec.sequence else ""  # a text's windows follow the context
        folder = root / "prepared" / f"user-{spec.name}{size}-{digest[:16]}"
        if not _ready(folder, refresh):
            arrays = text.load_file(path, spec) if data.endswith(".txt") else userfile.load(path, spec)
            cache.write_prepared(folder, arrays, {"kind": "file", "path": str(path.resolve()), "sha256": digest})
    else:
        # the transformer's windows follow its context (the test-only size has its own)
        folder = root / "prepared" / (f"{data}-c{spec.input_shape[0]}" if spec.sequence else data)
        if not _ready(folder, refresh):
            cache.write_prepared(folder, _load_real(data, root, spec), {"kind": data})
    prepared = _verified(Prepared(folder, data, samples, cache.read_manifest(folder)))
    available = prepared.manifest["arrays"]["x_train"]["shape"][0]
    if samples is not None and samples > available:
        raise UsageError(f"--samples {samples} exceeds the {available} training examples of {data}")
    return prepared


def _verified(prepared: Prepared) -> Prepared:
    cache.verify(prepared.folder, prepared.manifest)
    return prepared
