r"""Fully connected layer and flatten.

Dense, row-vector convention (ERRATA 12; the paper's Eqs. 37-38 garble the transposes):

.. math::

    z = X W + b, \qquad a = g(z)

    \delta = dL/da \odot g'(z), \quad dW = X^T \delta, \quad db = \sum_n \delta_n, \quad dX = \delta W^T

Shapes:
    X: (N, D)   W: (D, U)   b: (U,)   z, a, delta: (N, U)   dX: (N, D)

Flatten keeps the (h, w, c) order of NHWC memory: ``(N, H, W, C) -> (N, H*W*C)``, so
feature ``(h, w, c)`` lands at index ``(h*W + w)*C + c``. Checkpoints depend on it.
"""

from __future__ import annotations

import math

import numpy as np

from cnncli.nn import _check, parallel
from cnncli.nn.initializers import INITIALIZERS, initialize
from cnncli.nn.layers.base import LAYERS, ActivatedLayer, Layer


@LAYERS.register("flatten")
class Flatten(Layer):
    """(N, H, W, C) -> (N, H*W*C), order (h, w, c)."""

    type_name = "flatten"

    def _build(self, input_shape, rng):
        return (math.prod(input_shape),)

    def forward(self, x, training=False):
        self._shape = x.shape
        return x.reshape(x.shape[0], math.prod(x.shape[1:]))  # (N, H*W*C); works for N = 0

    def backward(self, dy):
        return dy.reshape(self._shape)  # (N, H, W, C)


@LAYERS.register("dense")
class Dense(ActivatedLayer):
    """``a = g(X W + b)``; see the module docstring."""

    type_name = "dense"

    def __init__(self, *, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros"):
        super().__init__(activation)
        self.units = _check.positive_int("units", units)
        self.use_bias = _check.boolean("use_bias", use_bias)
        INITIALIZERS.get(kernel_initializer, "kernel_initializer")
        INITIALIZERS.get(bias_initializer, "bias_initializer")
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer

    def config(self):
        return {"type": self.type_name, "units": self.units, "activation": self.activation_config(),
                "use_bias": self.use_bias, "kernel_initializer": self.kernel_initializer,
                "bias_initializer": self.bias_initializer}

    def _build(self, input_shape, rng):
        if len(input_shape) != 1:
            raise self._shape_error(
                f"expected a flat input (D,); got {input_shape} (put a flatten layer before it)")
        d = input_shape[0]
        self.params["kernel"] = initialize(self.kernel_initializer, (d, self.units), rng, self.dtype,
                                           d, self.units)
        if self.use_bias:
            self.params["bias"] = initialize(self.bias_initializer, (self.units,), rng, self.dtype,
                                             d, self.units)
        return (self.units,)

    def forward_flops(self):
        return 2 * self.input_shape[0] * self.units + (self.units if self.use_bias else 0)

    def forward_linear(self, x, training):
        self._x = x  # (N, D)
        kernel = self.params["kernel"]
        z = np.empty((x.shape[0], self.units), dtype=kernel.dtype)  # (N, U)

        def product(a, b):  # output units a..b: each thread reads its own columns of W
            np.matmul(x, kernel[:, a:b], out=z[:, a:b])
            if self.use_bias:
                z[:, a:b] += self.params["bias"][a:b]

        parallel.run(product, parallel.chunks(self.units, parallel.work(macs=x.shape[0] * x.shape[1])))
        return z

    def backward_linear(self, dz):
        x, kernel = self._x, self.params["kernel"]
        grad = self.grads["kernel"] = np.empty(kernel.shape, dtype=dz.dtype)  # (D, U)
        dx = np.empty(x.shape, dtype=dz.dtype) if self.needs_input_grad else None  # (N, D)

        def products(a, b):  # input features a..b: rows a..b of dW, columns a..b of dX
            np.matmul(x[:, a:b].T, dz, out=grad[a:b])
            if dx is not None:
                np.matmul(dz, kernel[a:b].T, out=dx[:, a:b])

        parallel.run(products, parallel.chunks(kernel.shape[0], parallel.work(macs=2 * dz.size)))
        if self.use_bias:
            self.grads["bias"] = dz.sum(axis=0)
        return dx
