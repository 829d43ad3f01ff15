r"""``categorical_crossentropy``, the paper's Eq. 8, over the classes of each example.

.. math::  E = -\sum_n \sum_k y_{n,k} \ln \hat y_{n,k}, \qquad \frac{\partial E}{\partial \hat y} = -\frac{y}{\hat y}

From logits (a softmax output, or ``from_logits: true``): log-sum-exp and
``dE/dz = yhat - y`` (for soft targets ``yhat * sum_k y_k - y``). Given probabilities,
``yhat`` is clipped to ``[eps, 1]``. Targets: integer labels (n,) or one-hot/probability
rows (n, c); a label outside [0, c) is a DataError.
"""

from __future__ import annotations

import numpy as np

from cnncli.nn.losses.base import ClassLoss
from cnncli.nn.registry import register


@register("categorical_crossentropy")
class CategoricalCrossentropy(ClassLoss):
    """-sum_k y_k ln yhat_k per example."""

    def sum_and_gradient(self, y_pred, y, from_logits=False):
        log_q, q = self.log_probabilities(y_pred, from_logits)
        return float(-np.sum(y * log_q)), self.gradient(q, y, from_logits)

    def formula(self, s, s_tex):
        return (f"E = -{s}sum_n sum_k y[n,k] ln yhat[n,k]", rf"E = -{s_tex}\sum_n\sum_k y_{{n,k}}\ln \hat y_{{n,k}}",
                f"dE/dyhat = -{s}y / yhat", rf"\frac{{\partial E}}{{\partial \hat y}} = -{s_tex}\frac{{y}}{{\hat y}}")
