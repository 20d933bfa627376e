"""Claims the README makes about the harness, each tested: one clock around train_epoch, one fresh
worker process per run, and a store a killed run cannot leave half-written."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import types

from conftest import REPO

from harness import benchmark, results

TINY = ["--framework", "pytorch", "--model", "cnn", "--data", "synthetic", "--samples", "256", "--quiet"]


class FakeClock:
    """time.monotonic for harness.benchmark: advances only when a test says so."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


class KnownDurationTrainer:
    """Takes exactly `step_s` of the fake clock per step; its barrier takes 100 s (outside the clock)."""

    def __init__(self, clock, step_s):
        self.clock, self.step_s, self.calls = clock, step_s, []

    def barrier(self):
        self.calls.append("barrier")
        self.clock.now += 100.0

    def train_epoch(self, batches):
        self.calls.append("train_epoch")
        out = []
        for _ in batches:
            self.clock.now += self.step_s
            out.append(0.5)
        return out


def test_one_clock_reading_either_side_of_train_epoch(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(benchmark, "time", types.SimpleNamespace(monotonic=clock.monotonic))
    trainer = KnownDurationTrainer(clock, 0.25)
    rows = benchmark.timed_epochs(trainer, n=640, batch_size=64, seed=0, count=3)
    assert trainer.calls == ["barrier", "train_epoch"] * 3  # replicas meet before the clock starts
    for e, row in enumerate(rows):
        assert row["epoch"] == e and row["steps"] == 10 and row["examples"] == 640
        assert row["seconds"] == 10 * 0.25  # exactly the trainer's time: not the barrier's, nothing else's
        assert row["examples_per_s"] == 640 / 2.5


def test_recorded_seconds_hold_the_trainers_time_end_to_end(stub_worker, data_cache, tmp_path, capsys):
    """Through a real worker and the record: a trainer that sleeps 0.05 s per step (4 steps per epoch)
    is recorded with at least that time per epoch, and the summary is computed from those epochs."""
    from harness.cli import main

    stub_worker("sleep-steps", STUB_STEP_S=0.05)
    assert main([*TINY, "--epochs", "3", "--out", str(tmp_path), "--format", "json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["status"] == "ok" and record["info"]["step_s"] == 0.05
    for e in record["epochs"]:
        assert e["steps"] == 4 and e["seconds"] >= 4 * 0.05  # the clock wraps the whole call
        assert e["examples_per_s"] == e["examples"] / e["seconds"]
    t = record["timing"]
    assert t["first_epoch_s"] == record["epochs"][0]["seconds"]
    assert t["steady_s_per_epoch"] == statistics.median(e["seconds"] for e in record["epochs"][1:])
    assert record["data_seen"]["match"] and t["verify_s"] >= 0


def test_every_repeat_gets_a_fresh_worker_process(stub_worker, data_cache, tmp_path, capsys):
    from harness.cli import main

    stub_worker("sleep-steps", STUB_STEP_S=0.0)
    assert main([*TINY, "--epochs", "1", "--repeats", "3", "--out", str(tmp_path), "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in records] == ["ok"] * 3
    pids = [r["info"]["pid"] for r in records]
    assert len(set(pids)) == 3 and os.getpid() not in pids, pids
    assert not any(os.path.exists(f"/proc/{p}") and "Z" not in open(f"/proc/{p}/stat").read().split(")")[1][:3]
                   for p in pids), "a worker outlived its run"


def test_a_run_killed_between_its_temp_file_and_the_link_leaves_nothing_and_resume_reruns_it(data_cache, tmp_path):
    """Fault injection: the harness is SIGKILLed after the record's temporary file is written and
    before it is linked into place. No partial record is visible to any reader; --resume runs it again."""
    import worker_stubs

    out = tmp_path / "out"
    env = dict(os.environ, DL_ROSETTA_DATA=str(data_cache), WORKER_STUB="sleep-steps", STUB_STEP_S="0",
               STUB_DIR=str(tmp_path), PYTHONPATH=str(REPO))
    args = worker_stubs.driver_argv(*TINY, "--epochs", "2", "--out", str(out), "--resume")
    killed = subprocess.run(args, cwd=REPO, env={**env, "KILL_AT_LINK": "1"}, capture_output=True, text=True,
                            timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    left = sorted(p.name for p in out.iterdir() if p.is_file())
    assert [n for n in left if n.endswith(".json") and not n.startswith(".")] == [], left
    assert any(n.startswith(".") and n.endswith(".tmp") for n in left), left  # the write that never got linked
    records, skipped = results.scan([out])
    assert records == [] and skipped == []
    resumed = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    (record,) = results.read_records([out])
    assert record["status"] == "ok" and len(record["epochs"]) == 2
    again = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and len(results.read_records([out])) == 1  # now it is done: skipped


def test_a_record_never_claims_bytes_its_worker_did_not_see(stub_worker, data_cache, tmp_path, capsys, monkeypatch):
    """The parent's check passed (here: skipped), then a byte changed: the worker's own digest of what
    it mapped differs from the manifest, and the run fails naming the file instead of recording it ok."""
    from harness.cli import main
    from harness.data import cache

    stub_worker("sleep-steps", STUB_STEP_S=0.0)
    cache_dir = tmp_path / "cache"
    assert main([*TINY, "--epochs", "1", "--out", str(tmp_path / "a"), "--data-dir", str(cache_dir),
                 "--format", "json"]) == 0
    good = json.loads(capsys.readouterr().out)
    assert good["data_seen"]["match"]
    assert good["data_seen"]["sha256"] == {k: v["sha256"] for k, v in good["data_manifest"]["arrays"].items()}
    x = next((cache_dir / "prepared").glob("synthetic-*")) / "x_test.npy"
    blob = bytearray(x.read_bytes())
    blob[-1] ^= 0x01
    x.write_bytes(bytes(blob))
    monkeypatch.setattr(cache, "verify", lambda folder, manifest: {})  # as if the file changed right after
    assert main([*TINY, "--epochs", "1", "--out", str(tmp_path / "b"), "--data-dir", str(cache_dir),
                 "--format", "json"]) == 1
    bad = json.loads(capsys.readouterr().out)
    assert bad["status"] == "failed" and "DataMismatch" in bad["error"] and "x_test.npy does not match" in bad["error"]
    assert not bad["data_seen"]["match"] and bad["epochs"] == []
