r"""``sigmoid``, the paper's Eqs. 10-11.

.. math::  a = \frac{1}{1 + e^{-z}}, \qquad g'(z) = a (1 - a)

Range (0, 1). Evaluated with ``e^{-|z|}`` on both branches, so no finite ``z`` overflows.
"""

from __future__ import annotations

from cnncli.nn.activations.base import Activation
from cnncli.nn.functional import sigmoid
from cnncli.nn.registry import register


@register("sigmoid")
class Sigmoid(Activation):
    """a = 1 / (1 + e^-z); g'(z) = a (1 - a)."""

    monotonic = True
    backward_from_output = True
    output_range = (0.0, 1.0)
    backward_flops = 3

    def forward(self, z):
        return sigmoid(z)

    def backward(self, a, da, z=None):
        return da * a * (1 - a)

    def formula(self):
        return "a = 1 / (1 + e^-z)", r"a = \frac{1}{1 + e^{-z}}"

    def derivative_formula(self):
        return "g'(z) = a (1 - a)", r"g'(z) = a(1 - a)"
