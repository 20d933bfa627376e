# ResNet-50 v1.5 in R, on Keras 3 through reticulate (spec: harness/specs.py, RESNET50).
# Images arrive channels-last, (N, S, S, 3). Layers are named by their canonical weight prefix.

conv <- function(x, filters, size, stride = 1L, name) {
  # Every stride-2 convolution pads symmetrically (explicit zero padding, then 'valid'): Keras'
  # 'same' would pad only bottom/right on even inputs.
  pad <- (size - 1L) %/% 2L
  padding <- "valid"
  if (stride > 1L && pad > 0L) {
    x <- keras$layers$ZeroPadding2D(pad)(x)
  } else if (pad > 0L) {
    padding <- "same"
  }
  keras$layers$Conv2D(filters, size, strides = stride, padding = padding, use_bias = FALSE,
                      kernel_initializer = he_fan_out(), name = keras_name(name))(x)
}

# BatchNorm as PyTorch keeps it: Keras' layer averages the biased batch variance v (the one it
# normalises with) into its running variance, PyTorch the unbiased v * n / (n - 1), n values per
# channel. This subclass adds the difference, (1 - momentum) * v / (n - 1), after Keras' update.
# Its methods are made by py_func, which keeps their signatures: Keras looks for `training`.
keras_bn <- keras$layers$BatchNormalization
bn_moments <- function(self, inputs, mask) {
  moments <- keras_bn$`_moments`(self, inputs, mask)
  self$`_batch_variance` <- py_get_item(moments, 1L)
  moments
}
bn_call <- function(self, inputs, training = NULL, mask = NULL) {
  outputs <- keras_bn$call(self, inputs, training = training, mask = mask)
  if (isTRUE(training) && isTRUE(py_to_r(self$trainable))) {
    ops <- keras$ops
    v <- self$`_batch_variance`
    n <- ops$divide(ops$cast(ops$size(inputs), v$dtype), ops$cast(ops$size(v), v$dtype))
    correction <- ops$multiply(1 - py_to_r(self$momentum), ops$divide(v, ops$subtract(n, 1)))
    self$moving_variance$assign_add(correction)
  }
  outputs
}
TorchBatchNorm <- py_builtins$type("TorchBatchNorm", tuple(keras_bn),
                                   dict(call = py_func(bn_call), `_moments` = py_func(bn_moments)))

batch_norm <- function(x, spec, name) {
  # Keras' momentum is PyTorch's 1 - momentum.
  TorchBatchNorm(epsilon = spec$bn_eps, momentum = 1 - spec$bn_momentum, name = keras_name(name))(x)
}

relu <- function(x) keras$layers$ReLU()(x)

# 3x3/2 max-pool padded by 1 on every side; it follows a ReLU, so zero padding acts as -inf.
max_pool <- function(x) keras$layers$MaxPooling2D(3L, 2L)(keras$layers$ZeroPadding2D(1L)(x))

bottleneck <- function(x, spec, prefix, width, stride, downsample) {
  name <- function(part) paste(prefix, part, sep = ".")
  out <- x |>
    conv(width, 1L, name = name("conv1")) |> batch_norm(spec, name("bn1")) |> relu() |>
    conv(width, 3L, stride, name = name("conv2")) |> batch_norm(spec, name("bn2")) |> relu() |>  # v1.5
    conv(width * spec$expansion, 1L, name = name("conv3")) |> batch_norm(spec, name("bn3"))
  shortcut <- if (downsample) {
    x |> conv(width * spec$expansion, 1L, stride, name = name("downsample.0")) |>
      batch_norm(spec, name("downsample.1"))
  } else {
    x
  }
  keras$layers$Add()(list(out, shortcut)) |> relu()
}

build_model <- function(spec, options) {
  keras$utils$set_random_seed(options$seed)
  size <- options$image_size

  inputs <- keras$Input(shape = list(size, size, 3L))
  x <- inputs |>
    conv(64L, 7L, 2L, name = "conv1") |> batch_norm(spec, "bn1") |> relu() |> max_pool()
  for (block in spec$blocks) {  # (prefix, in channels, width, stride, downsample), 16 blocks
    x <- bottleneck(x, spec, block$prefix, block$width, block$stride, block$downsample)
  }
  fc <- keras$layers$Dense(spec$num_classes, name = "fc", kernel_initializer = glorot(),
                           bias_initializer = "zeros")
  outputs <- fc(keras$layers$GlobalAveragePooling2D()(x))  # (N, 2048) -> (N, 10)
  model <- keras$Model(inputs, outputs, name = "resnet50")

  keras_trainer(model, spec, options)
}
