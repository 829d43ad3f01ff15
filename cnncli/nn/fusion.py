"""The network's execution plan: which layers run together, and how.

``Network.build`` turns its layers into a list of steps (:func:`plan`). A step runs one
layer as written, or a few neighbouring layers as one operation that computes the same
function faster:

* :class:`PoolAfterActivation`, a layer with a non-decreasing activation ``g`` followed
  by max pooling: ``maxpool(g(z)) = g(maxpool(z))``, so ``g`` and its derivative run on
  the pooled values only (a quarter of them for 2x2 pooling).
* :class:`ConvMaxPool`, a (fast) conv layer followed by a max pooling that tiles its
  output exactly: the conv emits its rows grouped by window offset, so the pooling
  reads contiguous blocks instead of strided views, forward and backward; the
  activation runs after pooling as above.

Nothing else in the engine knows about fusion: each layer keeps one plain forward and
backward path, and a step only calls the layers' own kernels in another order. The
layers as written are always available (``Network.layer_outputs``, ``build(fuse=False)``),
and the tests hold each fused step to them, ties included.
"""

from __future__ import annotations

import numpy as np

from cnncli.nn import parallel
from cnncli.nn.layers import ActivatedLayer, Conv2D, Layer, MaxPool2D
from cnncli.nn.layers.pool import record_winner


class Step:
    """One unit of the plan: ``forward(x, training)`` and ``backward(dy)`` over the
    layers ``indices`` (positions in the network)."""

    indices: tuple[int, ...] = ()

    def forward(self, x: np.ndarray, training: bool, *, logits: bool = False) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dy: np.ndarray, *, logits: bool = False) -> np.ndarray | None:
        raise NotImplementedError

    def describe(self) -> str:
        return type(self).__name__


class Single(Step):
    """One layer, as written."""

    def __init__(self, index: int, layer: Layer):
        self.indices, self.layer = (index,), layer

    def forward(self, x, training, *, logits=False):
        if logits and isinstance(self.layer, ActivatedLayer):
            return self.layer.forward(x, training, logits=True)
        return self.layer.forward(x, training)

    def backward(self, dy, *, logits=False):
        if logits and isinstance(self.layer, ActivatedLayer):
            return self.layer.backward(dy, logits=True)
        return self.layer.backward(dy)

    def describe(self):
        return f"layers[{self.indices[0]}]"


class PoolAfterActivation(Step):
    """``layer`` (activation ``g``, non-decreasing) then max pooling, with ``g`` applied
    after the pooling: the same values, ``g`` and ``g'`` on a fraction of them."""

    def __init__(self, index: int, layer: ActivatedLayer, pool: MaxPool2D):
        self.indices, self.layer, self.pool = (index, index + 1), layer, pool
        self.activation = layer.activation

    def forward(self, x, training, *, logits=False):
        z = self.layer.forward_linear(x, training)
        pooled = self.pool.forward(z, training)  # max z
        self._out = self.activation.forward(pooled)
        self._pooled = None if self.activation.backward_from_output else pooled
        return self._out

    def backward(self, dy, *, logits=False):
        dpooled = self.activation.backward(self._out, dy, self._pooled)  # dL/d(max z)
        return self.layer.backward_linear(self.pool.backward(dpooled))

    def describe(self):
        return f"layers[{self.indices[0]}-{self.indices[1]}]: {self.activation.name} after max pooling"


class ConvMaxPool(Step):
    """A fast conv layer and the tiling max pooling after it, as one operation.

    The conv writes its output rows grouped by the pooling's window offset,
    (P, N, H'/ph, W'/pw, F) with P = ph*pw (``Conv2D.forward_rows``); the maximum over P
    is then elementwise over contiguous blocks. Winners are recorded as in
    ``MaxPool2D`` (the first maximum in row-major window order wins ties), and the
    gradient goes back to the conv in the same blocked order (``Conv2D.backward_rows``).
    """

    def __init__(self, index: int, conv: Conv2D, pool: MaxPool2D):
        self.indices, self.conv, self.pool = (index, index + 1), conv, pool
        self.blocks = pool.pool_size
        self.activation = None if conv.activation.name == "linear" else conv.activation

    def forward(self, x, training, *, logits=False):
        self._x, self._winner_known = x, training
        blocked = self.conv.forward_rows(x, self.blocks)  # (P, N, H'', W'', F)
        out = np.empty(blocked.shape[1:], dtype=blocked.dtype)  # (N, H'', W'', F)
        winner = np.empty(blocked.shape[1:], dtype=np.uint8) if training else None
        act = self.activation
        keep_z = act is not None and not act.backward_from_output
        pooled = np.empty_like(out) if keep_z else None

        def pool(a, b):  # examples a..b
            best = out[a:b]
            np.copyto(best, blocked[0, a:b])
            if training:
                won = winner[a:b]
                won.fill(0)
            for k in range(1, blocked.shape[0]):
                block = blocked[k, a:b]
                if training:
                    record_winner(won, block > best, k)
                np.maximum(best, block, out=best)
            if keep_z:
                np.copyto(pooled[a:b], best)
            if act is not None:
                best[...] = act.forward(best)

        parallel.run(pool, parallel.chunks(blocked.shape[1], blocked[:, 0].size))
        self._blocked_shape, self._winner, self._out, self._pooled = blocked.shape, winner, out, pooled
        return out

    def backward(self, dy, *, logits=False):
        if not self._winner_known:  # the forward pass was inference: record the winners now
            self.forward(self._x, training=True)
        act = self.activation
        dz = self.conv.workspace("dz_blocked", self._blocked_shape, dy.dtype)  # (P, N, H'', W'', F)

        def route(a, b):  # examples a..b
            d = dy[a:b] if act is None else act.backward(
                self._out[a:b], dy[a:b], None if self._pooled is None else self._pooled[a:b])  # dL/d(max z)
            won = self._winner[a:b]
            for k in range(self._blocked_shape[0]):
                np.multiply(d, won == k, out=dz[k, a:b])

        parallel.run(route, parallel.chunks(dy.shape[0], dz[:, 0].size))
        return self.conv.backward_rows(dz, self.blocks)

    def describe(self):
        what = "" if self.activation is None else f", {self.activation.name} after pooling"
        return f"layers[{self.indices[0]}-{self.indices[1]}]: conv2d rows blocked by pooling window{what}"


def _tiles_conv_output(conv: Conv2D, pool: MaxPool2D) -> bool:
    (ho, wo), (ph, pw) = conv.out_hw, pool.pool_size
    return pool.tiles_input() and ho % ph == 0 and wo % pw == 0


def plan(layers: list[Layer], fuse: bool = True) -> list[Step]:
    """The steps that run ``layers`` (built); ``fuse=False``: one step per layer."""
    steps: list[Step] = []
    i = 0
    while i < len(layers):
        layer, after = layers[i], layers[i + 1] if i + 1 < len(layers) else None
        if fuse and isinstance(after, MaxPool2D) and isinstance(layer, ActivatedLayer):
            act = layer.activation
            activation_commutes = act.name == "linear" or act.monotonic
            if (isinstance(layer, Conv2D) and layer.implementation == "fast" and activation_commutes
                    and _tiles_conv_output(layer, after)):
                steps.append(ConvMaxPool(i, layer, after))
                i += 2
                continue
            if act.name != "linear" and act.monotonic:
                steps.append(PoolAfterActivation(i, layer, after))
                i += 2
                continue
        steps.append(Single(i, layer))
        i += 1
    return steps
