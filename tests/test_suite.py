"""Suites: definitions expand as written, runs interleave, and a suite killed midway resumes to every sample once."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import REPO, children, harness
from harness import results, schedule
from harness.errors import UsageError
from harness.registry import FRAMEWORKS

TINY = {"data": "synthetic", "samples": 128, "epochs": 2}


def write_suite(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_expansion_and_option_precedence(tmp_path):
    f = write_suite(tmp_path / "s.toml", """
repeats = 2
models = ["cnn"]
implementations = ["python/pytorch", "python/keras", { impl = "python/pytorch", compile = true, samples = 256 }]
[options]
data = "synthetic"
samples = 128
epochs = 5
[setups.short]
epochs = 2
[setups.seeded]
seed = 7
""")
    suite = schedule.load(str(f), check_runnable=False)
    assert (suite.name, suite.repeats) == ("s", 2)
    labels = Counter((e.impl.label, e.setup) for e in suite.entries)
    assert len(suite.entries) == 10  # (pytorch + 3 keras backends + compiled pytorch) x 2 setups
    assert labels[("python/keras[jax]/cnn", "short")] == 1 and labels[("python/pytorch/cnn", "seeded")] == 2
    compiled = [e for e in suite.entries if e.request.setup.compile]
    assert len(compiled) == 2 and all(e.request.samples == 256 for e in compiled)  # implementation over options
    assert {e.request.epochs for e in suite.entries if e.setup == "short"} == {2}  # setup over options
    assert {(e.request.epochs, e.request.seed) for e in suite.entries if e.setup == "seeded"} == {(5, 7)}
    assert "--backend" in suite.entries[1].run_args and "--compile" in compiled[0].run_args
    # command-line overrides beat everything; --model replaces the suite's models
    over = schedule.load(str(f), models=["rnn", "cnn"], overrides={"samples": 512}, check_runnable=False)
    assert {e.request.samples for e in over.entries} == {512} and len(over.entries) == 20
    assert [e.impl.model for e in over.entries][:5] == ["rnn"] * 5
    # different options, different plan: a resumed run never stands in for another configuration
    assert len({e.plan("s", 0)["config"] for e in suite.entries}) == 10
    # round-robin: every entry once in repeat 0, then every entry in repeat 1
    assert [r for _, r in suite.schedule()] == [0] * 10 + [1] * 10


def test_per_model_options(tmp_path):
    f = write_suite(tmp_path / "m.toml", """
implementations = ["python/pytorch"]
[options]
samples = 2048
epochs = 3
[models.cnn]
samples = 512
[models.rnn]
""")
    suite = schedule.load(str(f), check_runnable=False)
    assert {e.impl.model: (e.request.samples, e.request.epochs) for e in suite.entries} == {"cnn": (512, 3),
                                                                                       "rnn": (2048, 3)}
    assert [e.impl.model for e in schedule.load(str(f), models=["rnn"], check_runnable=False).entries] == ["rnn"]


@pytest.mark.parametrize("text, message", [
    ('models = ["cnn"]\nimplementations = ["python/pytorch"]\ncolour = "red"', "unknown key(s) colour"),
    ('models = ["vgg"]\nimplementations = ["python/pytorch"]', "unknown model 'vgg'"),
    ('models = ["cnn"]\nimplementations = ["pytorch/cnn/extra"]', "write it as lang/framework"),
    ('models = ["cnn"]\nimplementations = ["python/theano"]', "unknown framework 'theano'"),
    ('models = ["cnn"]\nimplementations = ["python/pytorch"]\n[options]\ncolour = 1',
     "unknown option 'colour'; choices: batch_size, compile, data"),
    ('models = ["cnn"]\nimplementations = ["python/pytorch"]\n[options]\nepochs = 0', "0 must be at least 1"),
    ('models = ["cnn"]\nimplementations = ["python/pytorch"]\n[options]\nmodel = "rnn"', "set by the suite itself"),
    ('models = ["cnn"]\nimplementations = ["python/pytorch", "python/pytorch"]', "appears twice"),
    ('repeats = 0\nmodels = ["cnn"]\nimplementations = ["python/pytorch"]', "repeats must be"),
    ('models = ["cnn"]\nimplementations = []', "no implementations"),
    ('models = ["cnn"\n', "not valid TOML"),
])
def test_bad_suite_files_say_what_is_wrong(tmp_path, text, message):
    f = write_suite(tmp_path / "bad.toml", text)
    with pytest.raises(UsageError) as e:
        schedule.load(str(f), check_runnable=False)
    assert message in str(e.value) and str(f) in str(e.value)


def test_what_cannot_run_here_is_skipped_with_its_reason(tmp_path):
    f = write_suite(tmp_path / "s.toml", 'models = ["cnn"]\nimplementations = ["python/cntk", "python/pytorch"]\n'
                    '[setups.gpu]\ndevice = "cuda"\n[setups.cpu]\ndevice = "cpu"')
    suite = schedule.load(str(f))
    skipped = dict(suite.skipped)
    assert skipped["python/cntk/cnn (cpu)"].startswith("retired:")
    if not os.path.exists("/dev/nvidia0"):
        assert "no NVIDIA GPU" in skipped["python/pytorch/cnn (gpu)"]
    assert [(e.impl.label, e.setup) for e in suite.entries][-1] == ("python/pytorch/cnn", "cpu")


def test_published_suites_parse_and_python_cnn_covers_the_python_matrix():
    for path in sorted(schedule.SUITES_DIR.glob("*.toml")):
        assert schedule.load(str(path), check_runnable=False).entries, path
    suite = schedule.load("python-cnn", check_runnable=False)
    python = {f.name for f in FRAMEWORKS if f.lang == "python" and not f.retired}
    assert {e.impl.name for e in suite.entries} == python
    assert {e.impl.backend for e in suite.entries if e.impl.name == "keras"} == {"tensorflow", "jax", "torch"}
    assert {e.impl.model for e in schedule.load("python-cnn", models=["rnn"], check_runnable=False).entries} == {"rnn"}


def test_unknown_suite_is_a_usage_error(capsys):
    from harness.cli import main

    assert main(["suite", "no-such-suite"]) == 2
    assert "no suite file 'no-such-suite'; choices: " in capsys.readouterr().err


# ---- real runs --------------------------------------------------------------------------------

PREFERENCE = ["python/pytorch", "python/mxnet", "python/tensorflow", "python/keras[torch]", "python/jax",
              "python/pytensor"]  # quickest to start first


def runnable_three() -> list[str]:
    from harness import runtimes
    from harness.registry import select

    chosen = []
    for label in PREFERENCE:
        m = schedule.LABEL.match(label)
        impls = select(m["lang"], m["framework"], m["backend"])
        if impls and all(runtimes.availability(i) is None for i in impls if i.model in ("cnn", "rnn")):
            chosen.append(label)
    return chosen[:3]


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().split("\0")
    except OSError:
        return []


def test_suite_killed_midway_resumes_with_every_sample_once(data_cache, tmp_path):
    impls = runnable_three()
    if len(impls) < 3:
        pytest.skip(f"needs 3 runnable implementations of cnn and rnn; runnable here: {impls}")
    options = "\n".join(f"{k} = {json.dumps(v)}" for k, v in TINY.items())
    f = write_suite(tmp_path / "kill-me.toml", f'repeats = 2\nmodels = ["cnn", "rnn"]\n'
                    f"implementations = {json.dumps(impls)}\n[options]\n{options}\n")
    out = tmp_path / "store"
    total = 3 * 2 * 2  # implementations x models x repeats
    env = dict(os.environ, DL_ROSETTA_DATA=str(data_cache))
    proc = subprocess.Popen([sys.executable, "-m", "harness", "suite", str(f), "--out", str(out), "--quiet"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 900
        while len(list(out.glob("*.json"))) < total // 2:
            assert proc.poll() is None, f"the suite ended before it was killed: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "the suite took too long"
            time.sleep(0.1)
    finally:  # a power cut: the suite and its running worker die at once, nothing gets to clean up
        workers = children(proc.pid)
        job_dirs = [Path(a).parent for pid in workers for a in _cmdline(pid) if a.endswith("job.json")]
        proc.send_signal(signal.SIGKILL)
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
        for pid in workers:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        for d in job_dirs:  # the killed suite could not remove its worker's job folder
            shutil.rmtree(d, ignore_errors=True)
    before = {p.name: p.read_bytes() for p in out.glob("*.json")}
    assert total // 2 <= len(before) < total

    done = harness("suite", str(f), "--out", str(out), "--resume", "--quiet", "--format", "json", cache=data_cache)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["runs"] == total and summary["resumed"] == len(before) and not summary["failed"]

    # every sample exactly once, nothing measured before the kill lost or rewritten
    index = results.index(out)
    ok = index[index["status"] == "ok"]
    assert len(ok) == total and ok["suite"].eq("kill-me").all()
    assert Counter(zip(ok["plan"], ok["plan_repeat"])).most_common(1)[0][1] == 1
    assert Counter(ok["label"]) == {f"{i}/{m}": 2 for i in impls for m in ("cnn", "rnn")}
    assert all(sorted(g) == [0, 1] for _, g in ok.groupby("label")["plan_repeat"])
    assert {p.name: p.read_bytes() for p in out.glob("*.json") if p.name in before} == before
    frame = results.load(out)
    assert len(frame[frame["status"] == "ok"]) == total * 2  # two epochs per run

    again = harness("suite", str(f), "--out", str(out), "--resume", "--dry-run", cache=data_cache)
    assert f"{total} already in" in again.stderr and "0 to run" in again.stderr

    report = harness("report", str(out), "--out", str(tmp_path / "report"), cache=data_cache)
    assert report.returncode == 0, report.stderr[-3000:]
    table = (tmp_path / "report" / "table.md").read_text()
    assert "| Framework | cnn s/epoch" in table and table.count(", n 2/2") == 6  # 3 implementations x 2 models
    assert list((tmp_path / "report").glob("bars-*.png")) and (tmp_path / "report" / "index.html").exists()


def test_run_resume_runs_only_what_is_missing(data_cache, tmp_path):
    args = ["--framework", "pytorch", "--model", "rnn", "--data", "synthetic", "--samples", "128", "--epochs", "2",
            "--quiet", "--out", str(tmp_path)]
    assert harness(*args, cache=data_cache).returncode == 0
    first = {p.name for p in tmp_path.glob("*.json")}
    proc = harness(*args, "--repeats", "2", "--resume", cache=data_cache)
    assert proc.returncode == 0, proc.stderr[-2000:]
    index = results.index(tmp_path)
    assert len(index) == 2 and sorted(index["plan_repeat"]) == [0, 1]
    assert first < {p.name for p in tmp_path.glob("*.json")}  # the first record is kept, one is added
    assert re.search(r"^PyTorch \S+( ⚑)?\s+rnn\s+cpu ×1 fp32\s.*\s2/2$", proc.stdout, re.M), proc.stdout  # one row, both runs
