# The CIFAR-10 CNN in R, on Keras 3 through reticulate (spec: harness/specs.py, CNN).
# Images arrive channels-last, (N, 32, 32, 3): Keras' own layout.

conv3x3 <- function(x, filters, name) {
  layer <- keras$layers$Conv2D(filters, 3L, padding = "same", name = name,
                               kernel_initializer = glorot(), bias_initializer = "zeros")
  layer(x)
}

dense <- function(x, units, name) {
  layer <- keras$layers$Dense(units, name = name, kernel_initializer = glorot(), bias_initializer = "zeros")
  layer(x)
}

relu <- function(x) keras$layers$ReLU()(x)
max_pool <- function(x) keras$layers$MaxPooling2D(2L)(x)
dropout <- function(x, rate) keras$layers$Dropout(rate)(x)
flatten <- function(x) keras$layers$Flatten()(x)

# Keras flattens (8, 8, 100) in H,W,C order; the canonical fc1.weight (512, 6400) has its
# columns in C,H,W order.
flatten_chw <- list(
  export = function(w) {
    w$weight <- np$ascontiguousarray(
      w$weight$reshape(c(512L, 8L, 8L, 100L))$transpose(c(0L, 3L, 1L, 2L))$reshape(c(512L, 6400L)))
    w
  },
  import = function(w) {
    w$weight <- np$asarray(w$weight)$reshape(c(512L, 100L, 8L, 8L))$transpose(c(0L, 2L, 3L, 1L))$reshape(c(512L, 6400L))
    w
  }
)

build_model <- function(spec, options) {
  keras$utils$set_random_seed(options$seed)
  rates <- if (options$dropout) spec$dropout else c(0, 0, 0)  # 0.25, 0.25, 0.5

  inputs <- keras$Input(shape = list(32L, 32L, 3L))
  outputs <- inputs |>
    conv3x3(50L, "conv1") |> relu() |>
    conv3x3(50L, "conv2") |> max_pool() |> relu() |> dropout(rates[1]) |>   # (N, 16, 16, 50)
    conv3x3(100L, "conv3") |> relu() |>
    conv3x3(100L, "conv4") |> max_pool() |> relu() |> dropout(rates[2]) |>  # (N, 8, 8, 100)
    flatten() |>                                                              # (N, 6400)
    dense(512L, "fc1") |> relu() |> dropout(rates[3]) |>
    dense(10L, "fc2")                                                         # logits
  model <- keras$Model(inputs, outputs, name = "cnn")

  keras_trainer(model, spec, options, adjust = list(fc1 = flatten_chw))
}
