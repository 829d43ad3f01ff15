r"""``sgd``, the paper's Eq. 22: ``W <- W - eta g`` (``eta`` 0.01 by default)."""

from __future__ import annotations

from cnncli.nn.optimizers.base import Optimizer
from cnncli.nn.registry import register


@register("sgd")
class SGD(Optimizer):
    """Plain stochastic gradient descent: W <- W - eta g."""

    update_flops = 2

    def update(self, w, g, slots, lr):
        w -= lr * g

    def rule(self):
        return [(f"W <- W - {self.lr:g} g", rf"W \leftarrow W - {self.lr:g}\, g")]
