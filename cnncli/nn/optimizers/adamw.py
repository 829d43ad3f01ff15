r"""``adamw``, Adam with decoupled weight decay (Loshchilov & Hutter), as ``torch.optim.AdamW``.

.. math::

    W \leftarrow (1 - \eta\lambda)\, W, \quad
    m \leftarrow \beta_1 m + (1-\beta_1) g, \quad v \leftarrow \beta_2 v + (1-\beta_2) g^2, \quad
    W \leftarrow W - \eta\, \frac{m / (1-\beta_1^t)}{\sqrt{v / (1-\beta_2^t)} + \epsilon}

``lambda`` is ``weight_decay`` (0.01, as PyTorch). The weights shrink by ``eta lambda`` of
themselves in each update, whatever the gradient: unlike L2 decay (``adam`` with
``weight_decay``), the decay is not added to ``g``, so Adam's per-parameter scaling does
not weaken it where gradients are large. ``eta`` is this update's learning rate, from the
schedule, in the decay as in the step. ``g`` is clipped first (``clip_norm``) as for every
optimizer. The rest as ``adam``: ``eta`` 0.001, ``beta1`` 0.9, ``beta2`` 0.999, ``eps`` 1e-8.
"""

from __future__ import annotations

from cnncli.nn.optimizers.adam import Adam
from cnncli.nn.registry import register


@register("adamw")
class AdamW(Adam):
    """AdamW: Adam, with the weights decayed by lr * weight_decay of themselves in each update."""

    decoupled_weight_decay = True
    update_flops = Adam.update_flops + 1  # the decay: W times (1 - eta lambda), one scalar

    def __init__(self, *, weight_decay=0.01, **kwargs):
        super().__init__(weight_decay=weight_decay, **kwargs)

    def update(self, w, g, slots, lr):
        w *= 1 - lr * self.weight_decay  # exact (w * 1.0) when weight_decay is 0
        super().update(w, g, slots, lr)

    def rule(self):
        lr, wd = f"{self.lr:g}", f"{self.weight_decay:g}"
        decay = (f"W <- W - {lr} * {wd} W   (decoupled weight decay, before the Adam step)",
                 rf"W \leftarrow W - {lr} \cdot {wd}\, W")
        return [decay, *super().rule()]
