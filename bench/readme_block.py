"""The README's generated blocks. Each lies between `<!-- NAME: begin ...-->` (the rest of that line
says which command wrote it) and `<!-- NAME: end -->`; the bench scripts that write one
(readme_tables.py, bindings_table.py, inference_table.py) replace it here, markers included.
"""
from __future__ import annotations

import re
from pathlib import Path

from harness.errors import UsageError


def markers(name: str) -> tuple[str, str]:
    """The block's begin marker (a prefix: its line goes on with where the block came from) and end."""
    return f"<!-- {name}: begin", f"<!-- {name}: end -->"


def replace(readme: Path, name: str, block: str) -> str:
    """Write `block` (which starts with the begin marker and ends with the end marker) over the
    README's block NAME; returns the new text. A README without that block is refused, unchanged."""
    begin, end = markers(name)
    if not (block.startswith(begin) and block.endswith(end)):
        raise ValueError(f"a {name} block must start with '{begin}' and end with '{end}'")
    text = Path(readme).read_text()
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise UsageError(f"{readme}: no block between '{begin} ...' and '{end}'")
    new = pattern.sub(lambda m: block, text, count=1)
    Path(readme).write_text(new)
    return new
