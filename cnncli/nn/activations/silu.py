r"""``silu`` (also ``swish``), the sigmoid-weighted linear unit (Elfwing, Uchibe & Doya;
Ramachandran, Zoph & Le), as ``torch.nn.SiLU``.

.. math::  a = z\,\sigma(z) = \frac{z}{1 + e^{-z}}, \qquad
           g'(z) = \sigma(z)\big(1 + z\,(1 - \sigma(z))\big)

Range about [-0.2785, inf): the minimum, at ``z = -1.2785``, makes ``g`` non-monotonic, so
max pooling cannot run before it, and ``g'`` needs ``z`` (``a`` has two preimages).

``sigma`` is the overflow-safe ``cnncli.nn.functional.sigmoid``, and ``1 - sigma(z)`` is
evaluated as ``sigma(-z)``, which keeps its precision where ``sigma(z)`` rounds to 1.
"""

from __future__ import annotations

import math

from cnncli.nn.activations.base import Activation
from cnncli.nn.functional import sigmoid
from cnncli.nn.registry import register


@register("silu", aliases=("swish",))
class SiLU(Activation):
    """a = z sigmoid(z); g'(z) = s (1 + z (1 - s)) with s = sigmoid(z)."""

    #: The minimum of z sigmoid(z), at z = -1.27846454276107 (where g'(z) = 0).
    output_range = (-0.2784645427610738, math.inf)
    # sigmoid (counted as 1), 1 - s, z (1 - s), 1 + ..., s (...), times dL/da
    backward_flops = 6

    def forward(self, z):
        return z * sigmoid(z)

    def derivative(self, z):
        s = sigmoid(z)
        return s * (1 + z * sigmoid(-z))

    def formula(self):
        return "a = z sigmoid(z) = z / (1 + e^-z)", r"a = z\,\sigma(z) = \frac{z}{1 + e^{-z}}"

    def derivative_formula(self):
        return ("g'(z) = s (1 + z (1 - s)),  s = sigmoid(z)",
                r"g'(z) = s\big(1 + z(1 - s)\big),\quad s = \sigma(z)")
