"""Tiny Shakespeare: the char-rnn project's `input.txt` (1,115,394 bytes), as next-byte windows.

SHA-256 86c4e6aa...c565ed is the digest published with the file by, e.g., Lux.jl's NanoGPT example
(examples/NanoGPT/main.jl registers it as a DataDeps checksum, which DataDeps verifies as SHA-256)
and by several independent projects that state the same 1,115,394 bytes.
"""
from __future__ import annotations

from pathlib import Path

from harness.data import text
from harness.data.cache import fetch

URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
FILENAME = "tinyshakespeare/input.txt"  # under <cache>/raw/
CHECKSUM = ("sha256", "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed")
SIZE = 1_115_394  # bytes


def decode(path: Path, context: int):
    """x/y windows of the 90/10 split by position (harness.data.text)."""
    return text.examples(Path(path).read_bytes(), context)


def load(raw_dir: Path, context: int):
    return decode(fetch(URL, raw_dir / FILENAME, *CHECKSUM), context)
