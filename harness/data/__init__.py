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

BUILTIN = ("cifar10", "imdb", "synthetic")
FULL_SIZES = {"cifar10": (50_000, 10_000), "imdb": (25_000, 25_000)}
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


def _load_real(name: str, root: Path):
    if name == "cifar10":
        from harness.data import cifar10 as mod
    else:
        from harness.data import imdb as mod
    return mod.load(root / "raw")


def prepare(data: str, spec: ModelSpec, samples: int | None = None, data_dir=None) -> Prepared:
    root = cache.data_dir(data_dir)
    if data not in BUILTIN and not data.endswith(".npz"):
        raise UsageError(f"unknown data {data!r}; choices: {', '.join(BUILTIN)} or a FILE.npz")
    if data in ("cifar10", "imdb") and data != spec.dataset:
        raise UsageError(f"model {spec.name} trains on {spec.dataset}, not {data}; choices: {spec.dataset}, synthetic, FILE.npz")
    if samples is not None and samples < spec.batch_size:
        raise UsageError(f"--samples {samples} is below the batch size {spec.batch_size}: no full batch to train on")

    if data == "synthetic":
        from harness.data import synthetic

        full_train, full_test = FULL_SIZES[spec.dataset]
        n_train = samples or full_train
        n_test = synthetic.test_size(n_train, full_test)
        kind = "images" if spec.dataset == "cifar10" else "tokens"
        key = f"synthetic-v{synthetic.VERSION}-{kind}-n{n_train}-t{n_test}-seed{SYNTHETIC_SEED}"
        folder = root / "prepared" / key
        if not (folder / "manifest.json").exists():
            arrays = synthetic.make(kind, n_train, n_test, SYNTHETIC_SEED)
            cache.write_prepared(folder, arrays, {"kind": "synthetic", "shape_of": spec.dataset, "seed": SYNTHETIC_SEED,
                                                  "generator_version": synthetic.VERSION})
        return Prepared(folder, data, None, cache.read_manifest(folder))

    if data.endswith(".npz"):
        from harness.data import userfile

        path = Path(data).expanduser()
        if not path.is_file():
            raise UsageError(f"data file {path} does not exist; choices: {', '.join(BUILTIN)} or an existing FILE.npz")
        digest = cache.file_digest(path, "sha256")
        folder = root / "prepared" / f"user-{spec.name}-{digest[:16]}"
        if not (folder / "manifest.json").exists():
            cache.write_prepared(folder, userfile.load(path, spec), {"kind": "file", "path": str(path.resolve()), "sha256": digest})
    else:
        folder = root / "prepared" / data
        if not (folder / "manifest.json").exists():
            cache.write_prepared(folder, _load_real(data, root), {"kind": data})
    prepared = Prepared(folder, data, samples, cache.read_manifest(folder))
    available = prepared.manifest["arrays"]["x_train"]["shape"][0]
    if samples is not None and samples > available:
        raise UsageError(f"--samples {samples} exceeds the {available} training examples of {data}")
    return prepared
