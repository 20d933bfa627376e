"""JAX implementations: Flax NNX models, Optax optimisers, a jax.jit-compiled training step."""
