#!/usr/bin/env julia
# Start a DL Rosetta run from Julia: the same harness (python -m harness), with the Julia
# implementations as the default selection.
#
#   julia julia_models/run.jl --model cnn --framework flux --data synthetic --samples 512 --epochs 2
#   julia julia_models/run.jl list --lang julia
#   julia julia_models/run.jl check --model cnn --lang julia
#
# Options without a verb are a run: --lang julia is added unless given (every Julia framework runs
# unless --framework names one). A verb (list, check, report, ...) passes through unchanged. The
# harness's output, its records and its exit code are this script's.
#
# The harness it calls: ENV["DL_ROSETTA_PYTHON"] (a Python with the harness), else the checkout's
# .venv/bin/python (python3 -m harness setup --julia), else the `dl-rosetta` command on the PATH.
# The harness hosts the Julia models itself, through juliacall, in a fresh worker per run.

const USAGE = """
usage: julia julia_models/run.jl [VERB] [OPTIONS]   (options without a verb: a run of the Julia implementations)
  julia julia_models/run.jl --model cnn --framework flux --data synthetic --samples 512 --epochs 2
  julia julia_models/run.jl list --lang julia
  julia julia_models/run.jl run --help            (every option of a run)
"""

function harness_args(args::Vector{String})
    isempty(args) && return nothing
    if startswith(args[1], "-") && !(args[1] in ("-h", "--help", "--version"))
        args = "--lang" in args ? args : vcat(["--lang", "julia"], args)
        return vcat(["run"], args)
    end
    return args
end

function harness_command(args::Vector{String})
    root = dirname(@__DIR__)  # the checkout: julia_models/..
    python = get(ENV, "DL_ROSETTA_PYTHON", "")
    venv = joinpath(root, ".venv", "bin", "python")
    if isempty(python) && isfile(venv)
        python = venv
    end
    env = copy(ENV)
    if !isempty(python)
        if isfile(joinpath(root, "harness", "cli.py"))  # the checkout's harness first
            old = get(ENV, "PYTHONPATH", "")
            env["PYTHONPATH"] = isempty(old) ? root : root * ":" * old
        end
        return setenv(`$python -m harness $args`, env)
    end
    exe = Sys.which("dl-rosetta")
    exe === nothing && return nothing
    return setenv(`$exe $args`, env)
end

function main()
    args = harness_args(copy(ARGS))
    if args === nothing
        print(USAGE)
        return 0
    end
    cmd = harness_command(args)
    if cmd === nothing
        println(stderr, "error: no harness found: set DL_ROSETTA_PYTHON, run `python3 -m harness setup --julia` ",
                "in the checkout, or pip install dl-rosetta")
        return 2
    end
    return run(ignorestatus(cmd)).exitcode
end

exit(main())
