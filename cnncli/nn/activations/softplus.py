r"""``softplus``, the paper's Eqs. 18-19.

.. math::  a = \ln(1 + e^z), \qquad g'(z) = \frac{1}{1 + e^{-z}} = 1 - e^{-a}

Range (0, inf). ``ln(1 + e^z) = max(z, 0) + ln(1 + e^-|z|)``: no overflow for any finite
``z``; the derivative is read from the output, ``-expm1(-a)`` keeping precision where
``a`` is tiny.
"""

from __future__ import annotations

import math

import numpy as np

from cnncli.nn.activations.base import Activation
from cnncli.nn.functional import softplus
from cnncli.nn.registry import register


@register("softplus")
class Softplus(Activation):
    """a = ln(1 + e^z); g'(z) = sigmoid(z) = 1 - e^-a."""

    monotonic = True
    backward_from_output = True
    output_range = (0.0, math.inf)
    backward_flops = 3

    def forward(self, z):
        return softplus(z)

    def backward(self, a, da, z=None):
        return da * -np.expm1(-a)

    def formula(self):
        return "a = ln(1 + e^z)", r"a = \ln(1 + e^{z})"

    def derivative_formula(self):
        return "g'(z) = 1 - e^-a = sigmoid(z)", r"g'(z) = 1 - e^{-a} = \sigma(z)"
