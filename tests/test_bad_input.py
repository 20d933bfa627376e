"""Bad input is refused in the parent, before any worker starts: one line naming the bad value and
the choices or the fix, exit code 2, no traceback.

One row per bad input (the next one found is one more row). Each row runs the real command line
(`harness.cli.main`) in this process with `harness.launch.run_job` replaced by a failure: a row
that starts a worker fails. `line` is the essential part of the error line; where argparse itself
refuses a value (`argparse=True`) the framing around it is the CLI's (harness/cli.py), so only
the line and the exit code are checked. test_cli.py holds the older rows (unknown names, setups).
"""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

from harness import data, launch
from harness.data import cache, memory
from harness.specs import CNN

RUN = ["--framework", "pytorch", "--model", "cnn", "--data", "synthetic", "--samples", "128", "--epochs", "1",
       "--quiet", "--out", "{out}", "--data-dir", "{cache}"]
PREPARED = "{cache}/prepared/synthetic-v2-images-n128-t256-seed0"


@dataclass(frozen=True)
class Row:
    id: str
    args: list[str]  # "{name}" is replaced by the path of the fixture file `name` (see context below)
    line: str  # what the one line must say
    argparse: bool = False  # refused by argparse (a value type or an unknown option)
    one_line: bool = True  # False where the command prints something first (suite's plan line)
    memory: int | None = None  # bytes of available memory this machine pretends to have
    damage: str | None = None  # what to do to the prepared data first (see DAMAGE)
    extra: dict = field(default_factory=dict)


def run_with(*extra: str, drop: tuple = ()) -> list[str]:
    """RUN with `drop` options (and their values) removed and `extra` appended."""
    args, i = [], 0
    while i < len(RUN):
        if RUN[i] in drop:
            i += 2
            continue
        args.append(RUN[i])
        i += 1
    return args + list(extra)


ROWS = [
    # ---- the prepared-data cache proves its bytes
    Row("cache-flipped-byte", RUN, "x_train.npy does not match its manifest", damage="flip"),
    Row("cache-manifest-shape", RUN, "its manifest says float32 (100000, 3, 32, 32)", damage="shape"),
    Row("cache-manifest-not-json", RUN, "manifest.json is damaged (not valid JSON", damage="not-json"),
    Row("cache-manifest-no-digest", RUN, "manifest.json is damaged (x_train: sha256", damage="no-digest"),
    Row("cache-manifest-missing", RUN, "manifest.json is missing", damage="no-manifest"),
    Row("cache-array-truncated", RUN, "(truncated or appended to)", damage="truncate"),
    Row("cache-array-missing", RUN, "y_test.npy is missing", damage="no-array"),
    Row("cache-array-dtype", RUN, "x_train.npy holds float64 (128, 3, 32, 32), its manifest says float32",
        damage="dtype"),
    # ---- sizes
    Row("samples-beyond-synthetic-max", run_with("--samples", "100000000000", drop=("--samples",)),
        "--samples 100,000,000,000: a synthetic set holds at most 1,000,000 training examples"),
    Row("samples-beyond-memory", run_with("--samples", "500000", drop=("--samples",)),
        "the synthetic arrays (500,000 + 10,000 test examples) need 12.5 GB in memory; this machine has 1.0 GB available; choose fewer --samples", memory=10**9),
    Row("image-size-beyond-memory", run_with("--model", "resnet50", "--image-size", "224", drop=("--model",)),
        "the arrays a worker is handed (128 training and 256 test examples at 224 px) need 231.2 MB in memory",
        memory=2 * 10**8),
    Row("samples-below-batch", run_with("--samples", "32", drop=("--samples",)), "--samples 32 is below the batch size 64"),
    Row("batch-beyond-examples", run_with("--batch-size", "256"),
        "--batch-size 256: a global batch of 256 exceeds the 128 training examples of synthetic"),
    Row("weak-global-batch-beyond-examples", run_with("--gpus", "2", "--batch-size", "128"),
        "--batch-size 128 x 2 replicas: a global batch of 256 exceeds the 128 training examples"),
    Row("cpu-replicas-beyond-cores", run_with("--gpus", "100000"), "--gpus 100000 with --device cpu starts 100000 CPU "
        "replicas; this machine has"),
    Row("strong-scaling-unknown-model", run_with("--model", "vgg", "--gpus", "2", "--scaling", "strong", drop=("--model",)),
        "unknown model 'vgg'; choices: cnn, resnet50, rnn"),
    Row("strong-batch-does-not-split", run_with("--gpus", "3", "--scaling", "strong"),
        "--scaling strong: the global batch 64 does not split across 3 replicas; choices: a --batch-size divisible by 3"),
    # ---- numbers
    Row("timeout-nan", run_with("--timeout", "nan"), "argument --timeout: 'nan' is not a finite number", argparse=True),
    Row("timeout-inf", run_with("--timeout", "inf"), "argument --timeout: 'inf' is not a finite number", argparse=True),
    Row("timeout-huge", run_with("--timeout", "1e10"), "argument --timeout: 1e+10 s is more than 604800 s (7 days)",
        argparse=True),
    Row("timeout-zero", run_with("--timeout", "0"), "argument --timeout: 0 must be above 0", argparse=True),
    Row("seed-negative", run_with("--seed", "-1"), "argument --seed: -1 is outside 0 .. 4294967295", argparse=True),
    Row("seed-beyond-32-bits", run_with("--seed", "4294967296"), "argument --seed: 4294967296 is outside 0 .. 4294967295",
        argparse=True),
    Row("weights-seed-negative", ["weights", "--framework", "pytorch", "--model", "cnn", "--out", "{out}/w.npz",
                                  "--seed", "-3"], "argument --seed: -3 is outside 0 .. 4294967295", argparse=True),
    Row("check-timeout-inf", ["check", "--model", "cnn", "--timeout", "inf"], "argument --timeout: 'inf' is not a finite",
        argparse=True),
    Row("compare-alpha-5", ["compare", "{out}", "{out}", "--alpha", "5"], "argument --alpha: 5 is out of range: give a level between 0 and 1",
        argparse=True),
    Row("compare-alpha-0", ["compare", "{out}", "{out}", "--alpha", "0"], "argument --alpha: 0 is out of range: give a level between 0 and 1",
        argparse=True),
    # ---- folders and files
    Row("out-is-a-file", run_with("--out", "{file}", drop=("--out",)), "--out {file} is a file, not a folder"),
    Row("data-dir-is-a-file", run_with("--data-dir", "{file}", drop=("--data-dir",)),
        "--data-dir {file} is a file, not a folder"),
    Row("data-is-a-folder", run_with("--data", "{folder}", drop=("--data", "--samples")),
        "--data {folder} is a folder; choices: cifar10, imdb, shakespeare, synthetic or a FILE.npz"),
    Row("data-is-text-for-cnn", run_with("--data", "{text}", drop=("--data", "--samples")),
        "--data {text}: a text file is next-byte data for the transformer; model cnn takes cifar10, synthetic or FILE.npz"),
    Row("data-is-a-text-file", run_with("--data", "{file}", drop=("--data", "--samples")),
        "{file} is not an .npz archive (a zip of .npy arrays"),
    Row("data-is-text-named-npz", run_with("--data", "{text_npz}", drop=("--data", "--samples")),
        "{text_npz} is not an .npz archive"),
    Row("data-npz-missing", run_with("--data", "{folder}/none.npz", drop=("--data", "--samples")),
        "data file {folder}/none.npz does not exist"),
    Row("npz-empty-x-train", run_with("--data", "{empty_train}", drop=("--data", "--samples")),
        "{empty_train}: x_train holds no examples"),
    Row("npz-empty-x-test", run_with("--data", "{empty_test}", drop=("--data", "--samples")),
        "{empty_test}: x_test holds no examples"),
    Row("npz-huge-header", run_with("--data", "{huge}", drop=("--data", "--samples")),
        "{huge}: x_train declares float32 (1000000000000, 3, 32, 32) (12.3 PB) but holds 1.6 MB; the file is damaged"),
    Row("npz-objects", run_with("--data", "{objects}", drop=("--data", "--samples")),
        "{objects}: y_train holds Python objects (pickled)"),
    Row("npz-beyond-memory", run_with("--data", "{good_npz}", drop=("--data", "--samples")),
        "the arrays of {good_npz} need 3.9 MB in memory; this machine has 1.0 MB available", memory=10**6),
    Row("data-for-another-model", run_with("--model", "rnn", "--data", "cifar10", drop=("--model", "--data", "--samples")),
        "model rnn trains on imdb, not cifar10; choices: imdb, synthetic, FILE.npz"),
    # ---- flags a one-node run would ignore
    Row("rdzv-endpoint-one-node", run_with("--rdzv-endpoint", "localhost:29500"),
        "--rdzv-endpoint is for multi-node runs and --nodes is 1"),
    Row("workers-one-node", run_with("--workers", "a:1,b:2"), "--workers is for multi-node runs and --nodes is 1"),
    # ---- no abbreviations, no unknown suite keys
    Row("abbreviated-out", run_with("--ou", "{out}"), "unrecognized arguments: --ou", argparse=True),
    Row("abbreviated-model", run_with("--mod", "rnn"), "unrecognized arguments: --mod", argparse=True),
    Row("suite-abbreviated-key", ["suite", "{suite_ou}", "--dry-run"], "unknown option 'ou'; choices: batch_size,"),
    Row("suite-abbreviated-framework", ["suite", "{suite_fram}", "--dry-run"], "unknown option 'fram'; choices:"),
    Row("suite-unknown-key", ["suite", "{suite_colour}", "--dry-run"], "unknown option 'colour'"),
    Row("suite-controlled-key", ["suite", "{suite_framework}", "--dry-run"], "'framework' is set by the suite itself"),
    Row("suite-out-is-a-file", ["suite", "{suite_ok}", "--out", "{file}", "--data-dir", "{cache}", "--quiet"],
        "--out {file} is a file, not a folder", one_line=False),
    Row("unknown-verb", ["frobnicate"], "frobnicate", argparse=True),
]


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _huge_header(path: Path, good: Path) -> Path:
    """A valid .npz whose x_train header declares 10^12 images (12 PB) over 1.6 MB of data."""
    with zipfile.ZipFile(good) as z, zipfile.ZipFile(path, "w") as out:
        for info in z.infolist():
            blob = z.read(info)
            if info.filename == "x_train.npy":
                header = np.lib.format.header_data_from_array_1_0(np.zeros((128, 3, 32, 32), np.float32))
                header["shape"] = (10**12, 3, 32, 32)
                import io

                buf = io.BytesIO()
                np.lib.format.write_array_header_1_0(buf, header)
                offset = len(blob) - 128 * 3 * 32 * 32 * 4
                blob = buf.getvalue() + blob[offset:]
            out.writestr(info.filename, blob)
    return path


@pytest.fixture
def context(tmp_path):
    """The files the rows name, and a data cache holding one prepared set."""
    rng = np.random.default_rng(0)
    x = rng.random((128, 3, 32, 32), dtype=np.float32)
    y = rng.integers(0, 10, 128)
    folder = tmp_path / "folder"
    folder.mkdir()
    (tmp_path / "notes.csv").write_text("not data\n")
    (tmp_path / "story.txt").write_text("once upon a time\n")
    (tmp_path / "text.npz").write_text("x_train = 1\n")
    good = _npz(tmp_path / "good.npz", x_train=x, y_train=y, x_test=x[:32], y_test=y[:32])
    objects = np.empty(128, dtype=object)
    objects[:] = [[1]] * 128
    suites = {}
    for name, table in (("ou", 'ou = "x"'), ("fram", 'fram = "jax"'), ("colour", 'colour = "red"'),
                        ("framework", 'framework = "jax"'), ("ok", 'data = "synthetic"\nsamples = 128\nepochs = 1')):
        suites[f"suite_{name}"] = tmp_path / f"suite-{name}.toml"
        suites[f"suite_{name}"].write_text(f'models = ["cnn"]\nimplementations = ["python/pytorch"]\n[options]\n{table}\n')
    paths = {
        "out": tmp_path / "out", "cache": tmp_path / "cache", "file": tmp_path / "notes.csv", "text": tmp_path / "story.txt", "folder": folder,
        "text_npz": tmp_path / "text.npz", "good_npz": good,
        "empty_train": _npz(tmp_path / "empty-train.npz", x_train=x[:0], y_train=y[:0], x_test=x, y_test=y),
        "empty_test": _npz(tmp_path / "empty-test.npz", x_train=x, y_train=y, x_test=x[:0], y_test=y[:0]),
        "huge": _huge_header(tmp_path / "huge.npz", good),
        "objects": _npz(tmp_path / "objects.npz", x_train=x, y_train=objects, x_test=x, y_test=y),
        **suites,
    }
    data.prepare("synthetic", CNN, 128, paths["cache"])
    return {k: str(v) for k, v in paths.items()}


def damage(folder: Path, how: str) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    if how == "flip":
        blob = bytearray((folder / "x_train.npy").read_bytes())
        blob[-5] ^= 1
        (folder / "x_train.npy").write_bytes(bytes(blob))
    elif how == "shape":
        manifest["arrays"]["x_train"]["shape"][0] = 100000
        (folder / "manifest.json").write_text(json.dumps(manifest))
    elif how == "not-json":
        (folder / "manifest.json").write_text(json.dumps(manifest)[:-40])
    elif how == "no-digest":
        del manifest["arrays"]["x_train"]["sha256"]
        (folder / "manifest.json").write_text(json.dumps(manifest))
    elif how == "no-manifest":
        (folder / "manifest.json").unlink()
    elif how == "truncate":
        blob = (folder / "x_test.npy").read_bytes()
        (folder / "x_test.npy").write_bytes(blob[:-100])
    elif how == "no-array":
        (folder / "y_test.npy").unlink()
    elif how == "dtype":
        np.save(folder / "x_train.npy", np.load(folder / "x_train.npy").astype(np.float64))
    else:
        raise KeyError(how)


def cli(argv: list[str], capsys) -> tuple[int, str]:
    """`python -m harness ARGV` in this process: (exit code, stderr)."""
    from harness.cli import main

    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's exit
        code = e.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.id)
def test_bad_input_is_one_line_exit_2_before_any_worker(row, context, capsys, monkeypatch):
    def no_worker(job, **kw):
        raise AssertionError(f"a worker started for {row.id}")

    monkeypatch.setattr(launch, "run_job", no_worker)
    if row.memory is not None:
        monkeypatch.setattr(memory, "memory_available", lambda: row.memory)
    if row.damage:
        damage(Path(PREPARED.format(**context)), row.damage)
    code, err = cli([a.format(**context) for a in row.args], capsys)
    assert code == 2, err
    assert row.line.format(**context) in err, err
    assert "Traceback" not in err
    if row.one_line and not row.argparse:  # our own errors: exactly one line
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), err


def test_the_fix_a_line_names_works(context, capsys, monkeypatch):
    """The damaged cache's line says `--refresh`; with it the set is prepared again and verified."""
    folder = Path(PREPARED.format(**context))
    damage(folder, "flip")
    damage(folder, "not-json")
    with pytest.raises(Exception, match="rerun with --refresh"):
        data.prepare("synthetic", CNN, 128, context["cache"])
    prepared = data.prepare("synthetic", CNN, 128, context["cache"], refresh=True)
    assert cache.verify(prepared.folder, prepared.manifest) == dict.fromkeys(cache.ARRAY_NAMES, "stamp")


def test_through_the_real_entry_point(context):
    """Two rows through `python -m harness` itself: the same line, exit 2, no traceback."""
    damage(Path(PREPARED.format(**context)), "flip")
    for args, line in ((RUN, "x_train.npy does not match its manifest"),
                       (run_with("--timeout", "nan"), "'nan' is not a finite number")):
        proc = subprocess.run([sys.executable, "-m", "harness", *(a.format(**context) for a in args)], cwd=REPO,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2 and line in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
