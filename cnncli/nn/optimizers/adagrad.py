r"""``adagrad``, the paper's Eq. 25: ``G <- G + g^2;  W <- W - eta g / (sqrt(G) + eps)``.

``eps`` outside the square root (Duchi et al., PyTorch; ERRATA 10). ``eta`` 0.01,
``eps`` 1e-10.
"""

from __future__ import annotations

import numpy as np

from cnncli.nn import validate
from cnncli.nn.optimizers.base import Optimizer
from cnncli.nn.registry import register


@register("adagrad")
class Adagrad(Optimizer):
    """Per-parameter rates from the sum of squared gradients."""

    slots = ("sum_sq",)
    update_flops = 7

    def __init__(self, *, epsilon=1e-10, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = validate.number("epsilon", epsilon, low=0.0, low_open=True)

    def hyperparameters(self):
        return {"epsilon": self.epsilon}

    def update(self, w, g, slots, lr):
        acc = slots["sum_sq"]
        acc += g * g
        w -= lr * g / (np.sqrt(acc) + self.epsilon)

    def rule(self):
        lr, eps = f"{self.lr:g}", f"{self.epsilon:g}"
        return [(f"G <- G + g^2;  W <- W - {lr} g / (sqrt(G) + {eps})",
                 rf"G \leftarrow G + g^2,\quad W \leftarrow W - \frac{{{lr}\,g}}{{\sqrt{{G}} + {eps}}}")]
