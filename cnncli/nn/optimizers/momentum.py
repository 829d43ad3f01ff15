r"""``momentum`` (ERRATA 7, Ruder's form): ``M <- gamma M + eta g;  W <- W - M``.

The paper's Eq. 23 multiplies ``gamma`` by ``W`` and subtracts the gradient; the
velocity ``M`` accumulates ``eta g``. With a constant rate this is exactly
``torch.optim.SGD(momentum=gamma)`` (whose buffer is ``M / eta``). ``gamma`` 0.9.
"""

from __future__ import annotations

from cnncli.nn import validate
from cnncli.nn.optimizers.base import Optimizer
from cnncli.nn.registry import register


@register("momentum")
class Momentum(Optimizer):
    """Heavy-ball momentum: M <- gamma M + eta g; W <- W - M."""

    slots = ("velocity",)
    update_flops = 4

    def __init__(self, *, momentum=0.9, **kwargs):
        super().__init__(**kwargs)
        self.momentum = validate.number("momentum", momentum, low=0.0, high=1.0, high_open=True)

    def hyperparameters(self):
        return {"momentum": self.momentum}

    def update(self, w, g, slots, lr):
        m = slots["velocity"]
        m *= self.momentum
        m += lr * g
        w -= m

    def rule(self):
        lr, m = f"{self.lr:g}", f"{self.momentum:g}"
        return [(f"M <- {m} M + {lr} g;  W <- W - M", rf"M \leftarrow {m} M + {lr}\,g,\quad W \leftarrow W - M")]
