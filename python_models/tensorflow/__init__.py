"""Raw TensorFlow 2: tf.Module models, tf.Variables and a tf.function training step (no Keras)."""
