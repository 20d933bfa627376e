#!/usr/bin/env Rscript
# Start a DL Rosetta run from R: the same harness (python -m harness), with the R implementations
# as the default selection.
#
#   Rscript r_models/run.R --model cnn --backend tensorflow --data synthetic --samples 512 --epochs 2
#   Rscript r_models/run.R list --lang r
#   Rscript r_models/run.R check --model cnn --lang r
#
# Options without a verb are a run: --lang r and --framework keras are added unless given (every
# Keras backend runs unless --backend names one). A verb (list, check, report, ...) passes through
# unchanged. The harness's output, its records and its exit code are this script's.
#
# The harness it calls: $DL_ROSETTA_PYTHON (a Python with the harness), else the checkout's
# .venv/bin/python (python3 -m harness setup --r), else the `dl-rosetta` command on the PATH.

usage <- function() {
  cat("usage: Rscript r_models/run.R [VERB] [OPTIONS]   (options without a verb: a run of the R implementations)\n",
      "  Rscript r_models/run.R --model cnn --backend tensorflow --data synthetic --samples 512 --epochs 2\n",
      "  Rscript r_models/run.R list --lang r\n",
      "  Rscript r_models/run.R run --help            (every option of a run)\n", sep = "")
}

args <- commandArgs(trailingOnly = TRUE)
if (length(args) == 0) {
  usage()
  quit(status = 0, save = "no")
}
if (startsWith(args[1], "-") && !(args[1] %in% c("-h", "--help", "--version"))) {
  if (!("--lang" %in% args)) args <- c("--lang", "r", args)
  if (!("--framework" %in% args)) args <- c(args, "--framework", "keras")
  args <- c("run", args)
}

# this file's folder: Rscript passes --file=PATH among R's own arguments
file <- sub("^--file=", "", grep("^--file=", commandArgs(trailingOnly = FALSE), value = TRUE))
root <- dirname(dirname(normalizePath(file)))  # the checkout: r_models/..

python <- Sys.getenv("DL_ROSETTA_PYTHON")
if (python == "" && file.exists(file.path(root, ".venv", "bin", "python"))) {
  python <- file.path(root, ".venv", "bin", "python")
}
if (python != "") {
  # the checkout's harness first, whatever the Python has installed
  if (file.exists(file.path(root, "harness", "cli.py"))) {
    old <- Sys.getenv("PYTHONPATH")
    Sys.setenv(PYTHONPATH = if (old == "") root else paste(root, old, sep = .Platform$path.sep))
  }
  command <- python
  args <- c("-m", "harness", args)
} else {
  command <- Sys.which("dl-rosetta")
  if (command == "") {
    message("error: no harness found: set DL_ROSETTA_PYTHON, run `python3 -m harness setup --r` in the checkout, ",
            "or pip install dl-rosetta")
    quit(status = 2, save = "no")
  }
}
status <- system2(command, shQuote(args))
quit(status = status, save = "no")
