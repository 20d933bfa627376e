"""Whether arrays fit in this machine's memory, asked before anything is allocated."""
from __future__ import annotations

import os

from harness.errors import UsageError

GENERATION_COPIES = 2  # synthetic sets are generated in blocks and joined: twice their size at the peak
HEADROOM = 0.9  # the share of the available memory a request may take; the rest is everyone else's


def memory_available() -> int | None:
    """Bytes this machine can still allocate (Linux MemAvailable; else physical memory), None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def gb(n: float) -> str:
    """Bytes for a message: 231.2 MB, 12.5 GB, 12.3 PB."""
    for unit, size in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} bytes"


def check_fits(needed: int, what: str, fix: str) -> None:
    """UsageError when `needed` bytes exceed the memory this machine has available."""
    have = memory_available()
    if have is not None and needed > HEADROOM * have:
        raise UsageError(f"{what} need {gb(needed)} in memory; this machine has {gb(have)} available; {fix}")
