"""Download-and-cache of raw archives, and the store of prepared arrays every implementation reads.

Prepared arrays live as .npy files next to a manifest.json holding each array's SHA-256 digest,
shape and dtype. They are written to a temporary folder and renamed into place, so a failed or
interrupted preparation leaves nothing half-written behind.

Nothing on disk is trusted. Before any worker starts, `verify` checks each .npy file against the
manifest: its header's shape and dtype and its size on every call (a few stat/read calls), its
SHA-256 whenever the file is not the one last verified. "The one last verified" is a stamp
(`verified.json`: size, mtime, ctime, inode and device of each file, and the manifest's own
digest) written after a full check; any write to a file changes its ctime, which no user tool
sets back, so a changed byte is always hashed again. Inside the worker, `open_checked` hashes the
files it maps once more before the clock starts (untimed, `timing.verify_s`), and the record
carries those digests beside the manifest. Measured on a CIFAR-10-sized set (50,000 x 3x32x32
float32 = 614 MB train, 123 MB test) on the 2-core development VM: a stamp hit 0.3 ms; hashing
x_train 0.5-0.65 s quiet, 1.2-2.3 s at a load average of 10-14; the worker's hash of all four
arrays 1.5-3.1 s per run at that load.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

from harness.errors import UsageError

ENV_VAR = "DL_ROSETTA_DATA"
ARRAY_NAMES = ("x_train", "y_train", "x_test", "y_test")
STAMP = "verified.json"  # the stat facts of the files as last verified in full (see the docstring)
HEX = set("0123456789abcdef")


class DataMismatch(ValueError):
    """Inside the worker: the mapped bytes differ from the manifest the parent checked."""


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


def _fix(folder: Path) -> str:
    return f"delete {folder} (it is prepared again on the next run) or rerun with --refresh"


def _folder_mode() -> int:
    """What a plain mkdir gives (0777 less the umask): prepared data is as readable as the results."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o777 & ~mask


def write_prepared(folder: Path, arrays: dict[str, np.ndarray], source: dict) -> Path:
    """Write arrays + manifest atomically into folder (which must not exist yet)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", suffix=".tmp", dir=folder.parent))
    try:
        os.chmod(tmp, _folder_mode())  # mkdtemp's 0700 would hide a shared cache from its other users
        manifest = {"source": source, "arrays": {}}
        for name in ARRAY_NAMES:
            a = np.ascontiguousarray(arrays[name])
            np.save(tmp / f"{name}.npy", a, allow_pickle=False)
            manifest["arrays"][name] = {"shape": list(a.shape), "dtype": str(a.dtype), "sha256": array_digest(a)}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        _write_stamp(tmp, manifest)  # the digests were just computed from these very bytes
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


def manifest_problem(manifest) -> str | None:
    """Why `manifest` is not a manifest of the four arrays (None if it is one)."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("arrays"), dict):
        return "no \"arrays\" table"
    for name in ARRAY_NAMES:
        meta = manifest["arrays"].get(name)
        if not isinstance(meta, dict):
            return f"no entry for {name}"
        shape, dtype, digest = meta.get("shape"), meta.get("dtype"), meta.get("sha256")
        if not (isinstance(shape, list) and shape and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                          for d in shape)):
            return f"{name}: shape {shape!r} is not a list of sizes"
        if not isinstance(dtype, str):
            return f"{name}: dtype {dtype!r} is not a dtype name"
        if not (isinstance(digest, str) and len(digest) == 64 and set(digest) <= HEX):
            return f"{name}: sha256 {digest!r} is not a SHA-256 digest"
    return None


def read_manifest(folder: Path) -> dict:
    """The folder's manifest; a missing or damaged one is a UsageError naming it and the fix."""
    folder = Path(folder)
    path = folder / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{path} is missing; {_fix(folder)}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path} cannot be read ({e}); {_fix(folder)}") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"{path} is damaged (not valid JSON: {e.msg} at line {e.lineno}); {_fix(folder)}") from None
    problem = manifest_problem(manifest)
    if problem:
        raise UsageError(f"{path} is damaged ({problem}); {_fix(folder)}")
    return manifest


def npy_header(path: Path) -> tuple[tuple, np.dtype, int]:
    """(shape, dtype, offset of the data) from an .npy file's header, without reading its data."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):  # 3.0 only marks utf-8 field names: never one of ours
            raise ValueError(f"unsupported .npy format version {version}")
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
        if fortran and len(shape) > 1:
            raise ValueError("Fortran-ordered array")
        return tuple(shape), dtype, f.tell()


def npy_digest(path: Path) -> str:
    """SHA-256 of an .npy file's array bytes (what array_digest gives for the array it holds), read
    in chunks through one reused buffer: the file's pages are not mapped into this process, so a
    worker's peak memory does not grow by the arrays it hashes."""
    _, _, offset = npy_header(path)
    h = hashlib.sha256()
    buf = bytearray(1 << 24)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        f.seek(offset)
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def _stat_key(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def _manifest_key(manifest: dict) -> str:
    return hashlib.sha256(json.dumps(manifest["arrays"], sort_keys=True).encode()).hexdigest()


def _write_stamp(folder: Path, manifest: dict) -> None:
    stamp = {"manifest": _manifest_key(manifest),
             "files": {name: _stat_key(folder / f"{name}.npy") for name in ARRAY_NAMES}}
    tmp = folder / f".{STAMP}.{os.getpid()}.tmp"
    try:
        tmp.write_text(json.dumps(stamp))
        os.replace(tmp, folder / STAMP)
    except OSError:  # a read-only cache: the next run hashes again, which is slower, not wrong
        tmp.unlink(missing_ok=True)


def verify(folder: Path, manifest: dict) -> dict:
    """Check the prepared files against the manifest before a worker starts; a file that differs
    is a UsageError naming it and the fix. Returns {name: "stamp" | "hashed"}: how each was checked."""
    folder = Path(folder)
    try:
        stamp = json.loads((folder / STAMP).read_text())
    except (OSError, ValueError):
        stamp = {}
    fresh = isinstance(stamp, dict) and stamp.get("manifest") == _manifest_key(manifest)
    known = stamp.get("files") if fresh and isinstance(stamp.get("files"), dict) else {}
    how = {}
    for name in ARRAY_NAMES:
        meta, path = manifest["arrays"][name], folder / f"{name}.npy"
        try:
            shape, dtype, offset = npy_header(path)
            size = path.stat().st_size
        except FileNotFoundError:
            raise UsageError(f"{path} is missing; {_fix(folder)}") from None
        except (OSError, ValueError, SyntaxError) as e:
            raise UsageError(f"{path} is not a readable .npy file ({e}); {_fix(folder)}") from None
        if list(shape) != meta["shape"] or str(dtype) != meta["dtype"]:
            raise UsageError(f"{path} holds {dtype!s} {tuple(shape)}, its manifest says {meta['dtype']} "
                             f"{tuple(meta['shape'])}; {_fix(folder)}")
        if size != offset + math.prod(shape) * dtype.itemsize:
            raise UsageError(f"{path} is {size:,} bytes, its header needs {offset + math.prod(shape) * dtype.itemsize:,} "
                             f"(truncated or appended to); {_fix(folder)}")
        if known.get(name) == _stat_key(path):
            how[name] = "stamp"
            continue
        digest = npy_digest(path)
        if digest != meta["sha256"]:
            raise UsageError(f"{path} does not match its manifest (SHA-256 {digest[:12]}.., manifest "
                             f"{meta['sha256'][:12]}..): it changed after it was prepared; {_fix(folder)}")
        how[name] = "hashed"
    if "hashed" in how.values():
        _write_stamp(folder, manifest)
    return how


def open_prepared(folder: Path, samples: int | None = None) -> dict[str, np.ndarray]:
    """Memory-map the prepared arrays; the first `samples` training examples if given."""
    folder = Path(folder)
    out = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in ARRAY_NAMES}
    if samples is not None:
        out["x_train"] = out["x_train"][:samples]
        out["y_train"] = out["y_train"][:samples]
    return out


def open_checked(folder: Path, expected: dict, samples: int | None = None) -> tuple[dict, dict]:
    """Inside the worker: map the prepared arrays and hash every one of them in full, before the
    clock starts. `expected` is the manifest's "arrays" table the parent verified. Returns (arrays,
    {name: SHA-256 seen}); DataMismatch names the file whose bytes differ."""
    folder = Path(folder)
    arrays = open_prepared(folder)
    seen = {}
    for name in ARRAY_NAMES:
        a, meta = arrays[name], expected[name]
        if list(a.shape) != list(meta["shape"]) or str(a.dtype) != meta["dtype"]:
            raise DataMismatch(f"{folder / (name + '.npy')} holds {a.dtype} {a.shape}, the manifest "
                               f"{meta['dtype']} {tuple(meta['shape'])}: it changed after the harness checked it")
        seen[name] = npy_digest(folder / f"{name}.npy")
        if seen[name] != meta["sha256"]:
            raise DataMismatch(f"{folder / (name + '.npy')} does not match the manifest (SHA-256 {seen[name][:12]}.., "
                               f"manifest {meta['sha256'][:12]}..): it changed after the harness checked it")
    if samples is not None:
        arrays["x_train"], arrays["y_train"] = arrays["x_train"][:samples], arrays["y_train"][:samples]
    return arrays, seen
