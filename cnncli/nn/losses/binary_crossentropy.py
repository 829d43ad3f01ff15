r"""``binary_crossentropy``, the paper's Eq. 7, for outputs in [0, 1].

.. math::  E = -\sum [y \ln \hat y + (1 - y) \ln(1 - \hat y)], \qquad
           \frac{\partial E}{\partial \hat y} = \frac{\hat y - y}{\hat y (1 - \hat y)}

From logits (a sigmoid output, or ``from_logits: true``): ``ln sigmoid`` computed stably
and ``dE/dz = sigmoid(z) - y`` (ERRATA 5: the paper's Eq. 46 has the wrong sign), finite
even where ``yhat`` rounds to 0 or 1. Given probabilities, ``yhat`` is clipped to
``[eps, 1 - eps]`` (``eps`` the dtype's machine epsilon). Targets: 0/1 (or soft) of
shape (n,) or the prediction's shape. ``mean`` averages over every output, as
``torch.nn.BCELoss``.
"""

from __future__ import annotations

import numpy as np

from cnncli.nn.errors import ConfigError
from cnncli.nn.functional import log_sigmoid, sigmoid
from cnncli.nn.losses.base import LogitsLoss
from cnncli.nn.registry import register


@register("binary_crossentropy")
class BinaryCrossentropy(LogitsLoss):
    """-[y ln yhat + (1 - y) ln(1 - yhat)] per output."""

    fused_activation = "sigmoid"

    def sum_and_gradient(self, y_pred, y, from_logits=False):
        if from_logits:
            z = y_pred
            # -[y ln s(z) + (1-y) ln(1-s(z))] with ln(1 - s(z)) = ln s(-z)
            total = -np.sum(y * log_sigmoid(z) + (1 - y) * log_sigmoid(-z))
            return float(total), sigmoid(z) - y
        eps = np.finfo(y_pred.dtype).eps
        p = np.clip(y_pred, eps, 1 - eps)
        total = -np.sum(y * np.log(p) + (1 - y) * np.log1p(-p))
        return float(total), (p - y) / (p * (1 - p))

    def probabilities(self, outputs):
        return sigmoid(outputs) if self.from_logits else outputs

    def check_output(self, activation, output_shape):
        super().check_output(activation, output_shape)
        low, high = activation.output_range or (-np.inf, np.inf)
        if not self.from_logits and not (low >= 0 and high <= 1):
            raise ConfigError("", "", None, raw=(
                f"{self.name} needs outputs in [0, 1], but the last layer's activation is {activation.name} "
                f"(range {low:g} to {high:g}); add activation: sigmoid to the last layer, or set "
                "loss.from_logits: true"))

    def formula(self, s, s_tex):
        return (f"E = -{s}sum_n [y ln yhat + (1 - y) ln(1 - yhat)]",
                rf"E = -{s_tex}\sum_n \big[y_n \ln \hat y_n + (1 - y_n)\ln(1 - \hat y_n)\big]",
                f"dE/dyhat = {s}(yhat - y) / (yhat (1 - yhat))",
                rf"\frac{{\partial E}}{{\partial \hat y}} = {s_tex}\frac{{\hat y - y}}{{\hat y(1 - \hat y)}}")
