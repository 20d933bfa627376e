# The IMDB GRU sentiment model in R, on Keras 3 through reticulate (spec: harness/specs.py, RNN).
# Token ids arrive as (N, 150) int64, padded at the front: the last step is the review's end.

build_model <- function(spec, options) {
  keras$utils$set_random_seed(options$seed)

  embedding <- keras$layers$Embedding(
    spec$vocab, spec$embed, name = "embedding",
    embeddings_initializer = keras$initializers$RandomUniform(-0.05, 0.05))
  # reset_after = TRUE is the cuDNN/PyTorch formulation: r multiplies (W_hn h + b_hn).
  gru <- keras$layers$GRU(
    spec$hidden, name = "gru", reset_after = TRUE, return_sequences = FALSE,
    kernel_initializer = glorot(), recurrent_initializer = keras$initializers$Orthogonal(),
    bias_initializer = "zeros")
  fc <- keras$layers$Dense(spec$num_classes, name = "fc", kernel_initializer = glorot(),
                           bias_initializer = "zeros")

  inputs <- keras$Input(shape = list(spec$maxlen), dtype = "int64")
  outputs <- inputs |> embedding() |> gru() |> fc()  # (N, 150, 125) -> (N, 100) -> (N, 2)
  model <- keras$Model(inputs, outputs, name = "rnn")

  keras_trainer(model, spec, options)
}
