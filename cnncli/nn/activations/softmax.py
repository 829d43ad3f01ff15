r"""``softmax`` along the last axis (the classes), the paper's Eqs. 20-21.

.. math::  a_k = \frac{e^{z_k}}{\sum_j e^{z_j}}, \qquad
           J = \mathrm{diag}(a) - a a^\top, \quad \delta = a \odot \Big(\frac{\partial L}{\partial a}
           - \big\langle \frac{\partial L}{\partial a}, a \big\rangle\Big)

Each row lies in (0, 1) and sums to 1. The row maximum is subtracted first.
"""

from __future__ import annotations

from cnncli.nn.activations.base import Activation
from cnncli.nn.describe import Equation
from cnncli.nn.functional import softmax
from cnncli.nn.registry import register


@register("softmax")
class Softmax(Activation):
    """Softmax along the last axis (the classes)."""

    backward_from_output = True
    output_range = (0.0, 1.0)
    sums_to_one = True
    backward_flops = 4

    def forward(self, z):
        return softmax(z)

    def backward(self, a, da, z=None):
        return a * (da - (da * a).sum(axis=-1, keepdims=True))

    def derivative(self, z):
        a = self.forward(z)
        return a * (1 - a)  # the diagonal of the Jacobian

    def formula(self):
        return "a_k = e^z_k / sum_j e^z_j", r"a_k = \frac{e^{z_k}}{\sum_j e^{z_j}}"

    def equations(self, shape):
        forward = self.formula()
        return ([Equation(*forward, shape)],
                [Equation("delta = a * (dL/da - sum_k a_k dL/da_k)",
                          r"\delta = a \odot \Big(\frac{\partial L}{\partial a} - \sum_k a_k "
                          r"\frac{\partial L}{\partial a_k}\Big)", shape)], [])
