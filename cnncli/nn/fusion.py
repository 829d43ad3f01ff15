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
from cnncli.nn.dynamics import norm
from cnncli.nn.layers import ActivatedLayer, Conv2D, Layer, MaxPool2D
from cnncli.nn.layers.pool import record_winner


class Step:
    """One unit of the plan: ``forward(x, training)`` and ``backward(dy)`` over the
    layers ``indices`` (positions in the network).

    For training dynamics (``cnncli.nn.dynamics``) a step also answers what each of its
    layers computed: ``activated_outputs`` and ``delta_norms``. While ``observed`` is
    set, a fused step keeps what it needs for that (references, no copies).
    """

    indices: tuple[int, ...] = ()
    observed = False

    def forward(self, x: np.ndarray, training: bool, *, logits: bool = False) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dy: np.ndarray, *, logits: bool = False) -> np.ndarray | None:
        raise NotImplementedError

    def activated_outputs(self, out: np.ndarray, *, logits: bool = False):
        """(layer index, activation, its output ``a``) for each layer of the step with a
        non-linear activation; ``out`` is the step's output (``z`` with ``logits``)."""
        return []

    def delta_norms(self, dy: np.ndarray) -> dict[int, float]:
        """Layer index -> ||dL/d(layer's output)|| for the step's layers, from ``dy``,
        dL/d(the step's output)."""
        return {self.indices[-1]: norm(dy)}

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

    def activated_outputs(self, out, *, logits=False):
        layer = self.layer
        if not isinstance(layer, ActivatedLayer) or layer.activation.name == "linear":
            return []
        return [(self.indices[0], layer.activation, layer.activation.forward(out) if logits else out)]

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
        self._z = z if self.observed else None
        return self._out

    def backward(self, dy, *, logits=False):
        dpooled = self.activation.backward(self._out, dy, self._pooled)  # dL/d(max z)
        return self.layer.backward_linear(self.pool.backward(dpooled))

    def activated_outputs(self, out, *, logits=False):
        return [(self.indices[0], self.activation, self.activation.forward(self._z))]

    def delta_norms(self, dy):
        # Windows that do not overlap route each dy to one cell: the norm passes unchanged.
        (sh, sw), (ph, pw) = self.pool.stride, self.pool.pool_size
        below = norm(dy) if sh >= ph and sw >= pw else norm(self.pool.backward(dy))
        return {self.indices[1]: norm(dy), self.indices[0]: below}

    def describe(self):
        return f"layers[{self.indices[0]}-{self.indices[1]}]: {self.activation.name} after max pooling"


#: Elements of one example group in the fused pooling's passes: its temporaries (the
#: activation's, the comparisons') stay a few megabytes however large the images.
GROUP_ELEMENTS = 1 << 20


def example_groups(start: int, stop: int, per_example: int):
    """(a, b) ranges covering examples start..stop, about GROUP_ELEMENTS elements each
    (at least one example). Elementwise passes give the same values in any grouping."""
    step = max(1, GROUP_ELEMENTS // max(per_example, 1))
    return [(a, min(a + step, stop)) for a in range(start, stop, step)]


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

        def pool(start, stop):  # examples start..stop, a group at a time (small temporaries)
            for a, b in example_groups(start, stop, out[0].size):
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
        self._blocked = blocked if self.observed else None
        return out

    def backward(self, dy, *, logits=False):
        if not self._winner_known:  # the forward pass was inference: record the winners now
            self.forward(self._x, training=True)
        act = self.activation
        # (P, N, H'', W'', F) in the conv's output workspace: the pooling has read it, and the
        # backward pass needs only the winners (one array of this size less to keep).
        p, n, hb, wb, f = self._blocked_shape
        dz = self.conv.workspace("z_blocked", (p, n * hb * wb, f), dy.dtype).reshape(self._blocked_shape)

        def route(start, stop):  # examples start..stop, a group at a time (small temporaries)
            for a, b in example_groups(start, stop, dy[0].size):
                d = dy[a:b] if act is None else act.backward(
                    self._out[a:b], dy[a:b], None if self._pooled is None else self._pooled[a:b])  # dL/d(max z)
                won = self._winner[a:b]
                for k in range(self._blocked_shape[0]):
                    np.multiply(d, won == k, out=dz[k, a:b])

        parallel.run(route, parallel.chunks(dy.shape[0], dz[:, 0].size))
        return self.conv.backward_rows(dz, self.blocks)

    def activated_outputs(self, out, *, logits=False):
        if self.activation is None:
            return []
        # The conv's whole output, (P, N, H'', W'', F) in blocked order: the statistics
        # do not depend on the order, and the channels stay on the last axis.
        return [(self.indices[0], self.activation, self.activation.forward(self._blocked))]

    def delta_norms(self, dy):
        # The pooling tiles the conv's output: each dy goes to one cell, the norm is kept.
        return {self.indices[1]: norm(dy), self.indices[0]: norm(dy)}

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
