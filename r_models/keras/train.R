# The Keras training loop shared by the three R models: the harness protocol in R.
#
# Keras is Python's Keras 3, reached through reticulate (the R keras3 package is a thin layer
# over the same calls and is not needed). `convert = FALSE` keeps every value Keras returns a
# Python object: the training arrays stay the numpy arrays the harness prepared and never
# become R doubles; py_to_r() is called only where R needs a number.

library(reticulate)
keras <- import("keras", convert = FALSE)
np <- import("numpy", convert = FALSE)
py_builtins <- import_builtins(convert = FALSE)

# Adam as the spec has it (PyTorch's form): w -= lr / (1 - b1^t) * m / (sqrt(v / (1 - b2^t)) + eps).
# Keras' own Adam adds eps to sqrt(v) before the bias correction, which moves the embedding rows
# of rarely seen words by a different amount. update_step is traced into the train step (TF, JAX).
TorchAdam <- PyClass("TorchAdam", inherit = keras$optimizers$Adam, defs = list(
  update_step = function(self, gradient, variable, learning_rate) {
    ops <- keras$ops
    dtype <- variable$dtype
    i <- self$`_get_variable_index`(variable)
    m <- py_get_item(py_get_attr(self, "_momentums"), i)
    v <- py_get_item(py_get_attr(self, "_velocities"), i)
    g <- ops$cast(gradient, dtype)
    # TensorFlow hands an embedding's gradient over as IndexedSlices, one slice per token
    # occurrence; made dense first, a repeated token's slices are summed before squaring.
    if (inherits(g, "tensorflow.python.framework.indexed_slices.IndexedSlices")) {
      g <- ops$add(ops$zeros_like(variable), g)
    }
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

make_optimizer <- function(opt) {
  # Keras' SGD (v = m*v - lr*g; w += v) equals PyTorch's (v = m*v + g; w -= lr*v) at constant lr.
  switch(opt$name,
    sgd = keras$optimizers$SGD(learning_rate = opt$lr, momentum = opt$momentum),
    adam = TorchAdam(learning_rate = opt$lr, beta_1 = opt$beta1, beta_2 = opt$beta2, epsilon = opt$eps),
    stop("unknown optimizer ", opt$name))
}

glorot <- function() keras$initializers$GlorotUniform()
he_fan_out <- function() keras$initializers$VarianceScaling(2, "fan_out", "untruncated_normal")

# --------------------------------------------------------------------------- canonical weights
# Canonical layouts are PyTorch's. Keras kernels are (kh, kw, in, out) and dense kernels
# (in, out); Keras' GRU stacks its gates (update, reset, new) where PyTorch stacks (reset,
# update, new), and keeps its two biases as the rows of one (2, 3H) matrix.
as_numpy <- function(v) np$array(keras$ops$convert_to_numpy(v), copy = TRUE)
to_torch <- function(v, perm) np$ascontiguousarray(np$transpose(as_numpy(v), perm))
from_torch <- function(w, perm) np$transpose(np$asarray(w), perm)

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

# Which of the mapped layer classes (or a subclass of it) a layer is.
layer_kind <- function(layer) {
  for (kind in names(layer_exporters)) {
    if (py_to_r(py_builtins$isinstance(layer, py_get_attr(keras$layers, kind)))) return(kind)
  }
  ""
}

# Layers are named by their canonical prefix, dots written as underscores since the torch backend
# refuses dots ("layer1_0_downsample_0" holds "layer1.0.downsample.0.weight"), so a model's weights
# are found by walking its layers. `adjust` holds per-model exceptions (the CNN's flatten).
keras_name <- function(prefix) gsub(".", "_", prefix, fixed = TRUE)
canonical_prefix <- function(layer) gsub("_", ".", py_to_r(layer$name), fixed = TRUE)

export_weights <- function(model, adjust = list()) {
  out <- list()
  for (layer in iterate(model$layers)) {
    export_layer <- layer_exporters[[layer_kind(layer)]]
    if (is.null(export_layer)) {
      if (py_len(layer$weights) > 0L) stop("no canonical mapping for layer ", py_to_r(layer$name))
      next
    }
    name <- canonical_prefix(layer)
    tensors <- Filter(Negate(is.null), export_layer(layer))
    if (!is.null(adjust[[name]])) tensors <- adjust[[name]]$export(tensors)
    names(tensors) <- paste(name, names(tensors), sep = ".")
    out <- c(out, tensors)
  }
  out
}

import_weights <- function(model, weights, adjust = list()) {
  for (layer in iterate(model$layers)) {
    load_layer <- layer_importers[[layer_kind(layer)]]
    if (is.null(load_layer)) next
    name <- canonical_prefix(layer)
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

keras_trainer <- function(model, spec, options, adjust = list()) {
  optimizer <- make_optimizer(spec$optimizer)
  loss <- keras$losses$SparseCategoricalCrossentropy(from_logits = TRUE)  # mean over the batch
  data <- new.env()  # the training arrays: the Python objects handed over, never copied into R
  info <- list(
    layout = "NHWC",
    fast_path = list(keras_backend = py_to_r(keras$backend$backend()), data_format = "channels_last",
                     loop = paste("model$fit per epoch over the harness-ordered batches, shuffle = FALSE;",
                                  "step losses kept on the device, fetched once per epoch"),
                     jit_compile = NULL),
    deviations = list())  # none: Keras' Adam and BatchNorm are replaced where they differ

  fit_data <- function(x, y) {
    data$x <- x
    data$y <- y
    data$step_losses <- NULL
    invisible(NULL)
  }

  compile <- function() {
    data$step_losses <- StepLosses(loss, py_len(data$x))  # capacity: more steps than any epoch has
    # "auto" is Keras' default: XLA on TensorFlow off CPU, jax.jit on JAX, eager on torch.
    model$compile(optimizer = optimizer, loss = loss, metrics = list(data$step_losses),
                  jit_compile = if (isTRUE(options$compile)) TRUE else "auto")
    info$fast_path$jit_compile <<- py_to_r(model$jit_compile)
  }

  train_epoch <- function(batches) {
    if (is.null(data$step_losses)) compile()  # the first epoch is the warm-up: Keras traces there too
    # (steps, batch) indices: the harness's plan for this epoch
    rows <- np$asarray(if (py_has_attr(batches, "index")) batches$index else py_builtins$list(batches))
    shape <- unlist(py_to_r(rows$shape))
    # One gather into the epoch's order; fit cuts exactly these rows into the same batches, one
    # optimiser step each, and returns when they are done.
    order <- rows$reshape(-1L)
    model$fit(py_get_item(data$x, order), py_get_item(data$y, order), batch_size = shape[[2]],
              epochs = 1L, shuffle = FALSE, verbose = 0L)
    losses <- keras$ops$convert_to_numpy(data$step_losses$losses)
    unlist(py_to_r(losses$tolist()))[seq_len(shape[[1]])]
  }

  list(
    info = function() info,
    fit_data = fit_data,
    train_epoch = train_epoch,
    predict = function(x) model$predict(x, batch_size = 256L, verbose = 0L),
    get_weights = function() export_weights(model, adjust),
    set_weights = function(weights) import_weights(model, dict_to_list(weights), adjust),
    param_count = function() {
      sizes <- iterate(model$trainable_weights, function(w) py_to_r(np$prod(w$shape)))
      as.integer(sum(unlist(sizes)))
    },
    # The array the trainer holds ("x" or "y"), as the Python object (the harness checks it is the
    # one it handed over, not a copy).
    held_array = function(name) data[[name]],
    # SHA-256 of the bytes of the array R holds, computed by R's digest package.
    data_digest = function(name) {
      digest::digest(as.raw(data[[name]]$tobytes()), algo = "sha256", serialize = FALSE)
    }
  )
}
