"""``linear``: ``a = z``, the identity (no activation)."""

from __future__ import annotations

import math

from cnncli.nn.activations.base import Activation
from cnncli.nn.describe import Equation
from cnncli.nn.registry import register


@register("linear")
class Linear(Activation):
    """a = z."""

    monotonic = True
    backward_from_output = True
    output_range = (-math.inf, math.inf)
    backward_flops = 0

    def forward(self, z):
        return z

    def backward(self, a, da, z=None):
        return da

    def equations(self, shape):
        return ([Equation("a = z (no activation)", "a = z", shape)],
                [Equation("delta = dL/da", r"\delta = \partial L/\partial a", shape)], [])
