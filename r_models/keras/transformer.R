# The character-level GPT in R, on Keras 3 through reticulate (spec: harness/specs.py, TRANSFORMER).
# Windows arrive as (N, T) int64 bytes; the logits leave as (N, T, vocab). Pre-LayerNorm blocks of
# Keras' MultiHeadAttention (causal) and a Dense MLP with exact (erf) GELU; the output projection
# is the token embedding itself, called in reverse, so the two share one matrix.

normal <- function(std) keras$initializers$RandomNormal(0, std)  # one per layer: an unseeded
                                                                 # initializer repeats its draw
exact_gelu <- import("functools")$partial(keras$activations$gelu, approximate = FALSE)  # x * Phi(x)

# What MultiHeadAttention runs (Keras 3.15's _compute_attention): with dropout its own
# einsum/softmax, without it keras.ops.dot_product_attention(is_causal = TRUE) on the backend.
attention_path <- function(backend) {
  fused <- switch(backend,
    torch = "torch.nn.functional.scaled_dot_product_attention(is_causal=True), PyTorch's fused kernel (flash attention for CPU on a CPU)",
    jax = "jax.nn.dot_product_attention(implementation='xla'): XLA's einsum/softmax, explicit on CPU (cuDNN's kernel only on a GPU where Keras finds it usable)",
    tensorflow = "Keras' _dot_product_attention_xla: explicit einsum/softmax TensorFlow ops")
  paste0("layers.MultiHeadAttention(use_causal_mask=True), built from R. With dropout (training runs, and their ",
         "eval): explicit softmax(QK^T)V (einsum, masked Softmax adding -1e9, Dropout on the probabilities). ",
         "Without dropout (the equivalence steps): ", fused)
}

# Embedding subclasses (their methods made by py_func, which keeps their signatures): the token
# embedding called with reverse = TRUE maps (N, T, width) to (N, T, vocab) logits, x %*% t(E); the
# position embedding gives its (T, width) table for a window, added to every example.
keras_embedding <- keras$layers$Embedding
tied_call <- function(self, inputs, reverse = FALSE) {
  if (!isTRUE(reverse)) return(keras_embedding$call(self, inputs))
  ops <- keras$ops
  ops$matmul(inputs, ops$transpose(ops$cast(self$embeddings, self$compute_dtype)))
}
TiedEmbedding <- py_builtins$type("TiedEmbedding", tuple(keras_embedding), dict(
  call = py_func(tied_call),
  compute_output_spec = py_func(tied_call)))  # keras ops on symbolic inputs give symbolic outputs

position_call <- function(self, tokens) {
  ops <- keras$ops
  positions <- ops$arange(py_get_item(ops$shape(tokens), 1L))
  ops$cast(ops$take(self$embeddings, positions, axis = 0L), self$compute_dtype)
}
position_spec <- function(self, tokens) {
  keras$KerasTensor(tuple(py_get_item(keras$ops$shape(tokens), 1L), self$output_dim), dtype = self$compute_dtype)
}
PositionEmbedding <- py_builtins$type("PositionEmbedding", tuple(keras_embedding), dict(
  call = py_func(position_call), compute_output_spec = py_func(position_spec)))

build_model <- function(spec, options) {
  keras$utils$set_random_seed(options$seed)
  rate <- if (options$dropout) spec$dropout else 0

  tokens <- keras$Input(shape = list(spec$context), dtype = "int32")  # (N, T)
  tok_emb <- TiedEmbedding(spec$vocab, spec$width, embeddings_initializer = normal(spec$init_std), name = "tok_emb")
  pos_emb <- PositionEmbedding(spec$context, spec$width, embeddings_initializer = normal(spec$init_std),
                               name = "pos_emb")
  x <- keras$ops$add(tok_emb(tokens), pos_emb(tokens))  # (N, T, C)
  attention <- list()
  for (i in seq_len(spec$layers) - 1L) {
    b <- paste0("blocks_", i)  # layers named by their canonical prefix, "." written "_"
    h <- keras$layers$LayerNormalization(epsilon = spec$ln_eps, name = paste0(b, "_ln1"))(x)
    attn <- keras$layers$MultiHeadAttention(
      num_heads = spec$heads, key_dim = spec$head_width, dropout = rate,
      kernel_initializer = normal(spec$init_std), bias_initializer = "zeros", name = paste0(b, "_attn"))
    h <- attn(h, h, use_causal_mask = TRUE)
    attention[[length(attention) + 1L]] <- attn
    # pre-LayerNorm: the residual stream itself is never normalised
    x <- keras$ops$add(x, keras$layers$Dropout(rate)(h))
    h <- keras$layers$LayerNormalization(epsilon = spec$ln_eps, name = paste0(b, "_ln2"))(x)
    h <- keras$layers$Dense(spec$mlp_width, activation = exact_gelu, kernel_initializer = normal(spec$init_std),
                            name = paste0(b, "_mlp_fc"))(h)
    h <- keras$layers$Dense(spec$width, kernel_initializer = normal(spec$residual_std),
                            name = paste0(b, "_mlp_proj"))(h)
    x <- keras$ops$add(x, keras$layers$Dropout(rate)(h))
  }
  x <- keras$layers$LayerNormalization(epsilon = spec$ln_eps, name = "ln_f")(x)
  logits <- tok_emb(x, reverse = TRUE)  # (N, T, vocab): tied, no bias
  model <- keras$Model(tokens, logits, name = "transformer")

  # MultiHeadAttention draws its four projections from one initializer; the output projection
  # writes into the residual stream, so the spec draws it at residual_std: drawn again here.
  for (attn in attention) {
    kernel <- attn$output_dense$kernel
    kernel$assign(normal(spec$residual_std)(kernel$shape))
  }

  keras_trainer(model, spec, options, prefixes = list(tok_emb = "tok_emb", pos_emb = "pos_emb", ln_f = "ln_f"),
                attention = attention_path(py_to_r(keras$backend$backend())))
}
