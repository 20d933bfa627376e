# The Keras training loop shared by the R models: the harness protocol in R.
#
# Keras is Python's Keras 3, reached through reticulate (the R keras3 package is a thin layer
# over the same calls and is not needed). `convert = FALSE` keeps every value Keras returns a
# Python object: the training arrays stay the numpy arrays the harness prepared and never
# become R doubles; py_to_r() is called only where R needs a number.

library(reticulate)
keras <- import("keras", convert = FALSE)
np <- import("numpy", convert = FALSE)
py_builtins <- import_builtins(convert = FALSE)

# TensorFlow hands an embedding's gradient over as IndexedSlices, one slice per token occurrence;
# made dense, a repeated token's slices are summed (before squaring, clipping or the update).
dense_gradient <- function(g, variable) {
  if (inherits(g, "tensorflow.python.framework.indexed_slices.IndexedSlices")) {
    g <- keras$ops$add(keras$ops$zeros_like(variable), g)
  }
  g
}

# Adam as the spec has it (PyTorch's form): w -= lr / (1 - b1^t) * m / (sqrt(v / (1 - b2^t)) + eps).
# Keras' own Adam adds eps to sqrt(v) before the bias correction, which moves the embedding rows
# of rarely seen words by a different amount. update_step is traced into the train step (TF, JAX).
# AdamW is this Adam with Keras' decoupled `weight_decay` (w -= w * wd * lr before the step, on
# every variable not excluded by exclude_from_weight_decay) and global clipping in PyTorch's form.
TorchAdam <- PyClass("TorchAdam", inherit = keras$optimizers$Adam, defs = list(
  # torch.nn.utils.clip_grad_norm_'s form: one norm over every gradient, one factor
  # min(1, clip_norm / (norm + clip_eps)) for all of them (Keras' global_clipnorm divides by
  # max(norm, clip_norm), without the eps). Called with the whole gradient list before the step.
  `_clip_gradients` = function(self, grads) {
    ops <- keras$ops
    clip <- py_to_r(py_get_attr(self, "global_clipnorm"))
    if (is.null(clip)) return(grads)
    grads <- lapply(grads, function(g) {
      if (inherits(g, "tensorflow.python.framework.indexed_slices.IndexedSlices")) ops$convert_to_tensor(g) else g
    })
    squares <- lapply(grads, function(g) ops$sum(ops$square(ops$cast(g, "float32"))))
    norm <- ops$sqrt(Reduce(ops$add, squares))
    factor <- ops$minimum(ops$divide(clip, ops$add(norm, py_to_r(py_get_attr(self, "clip_eps")))), 1)
    lapply(grads, function(g) ops$multiply(g, ops$cast(factor, g$dtype)))
  },

  update_step = function(self, gradient, variable, learning_rate) {
    ops <- keras$ops
    dtype <- variable$dtype
    i <- self$`_get_variable_index`(variable)
    m <- py_get_item(py_get_attr(self, "_momentums"), i)
    v <- py_get_item(py_get_attr(self, "_velocities"), i)
    g <- dense_gradient(ops$cast(gradient, dtype), variable)
    t <- ops$cast(ops$add(py_get_attr(self, "iterations"), 1L), dtype)
    correction1 <- ops$subtract(1, ops$power(ops$cast(self$beta_1, dtype), t))
    correction2 <- ops$subtract(1, ops$power(ops$cast(self$beta_2, dtype), t))
    self$assign_add(m, ops$multiply(ops$subtract(g, m), 1 - self$beta_1))
    self$assign_add(v, ops$multiply(ops$subtract(ops$square(g), v), 1 - self$beta_2))
    denominator <- ops$add(ops$sqrt(ops$divide(v, correction2)), self$epsilon)
    step <- ops$divide(ops$cast(learning_rate, dtype), correction1)
    self$assign_sub(variable, ops$divide(ops$multiply(m, step), denominator))
    NULL
  }
))

# `no_decay`: the variables AdamW leaves undecayed (the spec's tensors whose decay is FALSE).
make_optimizer <- function(opt, no_decay = list()) {
  # Keras' SGD (v = m*v - lr*g; w += v) equals PyTorch's (v = m*v + g; w -= lr*v) at constant lr.
  switch(opt$name,
    sgd = keras$optimizers$SGD(learning_rate = opt$lr, momentum = opt$momentum),
    adam = TorchAdam(learning_rate = opt$lr, beta_1 = opt$beta1, beta_2 = opt$beta2, epsilon = opt$eps),
    adamw = {
      adamw <- TorchAdam(learning_rate = opt$lr, beta_1 = opt$beta1, beta_2 = opt$beta2, epsilon = opt$eps,
                         weight_decay = opt$weight_decay, global_clipnorm = opt$clip_norm)
      py_set_attr(adamw, "clip_eps", opt$clip_eps)
      adamw$exclude_from_weight_decay(var_list = no_decay)
      adamw
    },
    stop("unknown optimizer ", opt$name))
}

glorot <- function() keras$initializers$GlorotUniform()
he_fan_out <- function() keras$initializers$VarianceScaling(2, "fan_out", "untruncated_normal")

# --------------------------------------------------------------------------- canonical weights
# Canonical layouts are PyTorch's. Keras kernels are (kh, kw, in, out) and dense kernels
# (in, out); Keras' GRU stacks its gates (update, reset, new) where PyTorch stacks (reset,
# update, new), and keeps its two biases as the rows of one (2, 3H) matrix. MultiHeadAttention
# keeps q, k, v as three (width, heads, head_width) kernels and its output projection as (heads,
# head_width, width); the canonical file packs q, k, v as the rows of one (3*width, width) matrix.
as_numpy <- function(v) np$array(keras$ops$convert_to_numpy(v), copy = TRUE)
to_torch <- function(v, perm) np$ascontiguousarray(np$transpose(as_numpy(v), perm))
from_torch <- function(w, perm) np$transpose(np$asarray(w), perm)

attention_parts <- function(l) list(l$query_dense, l$key_dense, l$value_dense)  # canonical order
rows_of <- function(a) py_to_r(py_get_item(a$shape, 0L))
# (in, heads, head_width) or (heads, head_width, out) as the (out, in) matrix PyTorch keeps
heads_to_rows <- function(k) np$transpose(k$reshape(c(rows_of(k), -1L)))
heads_from_rows <- function(w, shape) np$reshape(np$transpose(np$asarray(w)), shape)

swap_first_two_gates <- function(w, axis) {
  gates <- iterate(np$split(w, 3L, axis = axis))
  np$concatenate(list(gates[[2]], gates[[1]], gates[[3]]), axis = axis)
}

layer_exporters <- list(
  Conv2D = function(l) list(weight = to_torch(l$kernel, c(3L, 2L, 0L, 1L)),
                            bias = if (py_to_r(l$use_bias)) as_numpy(l$bias)),
  Dense = function(l) list(weight = to_torch(l$kernel, c(1L, 0L)), bias = as_numpy(l$bias)),
  BatchNormalization = function(l) list(weight = as_numpy(l$gamma), bias = as_numpy(l$beta),
                                        running_mean = as_numpy(l$moving_mean),
                                        running_var = as_numpy(l$moving_variance)),
  Embedding = function(l) list(weight = as_numpy(l$embeddings)),
  LayerNormalization = function(l) list(weight = as_numpy(l$gamma), bias = as_numpy(l$beta)),
  MultiHeadAttention = function(l) {
    parts <- attention_parts(l)
    out <- as_numpy(l$output_dense$kernel)  # (heads, head_width, width)
    list(qkv.weight = np$ascontiguousarray(np$concatenate(lapply(parts, function(p) heads_to_rows(as_numpy(p$kernel))))),
         qkv.bias = np$concatenate(lapply(parts, function(p) as_numpy(p$bias)$reshape(-1L))),
         proj.weight = np$ascontiguousarray(np$transpose(out$reshape(c(-1L, py_to_r(py_get_item(out$shape, 2L)))))),
         proj.bias = as_numpy(l$output_dense$bias))
  },
  GRU = function(l) {
    bias <- swap_first_two_gates(as_numpy(l$cell$bias), -1L)  # (2, 3H): input row, recurrent row
    list(weight_ih = np$ascontiguousarray(swap_first_two_gates(as_numpy(l$cell$kernel), -1L)$T),
         weight_hh = np$ascontiguousarray(swap_first_two_gates(as_numpy(l$cell$recurrent_kernel), -1L)$T),
         bias_ih = np$ascontiguousarray(py_get_item(bias, 0L)),
         bias_hh = np$ascontiguousarray(py_get_item(bias, 1L)))
  }
)

layer_importers <- list(
  Conv2D = function(l, w) {
    l$kernel$assign(from_torch(w$weight, c(2L, 3L, 1L, 0L)))
    if (py_to_r(l$use_bias)) l$bias$assign(w$bias)
  },
  Dense = function(l, w) { l$kernel$assign(from_torch(w$weight, c(1L, 0L))); l$bias$assign(w$bias) },
  BatchNormalization = function(l, w) {
    l$gamma$assign(w$weight); l$beta$assign(w$bias)
    l$moving_mean$assign(w$running_mean); l$moving_variance$assign(w$running_var)
  },
  Embedding = function(l, w) l$embeddings$assign(w$weight),
  LayerNormalization = function(l, w) { l$gamma$assign(w$weight); l$beta$assign(w$bias) },
  MultiHeadAttention = function(l, w) {
    weights <- iterate(np$split(np$asarray(w$qkv.weight), 3L))
    biases <- iterate(np$split(np$asarray(w$qkv.bias), 3L))
    parts <- attention_parts(l)
    for (i in 1:3) {
      parts[[i]]$kernel$assign(heads_from_rows(weights[[i]], parts[[i]]$kernel$shape))
      parts[[i]]$bias$assign(np$reshape(biases[[i]], parts[[i]]$bias$shape))
    }
    l$output_dense$kernel$assign(heads_from_rows(w$proj.weight, l$output_dense$kernel$shape))
    l$output_dense$bias$assign(w$proj.bias)
  },
  GRU = function(l, w) {
    l$cell$kernel$assign(swap_first_two_gates(np$asarray(w$weight_ih)$T, -1L))
    l$cell$recurrent_kernel$assign(swap_first_two_gates(np$asarray(w$weight_hh)$T, -1L))
    l$cell$bias$assign(swap_first_two_gates(np$stack(list(w$bias_ih, w$bias_hh)), -1L))
  }
)

# A Python dict of numpy arrays as an R named list, the arrays left as they are (py_to_r would
# turn them into R doubles).
dict_to_list <- function(d) {
  keys <- unlist(py_to_r(py_builtins$list(d)))
  setNames(lapply(keys, function(k) py_get_item(d, k)), keys)
}

# The variables behind each canonical tensor (several for the packed q, k, v): AdamW's decay groups.
layer_variables <- list(
  Dense = function(l) list(weight = list(l$kernel), bias = list(l$bias)),
  Embedding = function(l) list(weight = list(l$embeddings)),
  LayerNormalization = function(l) list(weight = list(l$gamma), bias = list(l$beta)),
  MultiHeadAttention = function(l) {
    parts <- attention_parts(l)
    list(qkv.weight = lapply(parts, function(p) p$kernel), qkv.bias = lapply(parts, function(p) p$bias),
         proj.weight = list(l$output_dense$kernel), proj.bias = list(l$output_dense$bias))
  }
)

# Which of the mapped layer classes (or a subclass of it) a layer is.
layer_kind <- function(layer) {
  for (kind in names(layer_exporters)) {
    if (py_to_r(py_builtins$isinstance(layer, py_get_attr(keras$layers, kind)))) return(kind)
  }
  ""
}

# Layers are named by their canonical prefix, dots written as underscores since the torch backend
# refuses dots ("layer1_0_downsample_0" holds "layer1.0.downsample.0.weight"), so a model's weights
# are found by walking its layers. `adjust` holds per-model exceptions (the CNN's flatten);
# `prefixes` the layers whose canonical prefix has an underscore of its own ("tok_emb").
keras_name <- function(prefix) gsub(".", "_", prefix, fixed = TRUE)
canonical_prefix <- function(layer, prefixes = list()) {
  name <- py_to_r(layer$name)
  if (!is.null(prefixes[[name]])) prefixes[[name]] else gsub("_", ".", name, fixed = TRUE)
}

# The variables of the canonical tensors whose `decay` the spec sets to FALSE (biases, LayerNorm).
undecayed_variables <- function(model, spec, prefixes = list()) {
  decays <- setNames(lapply(spec$weights, function(w) w$decay), vapply(spec$weights, function(w) w$key, ""))
  out <- list()
  for (layer in iterate(model$layers)) {
    kind <- layer_kind(layer)
    if (kind == "") next
    tensors <- layer_variables[[kind]](layer)
    for (name in names(tensors)) {
      key <- paste(canonical_prefix(layer, prefixes), name, sep = ".")
      if (!isTRUE(decays[[key]])) out <- c(out, tensors[[name]])
    }
  }
  out
}

export_weights <- function(model, adjust = list(), prefixes = list()) {
  out <- list()
  for (layer in iterate(model$layers)) {
    export_layer <- layer_exporters[[layer_kind(layer)]]
    if (is.null(export_layer)) {
      if (py_len(layer$weights) > 0L) stop("no canonical mapping for layer ", py_to_r(layer$name))
      next
    }
    name <- canonical_prefix(layer, prefixes)
    tensors <- Filter(Negate(is.null), export_layer(layer))
    if (!is.null(adjust[[name]])) tensors <- adjust[[name]]$export(tensors)
    names(tensors) <- paste(name, names(tensors), sep = ".")
    out <- c(out, tensors)
  }
  out
}

import_weights <- function(model, weights, adjust = list(), prefixes = list()) {
  for (layer in iterate(model$layers)) {
    load_layer <- layer_importers[[layer_kind(layer)]]
    if (is.null(load_layer)) next
    name <- canonical_prefix(layer, prefixes)
    prefix <- paste0(name, ".")
    keys <- Filter(function(k) startsWith(k, prefix), names(weights))
    tensors <- setNames(weights[keys], substring(keys, nchar(prefix) + 1L))
    if (!is.null(adjust[[name]])) tensors <- adjust[[name]]$import(tensors)
    load_layer(layer, tensors)
  }
  invisible(NULL)
}

# --------------------------------------------------------------------------- the trainer
# Every step's loss, written into a (capacity,) buffer on the device and fetched once per epoch;
# Keras' own "loss" log is the running mean of the epoch. update_state is traced into the train
# step (TensorFlow, JAX); the torch backend calls it eagerly at every step.
StepLosses <- PyClass("StepLosses", inherit = keras$metrics$Metric, defs = list(
  `__init__` = function(self, loss_fn, capacity) {
    super()$`__init__`(name = "step_losses")
    self$loss_fn <- loss_fn
    self$capacity <- capacity
    self$losses <- self$add_variable(shape = list(capacity), initializer = "zeros", name = "losses")
    self$step <- self$add_variable(shape = list(), initializer = "zeros", dtype = "int32", name = "step")
    NULL
  },
  update_state = function(self, y_true, y_pred, sample_weight = NULL) {
    here <- keras$ops$equal(keras$ops$arange(self$capacity, dtype = "int32"), self$step$value)
    self$losses$assign(keras$ops$where(here, self$loss_fn(y_true, y_pred), self$losses$value))
    self$step$assign_add(1L)
    NULL
  },
  result = function(self) {
    keras$ops$take(self$losses$value, keras$ops$maximum(keras$ops$subtract(self$step$value, 1L), 0L))
  }
))

# The intra-op threads of the backend's CPU kernels (what the matmul peak runs on too).
cpu_threads <- function(backend) {
  switch(backend,
    torch = py_to_r(import("torch")$get_num_threads()),
    tensorflow = {
      set <- py_to_r(import("tensorflow")$config$threading$get_intra_op_parallelism_threads())
      if (set > 0) set else {
        env <- as.integer(Sys.getenv("TF_NUM_INTRAOP_THREADS", "0"))
        if (env > 0) env else parallel::detectCores()
      }
    },
    # JAX: XLA's CPU matmuls run on one thread under --xla_cpu_multi_thread_eigen=false, else on every core
    if (grepl("xla_cpu_multi_thread_eigen=false", Sys.getenv("XLA_FLAGS"), fixed = TRUE)) 1L
    else parallel::detectCores())
}

# --variant (harness/registry.py declares them; the record's info$variant says which ran):
#   data = "numpy" (default): R holds the harness's numpy arrays (zero copy; indexing happens in
#          numpy). "r-arrays": R holds plain R arrays, as an R user has them after readRDS() or
#          from a data frame (doubles for pixels, integers for ids and labels), converted from the
#          harness's arrays once in fit_data (outside the clock); every epoch R indexes them and
#          reticulate converts the batch for Keras when fit is called (inside the clock).
#   loop = "fit" (default): model$fit once per epoch over the harness-ordered batches.
#          "train_on_batch": an R loop calling model$train_on_batch once per step, taking each
#          step's loss back as an R number, so the language boundary is crossed on every step.
variant_of <- function(options) {
  given <- options$extra$variant
  list(data = if (is.null(given$data)) "numpy" else given$data,
       loop = if (is.null(given$loop)) "fit" else given$loop)
}

# What an R user holds: an R array (or vector), pixels as doubles, integer ids/labels as integers.
as_r_array <- function(a) {
  kind <- py_to_r(a$dtype$kind)
  out <- py_to_r(np$asarray(a))  # an R double array, dims kept (reticulate reorders into R's column-major)
  if (kind %in% c("i", "u")) storage.mode(out) <- "integer"
  out
}

# Rows `i` (1-based) of an R array of any rank, all of every other dimension.
take_rows <- function(a, i) {
  if (is.null(dim(a))) return(a[i])
  do.call(`[`, c(list(a, i), rep(list(TRUE), length(dim(a)) - 1L), list(drop = FALSE)))
}

# `prefixes`: layer name -> canonical prefix, where the prefix has an underscore of its own;
# `attention`: the attention path of a model that has one (info$attention).
keras_trainer <- function(model, spec, options, adjust = list(), prefixes = list(), attention = NULL) {
  no_decay <- if (spec$optimizer$name == "adamw") undecayed_variables(model, spec, prefixes) else list()
  optimizer <- make_optimizer(spec$optimizer, no_decay)
  # The mean over every prediction: over the batch, or over every position of (N, T) targets.
  loss <- keras$losses$SparseCategoricalCrossentropy(from_logits = TRUE)
  variant <- variant_of(options)
  data <- new.env()  # the training arrays: the Python objects handed over, or R arrays (data = "r-arrays")
  loops <- list(
    fit = paste("model$fit per epoch over the harness-ordered batches, shuffle = FALSE;",
                "step losses kept on the device, fetched once per epoch"),
    train_on_batch = paste("an R loop over the harness-ordered batches calling model$train_on_batch once per",
                           "step; each step's loss returned to R as a number"))
  backend <- py_to_r(keras$backend$backend())
  info <- list(
    layout = "NHWC",
    fast_path = list(keras_backend = backend, data_format = "channels_last",
                     loop = loops[[variant$loop]],
                     data = if (variant$data == "numpy") "the harness's numpy arrays, held by R without a copy"
                            else "R arrays (doubles; integer ids and labels), converted by reticulate at each fit",
                     jit_compile = NULL),
    variant = variant,
    deviations = list(),  # none: Keras' Adam and BatchNorm are replaced where they differ
    threads = cpu_threads(backend))
  if (!is.null(attention)) info$attention <- attention

  fit_data <- function(x, y) {
    if (variant$data == "r-arrays") {
      data$dtypes <- list(x = py_to_r(x$dtype$name), y = py_to_r(y$dtype$name))
      data$x <- as_r_array(x)
      data$y <- as_r_array(y)
    } else {
      data$x <- x
      data$y <- y
    }
    data$n <- py_to_r(py_builtins$len(x))
    data$compiled <- NULL  # compiled again for these arrays (the step-loss buffer's capacity)
    invisible(NULL)
  }

  compile <- function() {
    # fit: every step's loss into a device buffer (capacity: more steps than any epoch has).
    # train_on_batch resets the metrics at every call and returns that step's loss itself.
    metrics <- list()
    if (variant$loop == "fit") {
      data$step_losses <- StepLosses(loss, data$n)
      metrics <- list(data$step_losses)
    }
    # "auto" is Keras' default: XLA on TensorFlow off CPU, jax.jit on JAX, eager on torch.
    model$compile(optimizer = optimizer, loss = loss, metrics = metrics,
                  jit_compile = if (isTRUE(options$compile)) TRUE else "auto")
    data$compiled <- TRUE
    info$fast_path$jit_compile <<- py_to_r(model$jit_compile)
  }

  # The rows of one batch (or of the whole epoch, in order) as Keras receives them.
  gather <- function(rows) {
    if (variant$data == "numpy") return(list(py_get_item(data$x, rows), py_get_item(data$y, rows)))
    i <- as.integer(py_to_r(rows)) + 1L  # R's rows are 1-based
    list(take_rows(data$x, i), take_rows(data$y, i))  # R arrays: reticulate converts them at the call
  }

  train_epoch <- function(batches) {
    if (is.null(data$compiled)) compile()  # the first epoch is the warm-up: Keras traces there too
    # (steps, batch) indices: the harness's plan for this epoch
    rows <- np$asarray(if (py_has_attr(batches, "index")) batches$index else py_builtins$list(batches))
    shape <- unlist(py_to_r(rows$shape))
    if (variant$loop == "train_on_batch") {
      losses <- numeric(shape[[1]])
      for (s in seq_len(shape[[1]])) {
        batch <- gather(py_get_item(rows, s - 1L))
        losses[[s]] <- py_to_r(model$train_on_batch(batch[[1]], batch[[2]]))
      }
      return(losses)
    }
    # One gather into the epoch's order; fit cuts exactly these rows into the same batches, one
    # optimiser step each, and returns when they are done.
    epoch <- gather(rows$reshape(-1L))
    model$fit(epoch[[1]], epoch[[2]], batch_size = shape[[2]], epochs = 1L, shuffle = FALSE, verbose = 0L)
    losses <- keras$ops$convert_to_numpy(data$step_losses$losses)
    unlist(py_to_r(losses$tolist()))[seq_len(shape[[1]])]
  }

  # The training array as the harness handed it over: the numpy object itself, or (r-arrays)
  # R's array converted back to the harness's dtype and C order.
  as_handed <- function(name) {
    if (variant$data == "numpy") return(data[[name]])
    np$ascontiguousarray(r_to_py(data[[name]]), dtype = data$dtypes[[name]])
  }

  list(
    info = function() info,
    fit_data = fit_data,
    train_epoch = train_epoch,
    predict = function(x) model$predict(x, batch_size = 256L, verbose = 0L),
    # Keras' own exporter, the call Python Keras makes (python_models/keras/export.py): format "onnx"
    # (tf2onnx, jax2onnx or torch.onnx by backend) or "tflite" (Keras' "litert", TensorFlow only), for
    # inputs shaped like one example of `example` with any batch size.
    export = function(format, path, example, opset) {
      shape <- c(list(NULL), lapply(unlist(py_to_r(example$shape))[-1], as.integer))
      spec <- keras$InputSpec(shape = tuple(shape), dtype = py_get_item(model$inputs, 0L)$dtype)
      if (format == "onnx") {
        model$export(path, format = "onnx", verbose = FALSE, input_signature = list(spec),
                     opset_version = as.integer(opset))
      } else {
        model$export(path, format = "litert", verbose = FALSE, input_signature = list(spec))
      }
      invisible(NULL)
    },
    get_weights = function() export_weights(model, adjust, prefixes),
    set_weights = function(weights) import_weights(model, dict_to_list(weights), adjust, prefixes),
    param_count = function() {
      sizes <- iterate(model$trainable_weights, function(w) py_to_r(np$prod(w$shape)))
      as.integer(sum(unlist(sizes)))
    },
    # The array the trainer holds ("x" or "y"), as the Python object (the harness checks it is the
    # one it handed over, not a copy).
    held_array = function(name) data[[name]],
    # SHA-256 of the bytes of the array R holds, computed by R's digest package.
    data_digest = function(name) {
      digest::digest(as.raw(as_handed(name)$tobytes()), algo = "sha256", serialize = FALSE)
    },
    # keras$ops$matmul of two n x n matrices on the backend's device in the run's precision, timed
    # by the harness's own protocol (harness.peak.best_rate); one element of the product is read
    # back, so each call returns once the product is done.
    matmul_peak = function(precision) {
      peak <- import("harness.peak", convert = FALSE)
      n <- py_to_r(if (identical(options$device, "cuda")) peak$GPU_N else peak$CPU_N)
      dtype <- switch(precision, fp32 = "float32", bf16 = "bfloat16", fp16 = "float16")
      a <- keras$random$normal(list(n, n), dtype = dtype, seed = 1L)
      b <- keras$random$normal(list(n, n), dtype = dtype, seed = 2L)
      product <- function() keras$ops$convert_to_numpy(py_get_item(keras$ops$matmul(a, b), tuple(0L, 0L)))
      peak$best_rate(product, 2 * as.numeric(n)^3)
    }
  )
}
