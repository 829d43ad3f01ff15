r"""``leaky_relu``, the paper's Eqs. 16-17, with slope ``s`` (``negative_slope``, 0.01).

.. math::  a = \begin{cases} z & z > 0 \\ s z & z \le 0 \end{cases}, \qquad
           g'(z) = \begin{cases} 1 & a > 0 \\ s & a \le 0 \end{cases}

``g'(0) = s`` (ERRATA 17). For ``0 <= s < 1`` the sign of ``a`` is the sign of ``z``, so the
derivative is read from the output. Range (-inf, inf).
"""

from __future__ import annotations

import math

import numpy as np

from cnncli.nn import validate
from cnncli.nn.activations.base import Activation
from cnncli.nn.registry import register


@register("leaky_relu")
class LeakyReLU(Activation):
    """``max(z, s z)`` for a slope ``0 <= s < 1`` (default 0.01); g'(0) = s."""

    monotonic = True
    backward_from_output = True
    output_range = (-math.inf, math.inf)
    backward_flops = 2

    def __init__(self, *, negative_slope: float = 0.01):
        self.negative_slope = validate.number("negative_slope", negative_slope, low=0.0, high=1.0,
                                              high_open=True)

    def forward(self, z):
        return np.where(z > 0, z, z * z.dtype.type(self.negative_slope))

    def backward(self, a, da, z=None):
        return np.where(a > 0, da, da * da.dtype.type(self.negative_slope))

    def config(self):
        return {"name": self.name, "negative_slope": self.negative_slope}

    def formula(self):
        s = f"{self.negative_slope:g}"
        return f"a = z if z > 0 else {s} z", rf"a = \begin{{cases}} z & z > 0 \\ {s} z & z \le 0 \end{{cases}}"

    def derivative_formula(self):
        s = f"{self.negative_slope:g}"
        return f"g'(z) = 1 if a > 0 else {s}", rf"g'(z) = \begin{{cases}} 1 & a > 0 \\ {s} & a \le 0 \end{{cases}}"
