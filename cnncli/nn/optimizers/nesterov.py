r"""``nesterov`` (ERRATA 8): ``M <- gamma M + eta g;  W <- W - (eta g + gamma M)``.

The paper's Eq. 24 evaluates the gradient at the look-ahead ``W - gamma M``. cnncli uses
the equivalent form of Sutskever et al. (and PyTorch): the stored weights *are* the
look-ahead point, so the gradient of the ordinary forward pass is the look-ahead
gradient, and ``W <- W - (eta g + gamma M_new)`` moves the look-ahead point.
"""

from __future__ import annotations

from cnncli.nn.optimizers.momentum import Momentum
from cnncli.nn.registry import register


@register("nesterov")
class Nesterov(Momentum):
    """Nesterov momentum, the look-ahead form of Sutskever et al."""

    update_flops = 6

    def update(self, w, g, slots, lr):
        m = slots["velocity"]
        m *= self.momentum
        step = lr * g
        m += step
        step += self.momentum * m
        w -= step

    def rule(self):
        lr, m = f"{self.lr:g}", f"{self.momentum:g}"
        return [(f"M <- {m} M + {lr} g;  W <- W - ({lr} g + {m} M)   (W is the look-ahead point)",
                 rf"M \leftarrow {m} M + {lr}\,g,\quad W \leftarrow W - ({lr}\,g + {m} M)")]
