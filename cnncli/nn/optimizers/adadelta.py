r"""``adadelta``, Zeiler's (2012) (ERRATA 9: the paper's Eq. 26 repeats RMSprop).

.. math::

    E_g \leftarrow \rho E_g + (1-\rho) g^2, \quad
    D = \frac{\sqrt{E_d + \epsilon}}{\sqrt{E_g + \epsilon}}\, g, \quad
    E_d \leftarrow \rho E_d + (1-\rho) D^2, \quad W \leftarrow W - \eta D

``eta`` multiplies the step and is 1 by default, as in PyTorch; ``rho`` 0.9, ``eps`` 1e-6.
"""

from __future__ import annotations

import numpy as np

from cnncli.nn import validate
from cnncli.nn.optimizers.base import Optimizer
from cnncli.nn.registry import register


@register("adadelta")
class Adadelta(Optimizer):
    """Zeiler's Adadelta: steps scaled by the running RMS of past steps."""

    slots = ("avg_sq_grad", "avg_sq_delta")
    default_lr = 1.0
    update_flops = 14

    def __init__(self, *, rho=0.9, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.rho = validate.number("rho", rho, low=0.0, high=1.0, high_open=True)
        self.epsilon = validate.number("epsilon", epsilon, low=0.0, low_open=True)

    def hyperparameters(self):
        return {"rho": self.rho, "epsilon": self.epsilon}

    def update(self, w, g, slots, lr):
        eg, ed = slots["avg_sq_grad"], slots["avg_sq_delta"]
        rho, eps = self.rho, self.epsilon
        eg *= rho
        eg += (1 - rho) * g * g
        delta = np.sqrt(ed + eps) / np.sqrt(eg + eps) * g
        ed *= rho
        ed += (1 - rho) * delta * delta
        w -= lr * delta

    def rule(self):
        lr, rho, rho1, eps = f"{self.lr:g}", f"{self.rho:g}", f"{1 - self.rho:g}", f"{self.epsilon:g}"
        return [(f"E_g <- {rho} E_g + {rho1} g^2", rf"E_g \leftarrow {rho} E_g + {rho1}\, g^2"),
                (f"D <- sqrt(E_d + {eps}) / sqrt(E_g + {eps}) * g",
                 rf"D \leftarrow \frac{{\sqrt{{E_d + {eps}}}}}{{\sqrt{{E_g + {eps}}}}}\, g"),
                (f"E_d <- {rho} E_d + {rho1} D^2;  W <- W - {lr} D",
                 rf"E_d \leftarrow {rho} E_d + {rho1} D^2,\quad W \leftarrow W - {lr}\, D")]
