r"""``relu``, the paper's Eqs. 14-15.

.. math::  a = \max(0, z), \qquad g'(z) = [a > 0]

``g'(0) = 0``, as PyTorch and Keras compute it (ERRATA 3: the paper's Eq. 15 says 1).
Range [0, inf).
"""

from __future__ import annotations

import math

import numpy as np

from cnncli.nn.activations.base import Activation
from cnncli.nn.registry import register


@register("relu")
class ReLU(Activation):
    """a = max(0, z); g'(z) = 1 if a > 0 else 0."""

    monotonic = True
    backward_from_output = True
    output_range = (0.0, math.inf)
    zero_on_half_line = True
    backward_flops = 1

    def forward(self, z):
        return np.maximum(z, 0)

    def backward(self, a, da, z=None):
        return np.where(a > 0, da, 0).astype(da.dtype, copy=False)

    def formula(self):
        return "a = max(0, z)", r"a = \max(0, z)"

    def derivative_formula(self):
        return "g'(z) = 1 if a > 0 else 0", r"g'(z) = [a > 0]"
