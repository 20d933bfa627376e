"""The command line as a user meets it: records, tables, and one clear line for every bad input."""
from __future__ import annotations

import json

import pytest

from conftest import harness, harness_json
from harness.registry import IMPLEMENTATIONS

TINY = ["--data", "synthetic", "--samples", "128", "--epochs", "2", "--quiet"]


def test_run_json_record_has_epochs_timing_and_environment(data_cache, tmp_path):
    proc, record = harness_json("--lang", "python", "--framework", "pytorch", "--model", "cnn", *TINY,
                                "--out", str(tmp_path), cache=data_cache)
    assert proc.returncode == 0, proc.stderr
    assert len(record["epochs"]) == 2
    for e in record["epochs"]:
        assert e["seconds"] > 0 and e["examples_per_s"] == pytest.approx(e["examples"] / e["seconds"])
        assert e["examples"] == 128 and e["steps"] == 2
    t = record["timing"]
    for key in ("startup_s", "import_s", "build_s", "data_s", "first_epoch_s", "steady_s_per_epoch", "eval_s"):
        assert t[key] is not None and t[key] >= 0, key
    assert record["memory"]["peak_rss_bytes"] > 0
    env = record["environment"]
    assert env["cores"] >= 1 and env["cpu"] and env["python"]
    assert "commit" in env["git"]
    assert record["versions"]["torch"].startswith("2.13")
    assert set(record["data_manifest"]["arrays"]) == {"x_train", "y_train", "x_test", "y_test"}
    assert record["command"].startswith("python -m harness")
    # the record and the tidy epoch table are on disk
    saved = json.loads((tmp_path / f"{record['run_id']}.json").read_text())
    assert saved["run_id"] == record["run_id"]
    import pandas as pd

    table = pd.read_csv(tmp_path / f"{record['run_id']}.epochs.csv")
    assert list(table["epoch"]) == [0, 1] and {"seconds", "examples_per_s", "framework", "cpu"} <= set(table)


def test_table_format_and_results_load(data_cache, tmp_path):
    proc = harness("--framework", "pytorch", "--model", "rnn", *TINY, "--repeats", "2", "--out", str(tmp_path),
                   cache=data_cache)
    assert proc.returncode == 0, proc.stderr
    assert "PyTorch" in proc.stdout and "s/epoch" in proc.stdout and "tokens/s" in proc.stdout
    from harness import results

    frame = results.load(tmp_path)
    assert len(frame) == 4 and sorted(frame["repeat"].unique()) == [0, 1]
    assert frame["warmup"].sum() == 2


def test_list_shows_every_implementation_with_a_reason(data_cache):
    proc = harness("list", "--format", "json", cache=data_cache)
    assert proc.returncode == 0
    rows = json.loads(proc.stdout)
    assert len(rows) == len(IMPLEMENTATIONS)
    for row in rows:
        assert row["runnable"] in ("yes", "no")
        assert (row["runnable"] == "yes") == (row["reason"] == ""), row
    retired = [r for r in rows if r["framework"] in ("cntk", "caffe2")]
    assert retired and all(r["reason"].startswith("retired:") for r in retired)
    assert any(r["framework"] == "pytorch" and r["runnable"] == "yes" for r in rows)


@pytest.mark.parametrize("args, message", [
    (["--model", "vgg"], "unknown model 'vgg'; choices: cnn, resnet50, rnn"),
    (["--lang", "go"], "unknown language 'go'; choices: python, r, julia"),
    (["--framework", "theano"], "unknown framework 'theano' for --lang python; choices:"),
    (["--framework", "pytorch", "--backend", "jax"], "--backend 'jax' given, but pytorch has no backends"),
    (["--framework", "keras", "--backend", "cntk"], "unknown backend 'cntk' for keras; choices: jax, tensorflow, torch"),
    (["--framework", "cntk"], "python/cntk/cnn cannot run here: retired:"),
    (["--framework", "pytorch", "--data", "mnist"], "unknown data 'mnist'"),
    (["--framework", "pytorch", "--device", "cuda"], "--device cuda: no NVIDIA GPU found here"),
    (["--framework", "pytorch", "--precision", "fp16"], "--precision fp16 needs --device cuda"),
    (["--framework", "chainer", "--model", "cnn", "--gpus", "2"],
     "--gpus 2: python/chainer/cnn has no multi-device path"),
    (["--framework", "pytorch", "--nodes", "2"], "--nodes 2 with python/pytorch/cnn needs --rdzv-endpoint HOST:PORT"),
    (["--framework", "jax", "--nodes", "2", "--rdzv-endpoint", "h:29500"],
     "--nodes 2 with python/jax/cnn needs --node-rank R"),
    (["--framework", "jax", "--nodes", "2", "--node-rank", "2", "--rdzv-endpoint", "h:1"],
     "--node-rank 2: choices with --nodes 2: 0 .. 1"),
    (["--framework", "tensorflow", "--nodes", "2", "--node-rank", "0"],
     "--nodes 2 with python/tensorflow/cnn needs --workers HOST:PORT,..."),
    (["--framework", "tensorflow", "--nodes", "3", "--node-rank", "0", "--workers", "a:1,b:1"],
     "--workers names 2 address(es) (a:1,b:1); --nodes 3 needs one per node"),
    (["--framework", "tensorflow", "--workers", "a:1,b"], "argument --workers: 'b' is not HOST:PORT"),
    (["--framework", "keras", "--backend", "tensorflow", "--nodes", "2", "--node-rank", "0"],
     "--nodes 2: python/keras[tensorflow]/cnn has no multi-node launch here; choices: pytorch, tensorflow, keras[jax], jax"),
    (["--framework", "pytorch", "--epochs", "0"], "argument --epochs: 0 must be at least 1"),
    (["--framework", "pytorch", "--samples", "many"], "argument --samples: 'many' is not a whole number"),
    (["--framework", "pytorch", "--format", "xml"], "argument --format: invalid choice: 'xml'"),
])
def test_bad_input_is_one_clear_line_and_exit_2(data_cache, args, message):
    proc = harness(*args, cache=data_cache)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_data_without_network_is_a_clear_error(tmp_path):
    # an empty cache, no network: cifar10 cannot be downloaded here
    proc = harness("--framework", "pytorch", "--model", "cnn", "--data", "cifar10", "--quiet", cache=tmp_path)
    assert proc.returncode == 2
    assert "cannot download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_default_verb_is_run_and_help_lists_verbs(data_cache):
    """Every verb is listed with the start of its description (not just "run" somewhere, which
    "prune" or a usage line would satisfy)."""
    from harness.cli import VERBS

    proc = harness("--help", cache=data_cache)
    assert proc.returncode == 0, proc.stderr
    flat = " ".join(proc.stdout.split())  # help wraps long lines
    for verb, text in VERBS.items():
        assert f"{verb} {' '.join(text.split()[:4])}" in flat, f"{verb!r} is not listed with its description"


def test_bare_invocation_prints_help_and_starts_nothing(data_cache):
    proc = harness(cache=data_cache)
    assert proc.returncode == 0 and proc.stdout.startswith("usage:") and "verbs:" in proc.stdout
    assert "examples:" in proc.stdout and "exit codes:" in proc.stdout and proc.stderr == ""


@pytest.mark.parametrize("argv, message", [
    (["lst"], "error: invalid choice: 'lst' is not a verb; choose from run, infer, list, setup, weights, predict, check, "
              "suite, report, compare (did you mean 'list'?)"),
    (["list", "--formt", "json"], "error: unrecognized arguments: --formt json (did you mean --format?)"),
    (["--fram", "pytorch"], "error: unrecognized arguments: --fram pytorch"),  # no abbreviations
    (["report", "--form", "csv"], "error: unrecognized arguments: --form (did you mean --format?)"),
    (["compare", "a", "b", "--alpha", "5"], "error: argument --alpha: 5 is out of range: give a level between 0 and 1"),
])
def test_usage_errors_are_one_line_exit_2(argv, message, capsys):
    from harness.cli import main

    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith(message) and err.count("\n") == 1, err


def test_version(capsys):
    from harness import __version__
    from harness.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.startswith(f"dl-rosetta {__version__}")


def test_every_verb_has_examples_exit_codes_and_described_formats():
    from harness.cli import VERBS, build_parser

    parser = build_parser("dl-rosetta")
    assert parser.allow_abbrev is False
    for verb, p in parser.verbs.items():
        assert p.allow_abbrev is False, verb
        text = p.format_help()
        assert "examples:\n  dl-rosetta " in text or verb == "setup", verb
        assert "exit codes: 0 success" in text, verb
        for action in p._actions:
            if verb in ("setup", "list", "report", "compare"):
                assert action.help, f"{verb} {action.option_strings or action.dest} has no help"
            if "--format" in action.option_strings:
                for choice in action.choices:  # every format says what it gives
                    assert f"{choice}:" in action.help, (verb, choice, action.help)
    assert set(VERBS) == set(parser.verbs)


def test_check_help_names_the_checks_it_has():
    from harness.cli import VERBS, build_parser
    from harness.equivalence import CHECKS

    checks_help = next(a.help for a in build_parser().verbs["check"]._actions if "--checks" in a.option_strings)
    for check in CHECKS:
        assert check in VERBS["check"] and check in checks_help
