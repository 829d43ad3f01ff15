r"""``mae``: ``E = mean |yhat - y|``; ``dE/dyhat = sign(yhat - y) / n`` (0 at 0)."""

from __future__ import annotations

import numpy as np

from cnncli.nn.losses.base import Loss
from cnncli.nn.registry import register


@register("mae")
class MeanAbsoluteError(Loss):
    """|yhat - y| per value."""

    def sum_and_gradient(self, y_pred, y, from_logits=False):
        diff = y_pred - y
        return float(np.sum(np.abs(diff))), np.sign(diff)

    def formula(self, s, s_tex):
        return (f"E = {s}sum |yhat - y|", rf"E = {s_tex}\sum |\hat y - y|", f"dE/dyhat = {s}sign(yhat - y)",
                rf"\frac{{\partial E}}{{\partial \hat y}} = {s_tex}\,\mathrm{{sign}}(\hat y - y)")
