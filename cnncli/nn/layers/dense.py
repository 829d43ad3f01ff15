r"""Fully connected layer and flatten.

Dense, row-vector convention (ERRATA 12; the paper's Eqs. 37-38 garble the transposes):

.. math::

    z = X W + b, \qquad a = g(z)

    \delta = dL/da \odot g'(z), \quad dW = X^T \delta, \quad db = \sum_n \delta_n, \quad dX = \delta W^T

Shapes:
    X: (N, D)   W: (D, U)   b: (U,)   z, a, delta: (N, U)   dX: (N, D)

Flatten keeps the (h, w, c) order of NHWC memory: ``(N, H, W, C) -> (N, H*W*C)``, so
feature ``(h, w, c)`` lands at index ``(h*W + w)*C + c`` (ERRATA 19). Checkpoints depend on it.
"""

from __future__ import annotations

import math

import numpy as np

from cnncli.nn import parallel, validate
from cnncli.nn.describe import Equation, Explanation
from cnncli.nn.initializers import make_initializer
from cnncli.nn.layers.base import ActivatedLayer, Layer
from cnncli.nn.registry import register


@register("flatten")
class Flatten(Layer):
    """(N, H, W, C) -> (N, H*W*C), order (h, w, c)."""

    check_output_shape = False

    def config(self):
        return {"type": self.type_name}

    def setup(self, input_shape, rng):
        return (math.prod(input_shape),)

    def forward(self, x, training=False):
        self._shape = x.shape
        return x.reshape(x.shape[0], math.prod(x.shape[1:]))  # (N, H*W*C); works for N = 0

    def backward(self, dy):
        return dy.reshape(self._shape)  # (N, H, W, C)

    def forward_flops(self):
        return 0

    def backward_flops(self, input_grad=True):
        return 0

    def explain(self, index, first):
        shape = self.input_shape
        h, w, c = shape if len(shape) == 3 else (1, 1, shape[0])
        sec = Explanation(f"layers[{index}]: flatten")
        sec.forward.append(Equation(f"x[n, (h*{w} + w)*{c} + c] = X[n, h, w, c]",
                                    rf"x_{{n,\,(h\cdot{w} + w)\cdot{c} + c}} = X_{{n,h,w,c}}",
                                    f"(N, {h}, {w}, {c}) -> (N, {h * w * c})"))
        sec.arithmetic.append(f"{h} x {w} x {c} = {h * w * c} features, in (h, w, c) order")
        sec.backward.append(Equation("dX = dx reshaped back",
                                     r"\partial L/\partial X = \text{reshape}(\partial L/\partial x)",
                                     "(N, " + ", ".join(str(d) for d in shape) + ")"))
        return sec


@register("dense")
class Dense(ActivatedLayer):
    """``a = g(X W + b)``; see the module docstring."""

    check_output_shape = False

    def __init__(self, *, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros"):
        super().__init__(activation)
        self.units = validate.positive_int("units", units)
        self.use_bias = validate.boolean("use_bias", use_bias)
        make_initializer(kernel_initializer, "kernel_initializer")
        make_initializer(bias_initializer, "bias_initializer")
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer

    def config(self):
        return {"type": self.type_name, "units": self.units, "activation": self.activation_config(),
                "use_bias": self.use_bias, "kernel_initializer": self.kernel_initializer,
                "bias_initializer": self.bias_initializer}

    def setup(self, input_shape, rng):
        if len(input_shape) != 1:
            raise self.shape_error(
                f"expected a flat input (D,); got {input_shape} (put a flatten layer before it)")
        d = input_shape[0]
        self.add_parameter("kernel", (d, self.units), self.kernel_initializer, rng, d, self.units)
        if self.use_bias:
            self.add_parameter("bias", (self.units,), self.bias_initializer, rng, d, self.units)
        return (self.units,)

    # -- what summary, explain and the memory check ask ---------------------------------
    def parameter_calculation(self):
        d = self.input_shape[0]
        return f"[{d}+1]x{self.units}" if self.use_bias else f"{d}x{self.units}"

    def forward_flops(self):
        return 2 * self.input_shape[0] * self.units + (self.units if self.use_bias else 0)

    def linear_backward_flops(self, input_grad):
        gemm = 2 * self.input_shape[0] * self.units
        return gemm + (self.units if self.use_bias else 0) + (gemm if input_grad else 0)

    def explain(self, index, first):
        d, u = self.input_shape[0], self.units
        sec = Explanation(f"layers[{index}]: dense {u}, {self.activation.name}")
        bias = " + b" if self.use_bias else ""
        sec.forward.append(Equation(f"z = X W{bias}", "z = XW" + bias, f"X: (N, {d}); W: ({d}, {u}); z: (N, {u})"))
        act_forward, act_backward, act_notes = self.activation.equations(f"(N, {u})")
        sec.forward += act_forward
        sec.notes += act_notes
        sec.arithmetic.append(f"parameters: {self.parameter_text()}")
        sec.backward += act_backward
        sec.backward.append(Equation("dW = X^T delta", r"\frac{\partial L}{\partial W} = X^{\top}\delta",
                                     f"dW: ({d}, {u})"))
        if self.use_bias:
            sec.backward.append(Equation("db = sum_n delta[n]", r"\frac{\partial L}{\partial b} = \sum_n \delta_n",
                                         f"db: ({u},)"))
        if not first:
            sec.backward.append(Equation("dX = delta W^T", r"\frac{\partial L}{\partial X} = \delta W^{\top}",
                                         f"dX: (N, {d})"))
        return sec

    # -- computation ----------------------------------------------------------------------
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
        grad = np.empty(kernel.shape, dtype=dz.dtype) if self.needs_param_grads else None  # (D, U)
        dx = np.empty(x.shape, dtype=dz.dtype) if self.needs_input_grad else None  # (N, D)

        def products(a, b):  # input features a..b: rows a..b of dW, columns a..b of dX
            if grad is not None:
                np.matmul(x[:, a:b].T, dz, out=grad[a:b])
            if dx is not None:
                np.matmul(dz, kernel[a:b].T, out=dx[:, a:b])

        parallel.run(products, parallel.chunks(kernel.shape[0], parallel.work(macs=2 * dz.size)))
        if grad is not None:
            self.grads["kernel"] = grad
            if self.use_bias:
                self.grads["bias"] = dz.sum(axis=0)
        return dx
