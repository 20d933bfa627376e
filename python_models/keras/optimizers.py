"""The spec's optimisers in Keras 3: SGD with momentum as is, Adam and AdamW in PyTorch's form."""
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
    fixes it; the update of the (30000, 125) moments is dense anyway.

    AdamW is this Adam with Keras' own decoupled weight decay (the optimiser's `weight_decay`:
    w -= w * wd * lr before the step, on every variable not excluded by exclude_from_weight_decay),
    and `global_clipnorm` clips in torch.nn.utils.clip_grad_norm_'s form (see _clip_gradients)."""

    def __init__(self, *args, clip_eps: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.clip_eps = clip_eps

    def _clip_gradients(self, grads):
        """One norm over every gradient and one factor min(1, clip_norm / (norm + clip_eps)) for
        all of them, as torch.nn.utils.clip_grad_norm_. (Keras' own global_clipnorm multiplies by
        clip_norm / max(norm, clip_norm), without the eps.) Embedding gradients that arrive as
        IndexedSlices (TensorFlow) are summed per row first, or repeated rows would count apart."""
        if not self.global_clipnorm:
            return super()._clip_gradients(grads)
        from keras import ops

        grads = [_dense(g) for g in grads]
        norm = ops.sqrt(sum(ops.sum(ops.square(ops.cast(g, "float32"))) for g in grads))
        factor = ops.minimum(self.global_clipnorm / (norm + self.clip_eps), 1.0)
        return [ops.multiply(g, ops.cast(factor, g.dtype)) for g in grads]

    def update_step(self, gradient, variable, learning_rate):
        from keras import ops

        gradient = _dense(gradient)  # sums the slices of repeated ids
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


def _dense(gradient):
    if type(gradient).__name__ == "IndexedSlices":
        import tensorflow as tf

        return tf.convert_to_tensor(gradient)
    return gradient


def make_optimizer(opt, lr_scale: float = 1, no_decay=()):
    """The spec's optimiser; `no_decay`: the variables AdamW leaves undecayed (the spec's tensors
    whose Weight.decay is False: biases and LayerNorm)."""
    lr = opt.lr * lr_scale  # weak scaling: lr x replicas
    if opt.name == "sgd":
        # Keras: v = m*v - lr*g; w += v.  PyTorch: b = m*b + g; w -= lr*b.  With a constant lr,
        # v = -lr*b at every step, so both give the same weights (up to float rounding).
        return keras.optimizers.SGD(learning_rate=lr, momentum=opt.momentum)
    if opt.name == "adam":
        return Adam(learning_rate=lr, beta_1=opt.beta1, beta_2=opt.beta2, epsilon=opt.eps)
    adamw = Adam(learning_rate=lr, beta_1=opt.beta1, beta_2=opt.beta2, epsilon=opt.eps, weight_decay=opt.weight_decay,
                 global_clipnorm=opt.clip_norm, clip_eps=opt.clip_eps)
    adamw.exclude_from_weight_decay(var_list=list(no_decay))
    return adamw
