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
on a strided view of the whole batch; no loop over examples or pixels. (After a conv
layer, ``cnncli.nn.fusion`` may run a max-pool with the conv as one step.)

Shapes:
    x: (N, H, W, C)  ->  y: (N, H', W', C),  H' = floor((H + pt + pb - k_h) / s_h) + 1
    global_avg_pool2d: (N, H, W, C) -> (N, C)
"""

from __future__ import annotations

import numpy as np

from cnncli.nn import validate
from cnncli.nn.describe import Equation, Explanation, size_arithmetic, window_index
from cnncli.nn.layers.base import Layer
from cnncli.nn.layers.windows import (crop, offset_slices, output_size, pad_input, padding_config, parse_padding,
                                      resolve_padding)
from cnncli.nn.registry import register


class Pool2D(Layer):
    """What max and average pooling share: windows, padding, output size, arithmetic."""

    check_output_shape = False

    def __init__(self, *, pool_size=2, stride=None, padding="valid"):
        super().__init__()
        self.pool_size = validate.pair("pool_size", pool_size)
        self.stride = self.pool_size if stride is None else validate.pair("stride", stride)
        self.padding = parse_padding("padding", padding)

    def config(self):
        return {"type": self.type_name, "pool_size": list(self.pool_size), "stride": list(self.stride),
                "padding": padding_config(self.padding)}

    def setup(self, input_shape, rng):
        if len(input_shape) != 3:
            raise self.shape_error(f"expected an input of shape (H, W, C); got {input_shape}")
        h, w, c = input_shape
        kh, kw = self.pool_size
        self.pads = resolve_padding(self.padding, (h, w), self.pool_size, self.stride)
        pt, pb, pl, pr = self.pads
        if max(pt, pb) >= kh or max(pl, pr) >= kw:
            raise self.shape_error(
                f"padding {self.pads[:2]}x{self.pads[2:]} must be smaller than the pool size {kh}x{kw}")
        ho = output_size(h, pt, pb, kh, self.stride[0])
        wo = output_size(w, pl, pr, kw, self.stride[1])
        if ho < 1 or wo < 1:
            raise self.shape_error(
                f"pool {kh}x{kw} is larger than its padded input {h + pt + pb}x{w + pl + pr}; "
                f"input shape {input_shape}")
        self.out_hw = (ho, wo)
        return (ho, wo, c)

    def offsets(self):
        """(u, v, row slice, column slice) of each window offset, in row-major order."""
        return offset_slices(self.pool_size, self.stride, (1, 1), self.out_hw)

    def tiles_input(self) -> bool:
        """Each input cell lies in exactly one window (stride = pool size, no padding, no rest)."""
        h, w, _ = self.input_shape
        ho, wo = self.out_hw
        return (self.stride == self.pool_size and not any(self.pads)
                and ho * self.stride[0] == h and wo * self.stride[1] == w)

    def forward_flops(self):
        ho, wo = self.out_hw
        return self.pool_size[0] * self.pool_size[1] * ho * wo * self.input_shape[2]

    def backward_flops(self, input_grad=True):
        return self.forward_flops()  # routing: one operation per window cell

    def _explain(self, index: int, fill: str) -> tuple[Explanation, dict]:
        """The section both kinds share, and the names their equations use: ``x`` (X or
        X_pad), ``xtex``, the window indices ``ri``/``ci`` (and TeX), the shapes."""
        h, w, c = self.input_shape
        ho, wo, _ = self.output_shape
        (kh, kw), (sh, sw) = self.pool_size, self.stride
        pt, pb, pl, pr = self.pads
        sec = Explanation(f"layers[{index}]: {self.type_name} {kh}x{kw}, stride {sh}x{sw}")
        xname = "X_pad" if any(self.pads) else "X"
        if any(self.pads):
            sec.notes.append(f"X_pad: the input padded with {fill}: ({pt}, {pb}) rows, ({pl}, {pr}) columns.")
        ri, rtex = window_index("i", sh, 1, "u")
        ci, ctex = window_index("j", sw, 1, "v")
        sec.arithmetic.append(f"output height: {size_arithmetic(h, pt, pb, kh, sh, 1, ho)}")
        sec.arithmetic.append(f"output width:  {size_arithmetic(w, pl, pr, kw, sw, 1, wo)}")
        sec.arithmetic.append("parameters: none")
        names = {"x": xname, "xtex": xname.replace("_pad", "^{pad}"), "ri": ri, "ci": ci, "rtex": rtex,
                 "ctex": ctex, "y_shape": f"y: (N, {ho}, {wo}, {c})", "dx_shape": f"dX: (N, {h}, {w}, {c})"}
        return sec, names


@register("max_pool2d")
class MaxPool2D(Pool2D):
    """Max pooling; the gradient goes to the first maximum in row-major window order.

    The forward pass records, for every output, which window offset won (a uint8
    index; a later offset wins only when strictly greater, hence the tie rule), so the
    backward pass is one masked copy per offset. Inference (``training=False``) takes
    the maximum only; a backward pass after it records the winners then.
    """

    def forward(self, x, training=False):
        self._input, self._winner_known = x, training
        xp = pad_input(x, self.pads, -np.inf)  # (N, Hp, Wp, C)
        out = winner = None
        for k, (_, _, rows, cols) in enumerate(self.offsets()):
            view = xp[:, rows, cols, :]  # (N, H', W', C)
            if out is None:
                out = view.copy()
                winner = np.zeros(out.shape, dtype=np.uint8) if training else None
                continue
            if training:
                record_winner(winner, view > out, k)
            np.maximum(out, view, out=out)  # like copyto(where=better), but NaN propagates
        self._padded_shape, self._winner = xp.shape, winner
        return out

    def backward(self, dy):
        if not self._winner_known:  # the forward pass was inference: record the winners now
            self.forward(self._input, training=True)
        overlapping = self.stride[0] < self.pool_size[0] or self.stride[1] < self.pool_size[1]
        dxp = self.workspace("dxp", self._padded_shape, dy.dtype)
        (ho, wo), (sh, sw) = self.out_hw, self.stride
        tiled = (not overlapping and self.stride == self.pool_size
                 and ho * sh == self._padded_shape[1] and wo * sw == self._padded_shape[2])
        if not tiled:
            dxp.fill(0)  # some cells belong to no window, or to several
        for k, (_, _, rows, cols) in enumerate(self.offsets()):
            won = self._winner == k
            if overlapping:
                dxp[:, rows, cols, :] += dy * won
            else:  # each cell is in one window at most: write it directly
                np.multiply(dy, won, out=dxp[:, rows, cols, :])
        return crop(dxp, self.pads)

    def explain(self, index, first):
        sec, n = self._explain(index, "-inf (never the maximum)")
        kh, kw = self.pool_size
        x, xtex, ri, ci, rtex, ctex = n["x"], n["xtex"], n["ri"], n["ci"], n["rtex"], n["ctex"]
        sec.forward.append(Equation(f"y[n,i,j,c] = max_(u<{kh}, v<{kw}) {x}[n, {ri}, {ci}, c]",
                                    rf"y_{{n,i,j,c}} = \max_{{u<{kh},\,v<{kw}}} {xtex}_{{n,\,{rtex},\,{ctex},\,c}}",
                                    n["y_shape"]))
        sec.backward.append(Equation(
            f"dX[n, {ri}, {ci}, c] += dy[n,i,j,c] for the arg max (u, v) of each window only; on ties the first "
            "maximum in row-major window order gets it",
            rf"\frac{{\partial L}}{{\partial {xtex}_{{n,\,{rtex},\,{ctex},\,c}}}} \mathrel{{+}}= "
            rf"\frac{{\partial L}}{{\partial y_{{n,i,j,c}}}}\,[(u,v) = \arg\max]",
            n["dx_shape"]))
        return sec


def record_winner(winner: np.ndarray, better: np.ndarray, k: int) -> None:
    """winner = k where ``better``: uint8 arithmetic (mod 256) beats masked assignment."""
    step = np.subtract(np.uint8(k), winner, dtype=np.uint8)
    step *= better
    winner += step


@register("avg_pool2d")
class AvgPool2D(Pool2D):
    """Average pooling over the real cells of each window (see ``count_include_pad``)."""

    def __init__(self, *, pool_size=2, stride=None, padding="valid", count_include_pad=False):
        super().__init__(pool_size=pool_size, stride=stride, padding=padding)
        self.count_include_pad = validate.boolean("count_include_pad", count_include_pad)

    def config(self):
        return {**super().config(), "count_include_pad": self.count_include_pad}

    def setup(self, input_shape, rng):
        shape = super().setup(input_shape, rng)
        h, w, _ = input_shape
        if self.count_include_pad or not any(self.pads):
            self._scale = np.full((1,) + self.out_hw + (1,), 1.0 / (self.pool_size[0] * self.pool_size[1]))
        else:
            real = pad_input(np.ones((1, h, w, 1)), self.pads, 0.0)  # 1 on real cells
            count = sum(real[:, r, c, :] for _, _, r, c in self.offsets())  # (1, H', W', 1)
            self._scale = 1.0 / count
        self._scale = self._scale.astype(self.dtype)
        return shape

    def forward(self, x, training=False):
        xp = pad_input(x, self.pads, 0.0)
        self._padded_shape = xp.shape
        total = np.zeros((x.shape[0],) + self.out_hw + (x.shape[3],), dtype=x.dtype)
        for _, _, rows, cols in self.offsets():
            total += xp[:, rows, cols, :]
        total *= self._scale.astype(x.dtype, copy=False)
        return total

    def backward(self, dy):
        share = dy * self._scale.astype(dy.dtype, copy=False)  # (N, H', W', C)
        dxp = np.zeros(self._padded_shape, dtype=dy.dtype)
        for _, _, rows, cols in self.offsets():
            dxp[:, rows, cols, :] += share
        return crop(dxp, self.pads)

    def explain(self, index, first):
        sec, n = self._explain(index, "zeros")
        kh, kw = self.pool_size
        x, xtex, ri, ci, rtex, ctex = n["x"], n["xtex"], n["ri"], n["ci"], n["rtex"], n["ctex"]
        denom = f"{kh * kw}" if (self.count_include_pad or not any(self.pads)) else "|w_ij|"
        sec.forward.append(Equation(f"y[n,i,j,c] = (1/{denom}) sum_(u<{kh}, v<{kw}) {x}[n, {ri}, {ci}, c]",
                                    rf"y_{{n,i,j,c}} = \frac{{1}}{{{denom}}} \sum_{{u<{kh},\,v<{kw}}} "
                                    rf"{xtex}_{{n,\,{rtex},\,{ctex},\,c}}", n["y_shape"]))
        if denom == "|w_ij|":
            sec.notes.append("|w_ij| is the number of real (not padding) cells in window (i, j).")
        sec.backward.append(Equation(f"dX[n, {ri}, {ci}, c] += dy[n,i,j,c] / {denom} for every cell of the window",
                                     rf"\frac{{\partial L}}{{\partial {xtex}_{{n,\,{rtex},\,{ctex},\,c}}}} "
                                     rf"\mathrel{{+}}= \frac{{1}}{{{denom}}}\frac{{\partial L}}{{\partial y_{{n,i,j,c}}}}",
                                     n["dx_shape"]))
        return sec


@register("global_avg_pool2d")
class GlobalAvgPool2D(Layer):
    """Mean over all positions: (N, H, W, C) -> (N, C); each cell gets ``dy / (H W)``."""

    check_output_shape = False

    def config(self):
        return {"type": self.type_name}

    def setup(self, input_shape, rng):
        if len(input_shape) != 3:
            raise self.shape_error(f"expected an input of shape (H, W, C); got {input_shape}")
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

    def backward_flops(self, input_grad=True):
        return self.forward_flops()

    def explain(self, index, first):
        h, w, c = self.input_shape
        sec = Explanation(f"layers[{index}]: global_avg_pool2d")
        sec.forward.append(Equation(f"y[n,c] = (1/{h * w}) sum_(i<{h}, j<{w}) X[n,i,j,c]",
                                    rf"y_{{n,c}} = \frac{{1}}{{{h * w}}}\sum_{{i,j}} X_{{n,i,j,c}}", f"(N, {c})"))
        sec.backward.append(Equation(f"dX[n,i,j,c] = dy[n,c] / {h * w}",
                                     rf"\partial L/\partial X_{{n,i,j,c}} = \frac{{1}}{{{h * w}}}\partial L/\partial "
                                     rf"y_{{n,c}}", f"(N, {h}, {w}, {c})"))
        return sec
