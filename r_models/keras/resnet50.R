# ResNet-50 v1.5 in R, on Keras 3 through reticulate (spec: harness/specs.py, RESNET50).
# Images arrive channels-last, (N, S, S, 3). Layer names are the canonical weight prefixes.

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
                      kernel_initializer = he_fan_out(), name = name)(x)
}

batch_norm <- function(x, spec, name) {
  # Keras' momentum is PyTorch's 1 - momentum.
  keras$layers$BatchNormalization(epsilon = spec$bn_eps, momentum = 1 - spec$bn_momentum, name = name)(x)
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

  keras_trainer(model, spec, options, deviations = c(
    paste("BatchNorm running variance: Keras averages the biased batch variance, PyTorch the unbiased",
          "one (factor n/(n-1), n = batch x height x width per channel); training-mode outputs and",
          "gradients are unaffected, eval-mode outputs after training differ slightly")))
}
