# The R side of the worker's bridge (harness/runtimes/r.py): what the harness itself needs in R.
#
# The runtime sources this file into R's global environment and calls
# dl_rosetta_start(<project R library>, <bridge module name>) once per worker. It defines
# `.dl_rosetta`: calls into R models that report errors instead of raising them, and the facts
# that show where R runs and what it holds. Values cross through an in-memory Python module (the
# bridge) that R imports with convert = FALSE, so numpy arrays stay numpy arrays.

dl_rosetta_start <- function(r_lib, bridge_module) {
  .libPaths(unique(c(r_lib, .libPaths())))
  suppressPackageStartupMessages(library(reticulate))
  bridge <- import(bridge_module, convert = FALSE)

  # The failing call and the R source line it ran from. `calls` is the stack seen by the calling
  # handler: its own frame (and R's .handleSimpleError) come last; the innermost call with a
  # source reference is the R model's line. A Python error raised through reticulate has
  # reticulate's internals as its call: the model's call is named instead.
  describe <- function(e, calls) {
    calls <- head(calls, -1L)
    at <- NULL
    for (call in rev(calls)) if (!is.null(attr(call, "srcref"))) { at <- call; break }
    ref <- attr(at, "srcref")
    where <- if (is.null(ref)) "" else sprintf("%s:%d", basename(attr(ref, "srcfile")$filename), ref[[1]])
    call <- conditionCall(e)
    internal <- function(call) is.null(call) || grepl("^(py_|\\.handleSimpleError)|_impl$", deparse1(call[[1]]))
    if (internal(call)) call <- if (!internal(at)) at
    text <- if (is.null(call)) "" else deparse1(call, collapse = " ")
    c(if (nchar(text) > 160) paste0(substr(text, 1, 157), "...") else text, where, conditionMessage(e))
  }

  # Python str/int/float/bool arguments become R values; arrays and containers stay Python objects.
  scalar_to_r <- function(x) {
    scalar <- c("python.builtin.str", "python.builtin.int", "python.builtin.float", "python.builtin.bool")
    if (inherits(x, scalar)) py_to_r(x) else x
  }

  # fun (or trainer[[fun]]) applied to the bridge's attributes `argnames`; the value goes to the
  # bridge's `result` (or is returned, keep = TRUE); an error becomes c(call, where, message).
  invoke <- function(trainer, fun, argnames, keep = FALSE) {
    calls <- NULL
    tryCatch({
      target <- if (is.character(fun)) trainer[[fun]] else fun
      args <- lapply(argnames, function(a) scalar_to_r(py_get_attr(bridge, a)))
      value <- if (is.function(target)) {
        withCallingHandlers(do.call(target, args), error = function(e) calls <<- sys.calls())
      } else target
      if (keep) return(list(error = character(), value = value))
      py_set_attr(bridge, "result", value)
      list(error = character())
    }, error = function(e) list(error = describe(e, calls)))
  }

  build <- function(files, spec, options) {
    env <- new.env(parent = globalenv())
    for (f in py_to_r(files)) sys.source(f, envir = env, keep.source = TRUE)
    env$build_model(py_to_r(spec), py_to_r(options))
  }

  facts <- function() {
    cfg <- py_config()
    list(pid = Sys.getpid(), python = cfg$python, attached_by = cfg$forced, libpaths = as.list(.libPaths()),
         R = paste(R.version$major, R.version$minor, sep = "."),
         reticulate = as.character(packageVersion("reticulate")),
         digest = tryCatch(as.character(packageVersion("digest")), error = function(e) NA_character_))
  }

  # What R holds for a bridge attribute: its Python id, and R's own heap in bytes.
  held <- function(name) {
    list(id = py_id(py_get_attr(bridge, name)), r_heap_bytes = sum(gc(full = TRUE)[, 1] * c(56, 8)))
  }

  assign(".dl_rosetta", list(invoke = invoke, build = build, facts = facts, held = held), envir = globalenv())
}
