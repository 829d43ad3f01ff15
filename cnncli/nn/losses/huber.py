r"""``huber``, with threshold ``delta`` (1.0), as ``torch.nn.HuberLoss``.

.. math::  E = \frac{1}{n}\sum h_\delta(\hat y - y), \quad
           h_\delta(d) = \begin{cases} \tfrac{1}{2} d^2 & |d| \le \delta \\
                                      \delta\,(|d| - \tfrac{1}{2}\delta) & |d| > \delta \end{cases},
           \qquad \frac{\partial E}{\partial \hat y} = \frac{1}{n}\,\mathrm{clip}(\hat y - y, -\delta, \delta)

Quadratic (as ``mse`` with ``half: true``) for small errors, linear (as ``mae``, times
``delta``) for large ones, so that outliers pull with at most ``delta``. ``mean``
averages over every output of every example, as ``torch.nn.HuberLoss``.

Evaluated with ``c = clip(d, -delta, delta)``, which is also the gradient, as
``c^2/2 + delta (|d| - |c|)``: both cases in one expression, squaring no large ``d`` (no
overflow, where ``d^2/2`` computed for every value and then discarded would).
"""

from __future__ import annotations

import numpy as np

from cnncli.nn import validate
from cnncli.nn.losses.base import Loss
from cnncli.nn.registry import register


@register("huber")
class Huber(Loss):
    """(yhat - y)^2 / 2 per value within delta, delta (|yhat - y| - delta / 2) beyond."""

    def __init__(self, *, reduction="mean", delta=1.0):
        super().__init__(reduction=reduction)
        self.delta = validate.number("delta", delta, low=0.0, low_open=True)

    def config(self):
        return {"name": self.name, "reduction": self.reduction, "delta": self.delta}

    def sum_and_gradient(self, y_pred, y, from_logits=False):
        diff = y_pred - y
        delta = y_pred.dtype.type(self.delta)
        clipped = np.clip(diff, -delta, delta)  # also dE/dyhat per value
        total = np.sum(0.5 * clipped * clipped + delta * (np.abs(diff) - np.abs(clipped)))
        return float(total), clipped

    def formula(self, s, s_tex):
        d, half = f"{self.delta:g}", f"{self.delta / 2:g}"
        return (f"E = {s}sum h(yhat - y),  h(e) = e^2 / 2 if |e| <= {d} else {d} (|e| - {half})",
                rf"E = {s_tex}\sum h(\hat y - y),\quad h(e) = \begin{{cases}} \tfrac{{1}}{{2}} e^2 & |e| \le {d} \\ "
                rf"{d}\,(|e| - {half}) & |e| > {d} \end{{cases}}",
                f"dE/dyhat = {s}clip(yhat - y, -{d}, {d})",
                rf"\frac{{\partial E}}{{\partial \hat y}} = {s_tex}\,\mathrm{{clip}}(\hat y - y, -{d}, {d})")
