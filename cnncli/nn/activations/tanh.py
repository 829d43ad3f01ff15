r"""``tanh``, the paper's Eqs. 12-13.

.. math::  a = \frac{e^z - e^{-z}}{e^z + e^{-z}}, \qquad g'(z) = 1 - a^2

Range (-1, 1), open (ERRATA 16: the paper's Table 2 says [-1, 1]).
"""

from __future__ import annotations

import numpy as np

from cnncli.nn.activations.base import Activation
from cnncli.nn.registry import register


@register("tanh")
class Tanh(Activation):
    """a = tanh(z); g'(z) = 1 - a^2."""

    monotonic = True
    backward_from_output = True
    output_range = (-1.0, 1.0)
    backward_flops = 3

    def forward(self, z):
        return np.tanh(z)

    def backward(self, a, da, z=None):
        return da * (1 - a * a)

    def formula(self):
        return "a = tanh(z)", r"a = \tanh(z)"

    def derivative_formula(self):
        return "g'(z) = 1 - a^2", r"g'(z) = 1 - a^2"
