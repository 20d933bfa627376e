"""R and Julia users start runs from their own language: r_models/run.R and julia_models/run.jl call
the same harness with their language's implementations as the default selection.

run.R is run here with Rscript (without training: a run through it is the harness's own, tested in
test_r.py; its cost would be a minute). run.jl is checked statically, since Julia is not installed
where CI runs: it must parse, and it must build the same command line as run.R."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from conftest import REPO

RSCRIPT = shutil.which("Rscript")
needs_r = pytest.mark.skipif(RSCRIPT is None, reason="R is not installed (python3 -m harness setup --r)")


def rscript(*args, env=None, script=REPO / "r_models" / "run.R"):
    return subprocess.run([RSCRIPT, str(script), *args], capture_output=True, text=True, timeout=300,
                          env=env or dict(os.environ), cwd=REPO.parent)  # not the checkout: from anywhere


@needs_r
def test_run_r_without_arguments_prints_its_usage():
    proc = rscript()
    assert proc.returncode == 0 and proc.stdout.startswith("usage: Rscript r_models/run.R")


@needs_r
def test_run_r_passes_verbs_and_output_through():
    proc = rscript("list", "--lang", "r", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert rows and {r["lang"] for r in rows} == {"r"}


@needs_r
@pytest.mark.parametrize("args, message", [
    (["--framework", "pytorch", "--model", "cnn"], "unknown framework 'pytorch' for --lang r; choices: keras"),
    (["--backend", "cntk", "--model", "cnn"], "unknown backend 'cntk' for keras; choices: jax, tensorflow, torch"),
    (["--model", "vgg"], "unknown model 'vgg'; choices: cnn, resnet50, rnn"),
])
def test_run_r_runs_the_r_implementations_and_keeps_the_exit_code(args, message):
    """The harness's own refusals show what run.R asked for: --lang r, --framework keras."""
    proc = rscript(*args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


@needs_r
def test_run_r_without_a_harness_says_how_to_get_one(tmp_path):
    alone = tmp_path / "r_models" / "run.R"  # a copy with no checkout around it
    alone.parent.mkdir()
    shutil.copy(REPO / "r_models" / "run.R", alone)
    env = {k: v for k, v in os.environ.items() if k != "DL_ROSETTA_PYTHON"}
    env["PATH"] = os.path.dirname(RSCRIPT)  # no dl-rosetta on it
    proc = rscript("--model", "cnn", env=env, script=alone)
    assert proc.returncode == 2 and "error: no harness found" in proc.stderr


def test_run_jl_parses_and_builds_the_same_command_line():
    import tree_sitter
    import tree_sitter_julia

    source = (REPO / "julia_models" / "run.jl").read_bytes()
    parser = tree_sitter.Parser(tree_sitter.Language(tree_sitter_julia.language()))
    assert not parser.parse(source).root_node.has_error
    assert parser.parse(b"function f(x)\n  x +\n").root_node.has_error  # the check can fail
    text = source.decode()
    for part in ('vcat(["--lang", "julia"], args)', 'vcat(["run"], args)', '`$python -m harness $args`',
                 'get(ENV, "DL_ROSETTA_PYTHON", "")', 'joinpath(root, ".venv", "bin", "python")',
                 'Sys.which("dl-rosetta")', "exit(main())", "ignorestatus(cmd)"):
        assert part in text, part
    r = (REPO / "r_models" / "run.R").read_text()  # the same rules as run.R
    for part in ('c("--lang", "r", args)', 'c("run", args)', 'c("-m", "harness", args)', 'Sys.getenv("DL_ROSETTA_PYTHON")',
                 'file.path(root, ".venv", "bin", "python")', 'Sys.which("dl-rosetta")'):
        assert part in r, part
