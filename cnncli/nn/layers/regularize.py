r"""Regularization layers: inverted dropout and batch normalization.

Dropout (inverted), rate ``p``, only while training:

.. math::

    m_i \sim \text{Bernoulli}(1 - p), \qquad y = x \odot m / (1 - p), \qquad dx = dy \odot m / (1 - p)

At inference ``y = x``. The mask comes from the layer's own generator, spawned from the
network's seed, so the same seed gives the same masks. ``fixed_mask`` (an array of
``m / (1 - p)``) pins the mask, for gradient checks.

Batch normalization over every axis but the last (channels of NHWC, units of (N, D)),
with ``m`` values per channel:

.. math::

    \mu = \frac{1}{m}\sum x, \quad \sigma^2 = \frac{1}{m}\sum (x - \mu)^2, \quad
    \hat x = (x - \mu)/\sqrt{\sigma^2 + \epsilon}, \quad y = \gamma \hat x + \beta

    d\beta = \sum dy, \quad d\gamma = \sum dy \odot \hat x, \quad
    dx = \frac{\gamma}{m\sqrt{\sigma^2+\epsilon}}\Big(m\, dy - \sum dy - \hat x \sum dy \odot \hat x\Big)

Training uses the batch statistics and updates the running ones,
``running = momentum * running + (1 - momentum) * batch`` (momentum 0.9, which is
PyTorch's ``momentum=0.1``; the running variance uses the unbiased batch variance, as
PyTorch does). Inference uses the running statistics, and then
``dx = dy * gamma / sqrt(running_var + eps)``.

Shapes: x, y: (N, H, W, C) or (N, D); gamma, beta, running_mean, running_var: (C,)
"""

from __future__ import annotations

import math

import numpy as np

from cnncli.nn import validate
from cnncli.nn.describe import Equation, Explanation, batch_shape
from cnncli.nn.layers.base import Layer
from cnncli.nn.registry import register


@register("dropout")
class Dropout(Layer):
    """Inverted dropout with rate ``rate`` (the probability of zeroing an element)."""

    check_output_shape = False

    def __init__(self, *, rate=0.5):
        super().__init__()
        self.rate = validate.number("rate", rate, low=0.0, high=1.0, high_open=True)
        self.fixed_mask: np.ndarray | None = None
        self.rng: np.random.Generator | None = None

    def config(self):
        return {"type": self.type_name, "rate": self.rate}

    def setup(self, input_shape, rng):
        # A child stream: the layer's masks never shift the draws of later initializers.
        self.rng = rng.spawn(1)[0] if rng is not None else None
        return input_shape

    def forward(self, x, training=False):
        if not training or self.rate == 0.0:
            self._mask = None
            return x
        if self.fixed_mask is not None:
            mask = self.fixed_mask.astype(x.dtype, copy=False)
        else:
            keep = self.rng.random(x.shape) >= self.rate
            mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - self.rate))
        self._mask = mask
        return x * mask

    def backward(self, dy):
        return dy if self._mask is None else dy * self._mask

    def forward_flops(self):
        return 0

    def backward_flops(self, input_grad=True):
        return math.prod(self.output_shape)

    def explain(self, index, first):
        p = self.rate
        sec = Explanation(f"layers[{index}]: dropout {p:g}")
        sec.forward.append(Equation(f"training: y = x * m / (1 - {p:g}), m ~ Bernoulli({1 - p:g}); inference: y = x",
                                    rf"y = x \odot m / (1 - {p:g}),\quad m \sim \mathrm{{Bernoulli}}({1 - p:g})",
                                    batch_shape(self.input_shape)))
        sec.backward.append(Equation(f"dx = dy * m / (1 - {p:g})",
                                     rf"\partial L/\partial x = \partial L/\partial y \odot m / (1 - {p:g})"))
        return sec


@register("batch_norm")
class BatchNorm(Layer):
    """Batch normalization over the last axis; see the module docstring."""

    check_output_shape = False

    def __init__(self, *, momentum=0.9, epsilon=1e-5):
        super().__init__()
        self.momentum = validate.number("momentum", momentum, low=0.0, high=1.0, high_open=True)
        self.epsilon = validate.number("epsilon", epsilon, low=0.0, low_open=True)

    def config(self):
        return {"type": self.type_name, "momentum": self.momentum, "epsilon": self.epsilon}

    def setup(self, input_shape, rng):
        if len(input_shape) not in (1, 3):
            raise self.shape_error(f"expected an input of shape (D,) or (H, W, C); got {input_shape}")
        c = input_shape[-1]
        self.params["gamma"] = np.ones(c, dtype=self.dtype)  # (C,): small, even when not allocating
        self.params["beta"] = np.zeros(c, dtype=self.dtype)
        self.buffers["running_mean"] = np.zeros(c, dtype=self.dtype)
        self.buffers["running_var"] = np.ones(c, dtype=self.dtype)
        return input_shape

    def weight_count(self):
        return self.params["gamma"].size

    def bias_count(self):
        return self.params["beta"].size

    def parameter_calculation(self):
        return f"2x{self.input_shape[-1]}"

    def forward_flops(self):
        return 4 * math.prod(self.input_shape)

    def backward_flops(self, input_grad=True):
        return 10 * math.prod(self.output_shape)

    def explain(self, index, first):
        c = self.input_shape[-1]
        sec = Explanation(f"layers[{index}]: batch_norm")
        sec.forward.append(Equation("xhat = (x - mu) / sqrt(var + eps), y = gamma * xhat + beta (training: batch "
                                    "statistics over all axes but the last; inference: running statistics)",
                                    r"\hat x = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}},\quad y = \gamma \hat x + \beta",
                                    f"gamma, beta: ({c},)"))
        sec.arithmetic.append(f"parameters: {self.parameter_text()} (and 2x{c} running statistics)")
        sec.backward.append(Equation("dbeta = sum dy, dgamma = sum dy * xhat, dx = gamma/(m sqrt(var+eps)) "
                                     "(m dy - sum dy - xhat sum(dy * xhat))",
                                     r"\frac{\partial L}{\partial x} = \frac{\gamma}{m\sqrt{\sigma^2+\epsilon}}"
                                     r"\Big(m\,\partial_y L - \sum \partial_y L - \hat x \sum \partial_y L\,\hat x\Big)"))
        return sec

    def forward(self, x, training=False):
        axes = tuple(range(x.ndim - 1))
        gamma, beta = self.params["gamma"], self.params["beta"]
        # Frozen (trainable: false), it normalizes with its running statistics and leaves
        # them alone, as Keras does: fine-tuning must not drift what it froze.
        training = training and self.trainable
        self._training = training
        if training:
            m = x.size // x.shape[-1]
            mean = x.mean(axis=axes)
            centered = x - mean
            var = (centered * centered).mean(axis=axes)
            inv_std = 1.0 / np.sqrt(var + self.epsilon)
            unbiased = var * (m / max(m - 1, 1))
            mom = self.momentum
            self.buffers["running_mean"] *= mom
            self.buffers["running_mean"] += (1 - mom) * mean
            self.buffers["running_var"] *= mom
            self.buffers["running_var"] += (1 - mom) * unbiased
        else:
            centered = x - self.buffers["running_mean"]
            inv_std = 1.0 / np.sqrt(self.buffers["running_var"] + self.epsilon)
        xhat = centered * inv_std.astype(x.dtype, copy=False)
        self._xhat, self._inv_std = xhat, inv_std.astype(x.dtype, copy=False)
        return xhat * gamma + beta

    def backward(self, dy):
        axes = tuple(range(dy.ndim - 1))
        xhat, inv_std, gamma = self._xhat, self._inv_std, self.params["gamma"]
        dbeta = dy.sum(axis=axes)
        dgamma = (dy * xhat).sum(axis=axes)
        if self.needs_param_grads:
            self.grads["gamma"], self.grads["beta"] = dgamma, dbeta
        if not self._training:
            return dy * (gamma * inv_std)
        m = dy.size // dy.shape[-1]
        return (gamma * inv_std / m) * (m * dy - dbeta - xhat * dgamma)
