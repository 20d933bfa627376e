"""Exported models, cached per (implementation, weights digest) and verified before use.

Inside the worker that holds the trained model, `exported(...)` returns the export of one format:
from the cache when a file made by the same implementation code, exporter versions and input
shape from weights with the same digest is there and its bytes still have the SHA-256 written
beside it; otherwise it calls the framework's own exporter (`Trainer.export`) and stores the file.

    <cache>/exports/<implementation>/<weights sha256[:16]>-<key[:12]>/model.onnx
                                                                  /export.json

export.json holds what the record gives for the export: format, file, SHA-256, bytes, opset,
the graph's input (name, dtype, shape), the layout the file takes, whether its batch is dynamic,
the exporter and its versions, the export time and the key's parts. A file whose digest no longer
matches is exported again, and the record says so.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from harness.onnx_files import EXTENSIONS, describe, sha256, single_file

REPO = Path(__file__).resolve().parents[1]


def weights_digest(weights: dict) -> str:
    """SHA-256 over the canonical weights: keys in order, each array's dtype, shape and bytes."""
    h = hashlib.sha256()
    for key in sorted(weights):
        a = np.ascontiguousarray(weights[key])
        h.update(f"{key}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def source_digest(impl) -> str:
    """SHA-256 of the implementation's code (its framework's folder): a changed model is a new export."""
    lang_folder = {"python": "python_models", "r": "r_models", "julia": "julia_models"}.get(impl.lang, impl.lang)
    folder = REPO / lang_folder / impl.name
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(str(f.relative_to(folder)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def slug(label: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in label).strip("-")


def cache_key(impl, digest: str, fmt: str, example_shape, versions: dict, image_size: int, trainer=None) -> dict:
    """What makes two exports the same file: implementation, its code and trainer class, weights,
    format, input shape (the batch counts only for a static-shape exporter, so it is always part of
    the key), versions."""
    kind = type(trainer) if trainer is not None else None
    return {"impl": impl.label, "source_sha256": source_digest(impl), "weights_sha256": digest, "format": fmt,
            "trainer": f"{kind.__module__}.{kind.__qualname__}" if kind else None,
            "example_shape": [int(n) for n in example_shape], "image_size": image_size,
            "versions": {k: str(v) for k, v in sorted(versions.items())}}


def _folder(root: Path, impl, key: dict) -> Path:
    k = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return Path(root) / "exports" / slug(impl.label) / f"{key['weights_sha256'][:16]}-{k[:12]}"


def lookup(root: Path, impl, key: dict) -> tuple[dict | None, str]:
    """(meta, how): meta of a verified cached export or None; how says why ("hit", "miss",
    "digest mismatch: re-exported")."""
    folder = _folder(root, impl, key)
    meta_file = folder / "export.json"
    if not meta_file.exists():
        return None, "miss"
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, json.JSONDecodeError):
        return None, "unreadable export.json: re-exported"
    path = Path(meta.get("file", ""))
    if not path.exists():
        return None, "file missing: re-exported"
    if meta.get("key") != key:
        return None, "key differs: re-exported"
    if sha256(path) != meta.get("sha256"):
        return None, "digest mismatch: re-exported"
    return meta, "hit"


def exported(trainer, impl, fmt: str, example: np.ndarray, digest: str, root: Path, versions: dict,
             image_size: int) -> dict:
    """The export of `fmt` for the trainer's current weights (digest `digest`), from the cache or new."""
    key = cache_key(impl, digest, fmt, np.shape(example), versions, image_size, trainer)
    meta, how = lookup(root, impl, key)
    if meta is not None:
        return {**meta, "cache": how}
    folder = _folder(root, impl, key)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=folder.parent))
    try:
        path = tmp / f"model{EXTENSIONS[fmt]}"
        t = time.monotonic()
        made = dict(trainer.export(fmt, str(path), example) or {})
        export_s = time.monotonic() - t
        if fmt == "onnx" and single_file(path):
            made["external_data_folded"] = True
        facts = describe(path, fmt)
        if folder.exists():  # a stale or corrupted entry: replaced whole
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(tmp, folder)
        except OSError:  # another worker stored the same export meanwhile: use the stored one
            meta, how = lookup(root, impl, key)
            if meta is not None:
                return {**meta, "cache": "hit (stored meanwhile)"}
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    meta = {"format": fmt, "file": str(folder / path.name), **facts, "layout": made.pop("layout", None),
            "dynamic_batch": bool(made.pop("dynamic_batch", True)), "exporter": made.pop("exporter", None),
            "export_s": export_s, "batch": int(np.shape(example)[0]), "impl": impl.label, "key": key,
            "details": made}
    (folder / "export.json").write_text(json.dumps(meta, indent=1, default=str))
    return {**meta, "cache": how}


def verify(meta: dict) -> None:
    """Before a runtime reads an export: the file still has the SHA-256 the export recorded."""
    got = sha256(meta["file"])
    if got != meta["sha256"]:
        raise ValueError(f"export {meta['file']} changed since it was written: SHA-256 {got[:12]}.., "
                         f"recorded {meta['sha256'][:12]}..")
