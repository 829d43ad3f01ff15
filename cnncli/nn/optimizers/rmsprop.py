r"""``rmsprop``, the paper's Eq. 27: ``E <- rho E + (1-rho) g^2;  W <- W - eta g / (sqrt(E) + eps)``.

``eps`` outside the square root (ERRATA 10). ``eta`` 0.001, ``rho`` 0.9, ``eps`` 1e-8.
"""

from __future__ import annotations

import numpy as np

from cnncli.nn import validate
from cnncli.nn.optimizers.base import Optimizer
from cnncli.nn.registry import register


@register("rmsprop")
class RMSprop(Optimizer):
    """Gradients divided by a running RMS of past gradients."""

    slots = ("avg_sq_grad",)
    default_lr = 0.001
    update_flops = 8

    def __init__(self, *, rho=0.9, epsilon=1e-8, **kwargs):
        super().__init__(**kwargs)
        self.rho = validate.number("rho", rho, low=0.0, high=1.0, high_open=True)
        self.epsilon = validate.number("epsilon", epsilon, low=0.0, low_open=True)

    def hyperparameters(self):
        return {"rho": self.rho, "epsilon": self.epsilon}

    def update(self, w, g, slots, lr):
        e = slots["avg_sq_grad"]
        e *= self.rho
        e += (1 - self.rho) * g * g
        w -= lr * g / (np.sqrt(e) + self.epsilon)

    def rule(self):
        lr, rho, rho1, eps = f"{self.lr:g}", f"{self.rho:g}", f"{1 - self.rho:g}", f"{self.epsilon:g}"
        return [(f"E <- {rho} E + {rho1} g^2;  W <- W - {lr} g / (sqrt(E) + {eps})",
                 rf"E \leftarrow {rho} E + {rho1} g^2,\quad W \leftarrow W - \frac{{{lr}\,g}}{{\sqrt{{E}} + {eps}}}")]
