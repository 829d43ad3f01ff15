r"""Pooling: max, average and global average, NHWC (ERRATA 2 and 15).

Forward, for pool size ``(k_h, k_w)``, stride ``s`` and padding (ERRATA 2: the
paper's Eqs. 30-31 write ``max[sum ...]``):

.. math::

    y_{max}[n,i,j,c] = \max_{u<k_h, v<k_w} X_{pad}[n, s i + u, s j + v, c]

    y_{avg}[n,i,j,c] = \frac{1}{|w_{ij}|} \sum_{u<k_h, v<k_w} X_{pad}[n, s i + u, s j + v, c]

Max pooling pads with -inf, so padding never wins. Average pooling divides by
``|w_ij|``, the number of *real* (non-padding) cells of the window, as Keras does
(``count_include_pad: true`` divides by ``k_h k_w`` always, as PyTorch's default).

Backward (ERRATA 15): average pooling sends ``dy / |w_ij|`` to every cell of the window
(the paper's Eq. 41 lacks the ``1/k^2``); max pooling sends ``dy`` to the arg max only.
**Ties:** when several cells of a window hold the maximum, the first of them in
row-major window order (smallest ``u``, then smallest ``v``) receives the whole
gradient, as PyTorch's CPU kernel does. Overlapping windows (stride < pool size) add
their contributions.

Implementation: a loop over the ``k_h*k_w`` window offsets, each a vectorized operation
on a strided view of the whole batch; no loop over examples or pixels.

Shapes:
    x: (N, H, W, C)  ->  y: (N, H', W', C),  H' = floor((H + pt + pb - k_h) / s_h) + 1
    global_avg_pool2d: (N, H, W, C) -> (N, C)
"""

from __future__ import annotations

import numpy as np

from cnncli.nn import _check, parallel
from cnncli.nn.layers.base import LAYERS, Layer
from cnncli.nn.layers.conv import crop, output_size, pad_input, parse_padding, resolve_padding


class _Pool2D(Layer):
    def __init__(self, *, pool_size=2, stride=None, padding="valid"):
        super().__init__()
        self.pool_size = _check.pair("pool_size", pool_size)
        self.stride = self.pool_size if stride is None else _check.pair("stride", stride)
        self.padding = parse_padding("padding", padding)

    def config(self):
        return {"type": self.type_name, "pool_size": list(self.pool_size), "stride": list(self.stride),
                "padding": self.padding if isinstance(self.padding, str) else list(self.padding)}

    def _build(self, input_shape, rng):
        if len(input_shape) != 3:
            raise self._shape_error(f"expected an input of shape (H, W, C); got {input_shape}")
        h, w, c = input_shape
        kh, kw = self.pool_size
        self.pads = resolve_padding(self.padding, (h, w), self.pool_size, self.stride)
        pt, pb, pl, pr = self.pads
        if max(pt, pb) >= kh or max(pl, pr) >= kw:
            raise self._shape_error(
                f"padding {self.pads[:2]}x{self.pads[2:]} must be smaller than the pool size {kh}x{kw}")
        ho = output_size(h, pt, pb, kh, self.stride[0])
        wo = output_size(w, pl, pr, kw, self.stride[1])
        if ho < 1 or wo < 1:
            raise self._shape_error(
                f"pool {kh}x{kw} is larger than its padded input {h + pt + pb}x{w + pl + pr}; "
                f"input shape {input_shape}")
        self.out_hw = (ho, wo)
        return (ho, wo, c)

    def _offsets(self):
        """(u, v, row slice, column slice) of each window offset, in row-major order."""
        (kh, kw), (sh, sw), (ho, wo) = self.pool_size, self.stride, self.out_hw
        for u in range(kh):
            rows = slice(u, u + sh * (ho - 1) + 1, sh)
            for v in range(kw):
                yield u, v, rows, slice(v, v + sw * (wo - 1) + 1, sw)

    def forward_flops(self):
        ho, wo = self.out_hw
        return self.pool_size[0] * self.pool_size[1] * ho * wo * self.input_shape[2]


@LAYERS.register("max_pool2d")
class MaxPool2D(_Pool2D):
    """Max pooling; the gradient goes to the first maximum in row-major window order.

    The forward pass records, for every output, which window offset won (a uint8
    index; a later offset wins only when strictly greater, hence the tie rule), so the
    backward pass is one masked copy per offset. Inference (``training=False``) takes
    the maximum only; a backward pass after it records the winners then.

    When the layer before has a monotonic activation ``g`` (tanh, sigmoid, relu, ...),
    the network lets this layer apply it after pooling: ``max g(z) = g(max z)`` for a
    non-decreasing ``g``, so ``g`` and its derivative run on a quarter of the values
    (for 2x2 pooling). ``post_activation`` is that activation, or None.
    """

    type_name = "max_pool2d"

    def __init__(self, *, pool_size=2, stride=None, padding="valid"):
        super().__init__(pool_size=pool_size, stride=stride, padding=padding)
        self.post_activation = None
        #: Set by the network when the conv layer before delivers its output blocked by
        #: window offset, (kh*kw, N, H', W', C): each offset is then one contiguous block.
        self.blocked_input = False

    def forward(self, x, training=False):
        self._input, self._winner_known = x, training
        if self.blocked_input:
            return self._forward_blocked(x, training)
        xp = pad_input(x, self.pads, -np.inf)  # (N, Hp, Wp, C)
        out = winner = None
        for k, (_, _, rows, cols) in enumerate(self._offsets()):
            view = xp[:, rows, cols, :]  # (N, H', W', C)
            if out is None:
                out = view.copy()
                winner = np.zeros(out.shape, dtype=np.uint8) if training else None
                continue
            if training:
                better = view > out
                # winner = k where better: uint8 arithmetic (mod 256) beats masked assignment
                step = np.subtract(np.uint8(k), winner, dtype=np.uint8)
                step *= better
                winner += step
            np.maximum(out, view, out=out)  # like copyto(where=better), but NaN propagates
        self._padded_shape, self._winner = xp.shape, winner
        if self.post_activation is not None:
            out = self.post_activation.forward(out)
            self._out = out
        return out

    def _forward_blocked(self, x, training):
        """x: (P, N, H', W', C), one block per window offset -> (N, H', W', C)."""
        out = np.empty(x.shape[1:], dtype=x.dtype)
        winner = np.empty(x.shape[1:], dtype=np.uint8) if training else None
        post = self.post_activation

        def pool(a, b):  # examples a..b
            best = out[a:b]
            np.copyto(best, x[0, a:b])
            if training:
                won = winner[a:b]
                won.fill(0)
            for k in range(1, x.shape[0]):
                block = x[k, a:b]
                if training:
                    better = block > best
                    step = np.subtract(np.uint8(k), won, dtype=np.uint8)
                    step *= better
                    won += step
                np.maximum(best, block, out=best)
            if post is not None:
                best[...] = post.forward(best)

        parallel.run(pool, parallel.chunks(x.shape[1], x[:, 0].size))
        self._blocked_shape, self._winner = x.shape, winner
        if post is not None:
            self._out = out
        return out

    def backward(self, dy):
        if not self._winner_known:  # the forward pass was inference: record the winners now
            self.forward(self._input, training=True)
        post = self.post_activation
        if self.blocked_input:
            dx = self.workspace("dx_blocked", self._blocked_shape, dy.dtype)  # (P, N, H', W', C)

            def route(a, b):  # examples a..b
                d = dy[a:b] if post is None else post.backward(self._out[a:b], dy[a:b])  # dL/d(max z)
                won = self._winner[a:b]
                for k in range(self._blocked_shape[0]):
                    np.multiply(d, won == k, out=dx[k, a:b])

            parallel.run(route, parallel.chunks(dy.shape[0], dx[:, 0].size))
            return dx
        if post is not None:
            dy = post.backward(self._out, dy)  # dL/d(max z)
        overlapping = self.stride[0] < self.pool_size[0] or self.stride[1] < self.pool_size[1]
        dxp = self.workspace("dxp", self._padded_shape, dy.dtype)
        (ho, wo), (sh, sw) = self.out_hw, self.stride
        tiled = (not overlapping and self.stride == self.pool_size
                 and ho * sh == self._padded_shape[1] and wo * sw == self._padded_shape[2])
        if not tiled:
            dxp.fill(0)  # some cells belong to no window, or to several
        for k, (_, _, rows, cols) in enumerate(self._offsets()):
            won = self._winner == k
            if overlapping:
                dxp[:, rows, cols, :] += dy * won
            else:  # each cell is in one window at most: write it directly
                np.multiply(dy, won, out=dxp[:, rows, cols, :])
        return crop(dxp, self.pads)


@LAYERS.register("avg_pool2d")
class AvgPool2D(_Pool2D):
    """Average pooling over the real cells of each window (see ``count_include_pad``)."""

    type_name = "avg_pool2d"

    def __init__(self, *, pool_size=2, stride=None, padding="valid", count_include_pad=False):
        super().__init__(pool_size=pool_size, stride=stride, padding=padding)
        self.count_include_pad = _check.boolean("count_include_pad", count_include_pad)

    def config(self):
        return {**super().config(), "count_include_pad": self.count_include_pad}

    def _build(self, input_shape, rng):
        shape = super()._build(input_shape, rng)
        h, w, _ = input_shape
        if self.count_include_pad or not any(self.pads):
            self._scale = np.full((1,) + self.out_hw + (1,), 1.0 / (self.pool_size[0] * self.pool_size[1]))
        else:
            real = pad_input(np.ones((1, h, w, 1)), self.pads, 0.0)  # 1 on real cells
            count = sum(real[:, r, c, :] for _, _, r, c in self._offsets())  # (1, H', W', 1)
            self._scale = 1.0 / count
        self._scale = self._scale.astype(self.dtype)
        return shape

    def forward(self, x, training=False):
        xp = pad_input(x, self.pads, 0.0)
        self._padded_shape = xp.shape
        total = np.zeros((x.shape[0],) + self.out_hw + (x.shape[3],), dtype=x.dtype)
        for _, _, rows, cols in self._offsets():
            total += xp[:, rows, cols, :]
        total *= self._scale.astype(x.dtype, copy=False)
        return total

    def backward(self, dy):
        share = dy * self._scale.astype(dy.dtype, copy=False)  # (N, H', W', C)
        dxp = np.zeros(self._padded_shape, dtype=dy.dtype)
        for _, _, rows, cols in self._offsets():
            dxp[:, rows, cols, :] += share
        return crop(dxp, self.pads)


@LAYERS.register("global_avg_pool2d")
class GlobalAvgPool2D(Layer):
    """Mean over all positions: (N, H, W, C) -> (N, C); each cell gets ``dy / (H W)``."""

    type_name = "global_avg_pool2d"

    def _build(self, input_shape, rng):
        if len(input_shape) != 3:
            raise self._shape_error(f"expected an input of shape (H, W, C); got {input_shape}")
        return (input_shape[2],)

    def forward(self, x, training=False):
        self._hw = x.shape[1:3]
        return x.mean(axis=(1, 2))

    def backward(self, dy):
        h, w = self._hw
        share = dy / (h * w)  # (N, C)
        return np.broadcast_to(share[:, None, None, :], (dy.shape[0], h, w, dy.shape[1])).copy()

    def forward_flops(self):
        h, w, c = self.input_shape
        return h * w * c
