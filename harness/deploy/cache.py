"""Compiled artefacts on disk, keyed and verified before reuse.

An entry lives in <cache_dir>/<runtime>/<key digest>/ with the artefact files and manifest.json:
the key (the model file's SHA-256, the runtime's version, the target, the precision, and whatever
else changes the artefact: calibration digest, batch, threads) and each file's SHA-256. A lookup
re-hashes every file and compares it with the manifest; an entry whose files changed, went missing
or whose key differs is removed and rebuilt, never used. Entries are written to a temporary
folder and renamed into place, so a crashed build leaves nothing that looks complete.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from harness.deploy.common import Timer, sha256_file

MANIFEST = "manifest.json"


@dataclass
class Entry:
    path: Path  # the folder holding the artefact files
    status: str  # "hit", "miss" (built now) or "rebuilt: <why the old entry was refused>"
    build_s: float  # seconds the build took (0.0 on a hit)

    def record(self) -> dict:
        return {"status": self.status, "path": str(self.path), "build_s": self.build_s}


def key_digest(key: dict) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:32]


def verify(folder: Path, key: dict) -> str | None:
    """None if the entry is complete and unchanged; else why not."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        return f"manifest unreadable ({e.__class__.__name__})"
    if manifest.get("key") != json.loads(json.dumps(key, sort_keys=True, default=str)):
        return "key differs"
    files = manifest.get("files") or {}
    if not files:
        return "no files"
    for name, digest in files.items():
        f = folder / name
        if not f.is_file():
            return f"{name} missing"
        if sha256_file(f) != digest:
            return f"{name} digest mismatch"
    return None


def cached(cache_dir: Path, runtime: str, key: dict, build: Callable[[Path], None]) -> Entry:
    """The verified entry for `key`, building it with build(folder) if absent or refused.

    build writes its artefact files into the folder it is given; every regular file there is
    hashed into the manifest."""
    root = Path(cache_dir) / runtime
    folder = root / key_digest(key)
    status = "miss"
    if folder.exists():
        why = verify(folder, key)
        if why is None:
            return Entry(folder, "hit", 0.0)
        status = f"rebuilt: {why}"
        shutil.rmtree(folder, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=root))
    try:
        with Timer() as t:
            build(tmp)
        files = {str(p.relative_to(tmp)): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        (tmp / MANIFEST).write_text(json.dumps({"key": key, "files": files}, sort_keys=True, indent=1, default=str))
        try:
            os.rename(tmp, folder)
        except OSError:  # another process stored the same entry first: use it if it verifies
            if verify(folder, key) is not None:
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Entry(folder, status, t.s)
