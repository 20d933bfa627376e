"""Download-and-cache of raw archives, and the store of prepared arrays every implementation reads.

Prepared arrays live as .npy files next to a manifest.json holding each array's SHA-256 digest,
shape and dtype. They are written to a temporary folder and renamed into place, so a failed or
interrupted preparation leaves nothing half-written behind.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

from harness.errors import UsageError

ENV_VAR = "DL_ROSETTA_DATA"
ARRAY_NAMES = ("x_train", "y_train", "x_test", "y_test")


def data_dir(override: str | os.PathLike | None = None) -> Path:
    """--data-dir, else $DL_ROSETTA_DATA, else the user's cache dir."""
    if override:
        return Path(override).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dl-rosetta"


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def array_digest(a: np.ndarray) -> str:
    """SHA-256 of the array's bytes in C order (what every runtime can recompute on its side)."""
    a = np.ascontiguousarray(a)
    h = hashlib.sha256()
    flat = a.reshape(-1).view(np.uint8)
    step = 1 << 24
    for i in range(0, flat.size, step):
        h.update(flat[i : i + step])
    return h.hexdigest()


def fetch(url: str, dest: Path, algorithm: str, digest: str, timeout: float = 60.0) -> Path:
    """Return dest, downloading it first if absent; verify the checksum either way."""
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as f:
                shutil.copyfileobj(r, f)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise UsageError(
                f"cannot download {url} ({e}); put the file at {dest} yourself, "
                f"or choose another --data-dir / ${ENV_VAR}, or use --data synthetic"
            ) from None
        tmp.replace(dest)
    actual = file_digest(dest, algorithm)
    if actual != digest:
        raise UsageError(
            f"checksum mismatch for {dest}: {algorithm} {actual}, expected {digest}; "
            "delete the file so it is downloaded again"
        )
    return dest


def write_prepared(folder: Path, arrays: dict[str, np.ndarray], source: dict) -> Path:
    """Write arrays + manifest atomically into folder (which must not exist yet)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", suffix=".tmp", dir=folder.parent))
    try:
        manifest = {"source": source, "arrays": {}}
        for name in ARRAY_NAMES:
            a = np.ascontiguousarray(arrays[name])
            np.save(tmp / f"{name}.npy", a, allow_pickle=False)
            manifest["arrays"][name] = {"shape": list(a.shape), "dtype": str(a.dtype), "sha256": array_digest(a)}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        try:
            tmp.rename(folder)
        except OSError:  # another process prepared it first
            if not (folder / "manifest.json").exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def read_manifest(folder: Path) -> dict:
    return json.loads((Path(folder) / "manifest.json").read_text())


def open_prepared(folder: Path, samples: int | None = None) -> dict[str, np.ndarray]:
    """Memory-map the prepared arrays; the first `samples` training examples if given."""
    folder = Path(folder)
    out = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in ARRAY_NAMES}
    if samples is not None:
        out["x_train"] = out["x_train"][:samples]
        out["y_train"] = out["y_train"][:samples]
    return out
