r"""``elu``, the exponential linear unit (Clevert, Unterthiner & Hochreiter), with
``alpha`` (1.0), as ``torch.nn.ELU``.

.. math::  a = \begin{cases} z & z > 0 \\ \alpha (e^z - 1) & z \le 0 \end{cases}, \qquad
           g'(z) = \begin{cases} 1 & a > 0 \\ \alpha e^z = a + \alpha & a \le 0 \end{cases}

``g'(0) = alpha``, as PyTorch computes it. For ``alpha >= 0`` the sign of ``a`` is the sign
of ``z`` and ``alpha e^z = a + alpha``, so the derivative is read from the output, and
``g`` never decreases. Range (-alpha, inf).

``e^z - 1`` is ``expm1``, which keeps the precision of ``a`` for small ``|z|``; it is
evaluated at ``min(z, 0)`` only, so a large positive ``z`` overflows nothing.
"""

from __future__ import annotations

import math

import numpy as np

from cnncli.nn import validate
from cnncli.nn.activations.base import Activation
from cnncli.nn.registry import register


@register("elu")
class ELU(Activation):
    """a = z if z > 0 else alpha (e^z - 1), alpha >= 0 (default 1); g'(z) = 1 if z > 0 else a + alpha."""

    monotonic = True
    backward_from_output = True
    backward_flops = 3  # compare, a + alpha, times dL/da

    def __init__(self, *, alpha: float = 1.0):
        self.alpha = validate.number("alpha", alpha, low=0.0)
        self.output_range = (0.0 - self.alpha, math.inf)  # 0.0 - alpha: 0.0, not -0.0, for alpha 0

    def forward(self, z):
        alpha = z.dtype.type(self.alpha)
        return np.where(z > 0, z, alpha * np.expm1(np.minimum(z, 0)))

    def backward(self, a, da, z=None):
        # a + alpha = alpha e^z where z <= 0. For very negative z it cancels (relative
        # error about 1e-16 / e^z in float64), but its absolute error stays within the
        # rounding of a, about alpha * 1e-16: far below anything a gradient step resolves.
        return np.where(a > 0, da, da * (a + a.dtype.type(self.alpha)))

    def config(self):
        return {"name": self.name, "alpha": self.alpha}

    def formula(self):
        if self.alpha == 1:
            return "a = z if z > 0 else e^z - 1", r"a = \begin{cases} z & z > 0 \\ e^{z} - 1 & z \le 0 \end{cases}"
        s = f"{self.alpha:g}"
        return (f"a = z if z > 0 else {s} (e^z - 1)",
                rf"a = \begin{{cases}} z & z > 0 \\ {s}\,(e^{{z}} - 1) & z \le 0 \end{{cases}}")

    def derivative_formula(self):
        alpha = f"{self.alpha:g}"
        return (f"g'(z) = 1 if a > 0 else a + {alpha}",
                rf"g'(z) = \begin{{cases}} 1 & a > 0 \\ a + {alpha} & a \le 0 \end{{cases}}")
