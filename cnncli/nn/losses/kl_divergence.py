r"""``kl_divergence``, the paper's Eq. 9: ``sum_k y_k (ln y_k - ln yhat_k)``, zero where
``y_k = 0``; the same gradient as categorical cross-entropy (``-y / yhat``, or
``yhat - y`` from logits)."""

from __future__ import annotations

import numpy as np

from cnncli.nn.losses.base import ClassLoss
from cnncli.nn.registry import register


@register("kl_divergence")
class KLDivergence(ClassLoss):
    """``sum_j y_j (ln y_j - ln yhat_j)``, the paper's Eq. 9; zero where ``y_j = 0``."""

    def sum_and_gradient(self, y_pred, y, from_logits=False):
        log_q, q = self.log_probabilities(y_pred, from_logits)
        positive = y > 0
        log_y = np.log(np.where(positive, y, 1))
        total = np.sum(np.where(positive, y * (log_y - log_q), 0))
        return float(total), self.gradient(q, y, from_logits)

    def formula(self, s, s_tex):
        return (f"E = {s}sum_n sum_k y[n,k] (ln y[n,k] - ln yhat[n,k])",
                rf"E = {s_tex}\sum_n\sum_k y_{{n,k}}(\ln y_{{n,k}} - \ln \hat y_{{n,k}})",
                f"dE/dyhat = -{s}y / yhat", rf"\frac{{\partial E}}{{\partial \hat y}} = -{s_tex}\frac{{y}}{{\hat y}}")
