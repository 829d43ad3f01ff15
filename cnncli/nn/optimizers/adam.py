r"""``adam``, the paper's Eq. 28 (Kingma & Ba), ``eps`` outside the square root (ERRATA 10).

.. math::

    m \leftarrow \beta_1 m + (1-\beta_1) g, \quad v \leftarrow \beta_2 v + (1-\beta_2) g^2, \quad
    W \leftarrow W - \eta\, \frac{m / (1-\beta_1^t)}{\sqrt{v / (1-\beta_2^t)} + \epsilon}

``t`` is this update's number, 1-based. ``eta`` 0.001, ``beta1`` 0.9, ``beta2`` 0.999,
``eps`` 1e-8.
"""

from __future__ import annotations

import numpy as np

from cnncli.nn import validate
from cnncli.nn.optimizers.base import Optimizer
from cnncli.nn.registry import register


@register("adam")
class Adam(Optimizer):
    """Adam: bias-corrected running means of the gradient and its square."""

    slots = ("m", "v")
    default_lr = 0.001
    update_flops = 12

    def __init__(self, *, beta1=0.9, beta2=0.999, epsilon=1e-8, **kwargs):
        super().__init__(**kwargs)
        self.beta1 = validate.number("beta1", beta1, low=0.0, high=1.0, high_open=True)
        self.beta2 = validate.number("beta2", beta2, low=0.0, high=1.0, high_open=True)
        self.epsilon = validate.number("epsilon", epsilon, low=0.0, low_open=True)

    def hyperparameters(self):
        return {"beta1": self.beta1, "beta2": self.beta2, "epsilon": self.epsilon}

    def update(self, w, g, slots, lr):
        m, v = slots["m"], slots["v"]
        b1, b2 = self.beta1, self.beta2
        t = self.t + 1  # this update's number, 1-based as in Kingma & Ba
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * g * g
        m_hat = m / (1 - b1 ** t)
        v_hat = v / (1 - b2 ** t)
        w -= lr * m_hat / (np.sqrt(v_hat) + self.epsilon)

    def rule(self):
        lr, b1, b2, eps = f"{self.lr:g}", f"{self.beta1:g}", f"{self.beta2:g}", f"{self.epsilon:g}"
        b1c, b2c = f"{1 - self.beta1:g}", f"{1 - self.beta2:g}"
        return [(f"m <- {b1} m + {b1c} g;  v <- {b2} v + {b2c} g^2",
                 rf"m \leftarrow {b1} m + {b1c}\, g,\quad v \leftarrow {b2} v + {b2c}\, g^2"),
                (f"W <- W - {lr} (m / (1 - {b1}^t)) / (sqrt(v / (1 - {b2}^t)) + {eps})",
                 rf"W \leftarrow W - {lr}\frac{{m/(1 - {b1}^t)}}{{\sqrt{{v/(1-{b2}^t)}} + {eps}}}")]
