"""The spec's optimisers in Keras 3: SGD with momentum as is, Adam in PyTorch's form."""
from __future__ import annotations

import keras


class Adam(keras.optimizers.Adam):
    """Keras' Adam in PyTorch's form, given dense gradients.

    Keras adds epsilon to sqrt(v) and folds the bias corrections into the step size, i.e. PyTorch's
    Adam with eps / sqrt(1 - beta2^t) in place of eps; for an Embedding row whose gradient is near
    eps that moves the update by a third of a step (the equivalence check caught it). Here
    w -= lr * m_hat / (sqrt(v_hat) + eps), as torch.optim.Adam does.

    On the TensorFlow backend an Embedding's gradient is a tf.IndexedSlices with one slice per
    token occurrence, and Keras 3 squares those slices before they are summed: a token seen k
    times in a batch adds sum(g_i^2) to the second moment instead of (sum g_i)^2. Summing first
    fixes it; the update of the (30000, 125) moments is dense anyway."""

    def update_step(self, gradient, variable, learning_rate):
        from keras import ops

        if type(gradient).__name__ == "IndexedSlices":
            import tensorflow as tf

            gradient = tf.convert_to_tensor(gradient)  # sums the slices of repeated ids
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        step = ops.cast(self.iterations + 1, variable.dtype)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - self.beta_1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - self.beta_2))
        m_hat = ops.divide(m, 1 - ops.power(ops.cast(self.beta_1, variable.dtype), step))
        v_hat = ops.divide(v, 1 - ops.power(ops.cast(self.beta_2, variable.dtype), step))
        self.assign_sub(variable, ops.divide(ops.multiply(m_hat, lr), ops.add(ops.sqrt(v_hat), self.epsilon)))


def make_optimizer(opt, lr_scale: float = 1):
    lr = opt.lr * lr_scale  # weak scaling: lr x replicas
    if opt.name == "sgd":
        # Keras: v = m*v - lr*g; w += v.  PyTorch: b = m*b + g; w -= lr*b.  With a constant lr,
        # v = -lr*b at every step, so both give the same weights (up to float rounding).
        return keras.optimizers.SGD(learning_rate=lr, momentum=opt.momentum)
    return Adam(learning_rate=lr, beta_1=opt.beta1, beta_2=opt.beta2, epsilon=opt.eps)
