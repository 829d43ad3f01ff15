r"""``mse``, the paper's Eq. 5 (with ``half: true``) and Eq. 6.

.. math::  E = \frac{1}{n}\sum (\hat y - y)^2, \qquad \frac{\partial E}{\partial \hat y} = \frac{2}{n}(\hat y - y)

``half: true`` puts the paper's 1/2 in front (gradient ``yhat - y``, ERRATA 4).
``mean`` averages over every output of every example, as ``torch.nn.MSELoss``.
"""

from __future__ import annotations

import numpy as np

from cnncli.nn import validate
from cnncli.nn.losses.base import Loss
from cnncli.nn.registry import register


@register("mse")
class MeanSquaredError(Loss):
    """(yhat - y)^2 per value (x 1/2 with half: true)."""

    def __init__(self, *, reduction="mean", half=False):
        super().__init__(reduction=reduction)
        self.half = validate.boolean("half", half)

    def config(self):
        return {"name": self.name, "reduction": self.reduction, "half": self.half}

    def sum_and_gradient(self, y_pred, y, from_logits=False):
        diff = y_pred - y
        factor = 0.5 if self.half else 1.0
        return factor * float(np.sum(diff * diff)), diff * y_pred.dtype.type(2 * factor)

    def formula(self, s, s_tex):
        h, h_tex = ("1/2 ", r"\frac{1}{2}") if self.half else ("", "")
        d = "" if self.half else "2 "
        d_tex = "" if self.half else "2"
        return (f"E = {s}{h}sum (yhat - y)^2", rf"E = {s_tex}{h_tex}\sum (\hat y - y)^2",
                f"dE/dyhat = {s}{d}(yhat - y)", rf"\frac{{\partial E}}{{\partial \hat y}} = {s_tex}{d_tex}(\hat y - y)")
