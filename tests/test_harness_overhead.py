"""The harness against a plain script (bench/harness_overhead.py, bench/bare_loop.py): the plain
script must train exactly what the harness's worker trains, or a timing difference between them
would measure the model code instead of the process; and the CLI's progress display, on at a
terminal, must not touch the record printed on stdout."""
from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
import threading

import numpy as np
import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
import harness_overhead  # noqa: E402


def _drain(fd, into):
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except OSError:
            return
        if not chunk:
            return
        into.append(chunk)


def test_plain_script_trains_what_the_worker_trains(data_cache, tmp_path):
    from harness import data
    from harness.specs import get_spec

    # the CLI at a terminal: stderr a pseudo-terminal (the progress display is on), stdout the record
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    shown = []
    reader = threading.Thread(target=_drain, args=(master, shown), daemon=True)
    reader.start()
    env = dict(os.environ, DL_ROSETTA_DATA=str(data_cache))
    proc = subprocess.run([sys.executable, "-m", "harness", "--framework", "pytorch", "--model", "cnn", "--data",
                           "synthetic", "--samples", "128", "--epochs", "2", "--out", str(tmp_path), "--format",
                           "json"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL,
                          timeout=900)
    os.close(slave)
    reader.join(timeout=10)
    assert proc.returncode == 0
    record = json.loads(proc.stdout)  # nothing but the record on stdout
    assert "python/pytorch/cnn #0" in b"".join(shown).decode(errors="replace"), "the bars went to the terminal"

    prepared = data.prepare("synthetic", get_spec("cnn"), 128, str(data_cache))
    harness_losses = [e["loss"] for e in record["epochs"]]
    for like in ((), ("imports", "mmap", "progress", "trainer")):
        out = harness_overhead.run_bare(sys.executable, prepared, "cnn", 2, like + ("env",) if like else (), env,
                                        fingerprint=not like)
        np.testing.assert_allclose([e["loss"] for e in out["epochs"]], harness_losses, rtol=1e-5,
                                   err_msg=f"--like {like}")
        assert len(out["epochs"]) == 2 and all(e["seconds"] > 0 for e in out["epochs"])
        if like:
            assert out["like"] == ["imports", "mmap", "progress", "trainer"] and out["progress_events"] >= 2
        else:
            fp = out["fingerprint"]
            assert fp["torch_threads"] == out["threads"] and fp["affinity"] and not fp["flush_denormal_torch"]
            assert isinstance(fp["libraries"], list) and fp["modules"] > 100


def test_arms_are_checked():
    assert harness_overhead.parse_arm("bare:mmap+imports") == ("bare", ("mmap", "imports"))
    assert harness_overhead.parse_arm("bare:all") == ("bare", harness_overhead.TOGGLES)
    assert harness_overhead.parse_arm("harness:tty") == ("harness", ("tty",))
    for bad in ("bare:fast", "harness:mmap", "script"):
        with pytest.raises(SystemExit, match="error: arm"):
            harness_overhead.parse_arm(bad)
    assert harness_overhead.differences({"worker": {"a": 1, "b": 2}, "bare": {"a": 1, "b": 3}}) == {
        "b": {"worker": 2, "bare": 3}}
