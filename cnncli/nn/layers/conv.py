r"""2-D convolution (cross-correlation, as every CNN library computes it), NHWC / HWIO.

Forward, for stride ``s``, dilation ``d`` and top/left padding ``pt, pl`` (ERRATA 1; the
paper's Eq. 29 is garbled):

.. math::

    z[n,i,j,f] = b[f] + \sum_{p<k_h,\,q<k_w,\,r<C} W[p,q,r,f]\; X_{pad}[n,\ s i + d p,\ s j + d q,\ r]

    a = g(z)

Output size per spatial axis: ``H' = floor((H + pt + pb - d (k_h - 1) - 1) / s) + 1``.

Backward, with ``delta = dL/dz = dL/da * g'(z)``:

.. math::

    dW[p,q,r,f] = \sum_{n,i,j} delta[n,i,j,f]\; X_{pad}[n,\ s i + d p,\ s j + d q,\ r]   (ERRATA 13)

    db[f] = \sum_{n,i,j} delta[n,i,j,f]                                               (ERRATA 14)

    dX_{pad}[n,\ s i + d p,\ s j + d q,\ r] \mathrel{+}= \sum_f delta[n,i,j,f]\; W[p,q,r,f]

The last line is the "full convolution with the kernel rotated by 180 degrees" of
the paper's Eq. 45, written as a scatter; ``dX`` is the padded gradient cropped back.
Nothing updates ``X`` (ERRATA 11): ``dX`` is passed to the layer before.

Two implementations compute these sums (``implementation:``):

* ``reference`` (``conv_reference.py``): plain im2col into ``cols (N*H'*W', kh*kw*C)``,
  one product ``z = cols @ W``, ``dW = cols^T @ delta``, ``dcols = delta @ W^T`` scattered
  back window by window. Short enough to read next to the equations above.
* ``fast`` (the default, below): the same products, with the windows copied into a
  reused workspace through a strided view (in (kh, kw, C) order, so each copied run is a
  contiguous C-vector), the bias riding in the product as a column of ones, rows padded
  to multiples of 16 values, every step split over the engine's threads, and the input
  gradient added into dX one kernel offset at a time while it is still in cache. The
  tests hold it to the reference. ``forward_rows``/``backward_rows`` can also emit rows
  grouped by a max-pool's window offsets, for the fused step of ``cnncli.nn.fusion``.

Bounded memory. The fast path's im2col matrix has ``kh*kw*C`` values for every output
pixel: for large images it is gigabytes (Figure 2's second conv at 224x224, batch 32:
2.3 GB). The batch is therefore cut into *tiles* of examples whose im2col holds at most
``TILE_BYTES`` (at least one example), and ``dW`` is summed tile by tile, always in the
same order. A tile depends only on the layer's shapes, never on the memory budget or the
batch, so the budget changes where the memory goes, not one bit of the result:

* the whole batch's im2col within :func:`memory_budget` (default 128 MiB a layer,
  ``CNNCLI_CONV_MEMORY_MB``, :func:`set_memory_budget`): every tile is kept from the
  forward pass for ``dW`` (no second copy);
* beyond it: one tile's workspace is reused, the forward pass fills it tile by tile, and
  the backward pass copies each tile's windows again from the kept input (one more
  im2col copy: memory traffic, no products).

Shapes:
    x: (N, H, W, C)   W: (kh, kw, C, F)   b: (F,)   z, a: (N, H', W', F)
"""

from __future__ import annotations

import os

import numpy as np
from numpy.lib.stride_tricks import as_strided

from cnncli.nn import parallel, validate
from cnncli.nn.errors import ConfigError
from cnncli.nn.describe import Equation, Explanation, size_arithmetic, window_index
from cnncli.nn.initializers import make_initializer
from cnncli.nn.layers import conv_reference
from cnncli.nn.layers.base import ActivatedLayer
from cnncli.nn.layers.windows import (crop, output_size, pad_input, padding_config, parse_padding, resolve_padding,
                                      windows)
from cnncli.nn.registry import register

IMPLEMENTATIONS = ("fast", "reference")

#: The most im2col bytes one tile of examples holds (a tile is at least one example). It
#: fixes the order of dW's sums, so it must not depend on the budget or the batch.
TILE_BYTES = 32 * 2**20
#: im2col bytes a layer may keep for the whole batch between forward and backward.
DEFAULT_MEMORY_BUDGET = 128 * 2**20
#: Rows of delta a thread turns into dX at a time (at least one example's).
INPUT_GRADIENT_ROWS = 8192
_budget: int | None = None


def set_memory_budget(nbytes: int | None) -> None:
    """Bytes of im2col a conv layer may keep between its forward and backward passes;
    None goes back to ``CNNCLI_CONV_MEMORY_MB`` or the default (128 MiB). Beyond it the
    layer keeps one tile (at most :data:`TILE_BYTES`) and copies the windows again in the
    backward pass. The results are the same to the last bit either way."""
    global _budget
    if nbytes is not None and (isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0):
        raise ConfigError("memory budget", "a number of bytes >= 0 or None", nbytes)
    _budget = nbytes


def memory_budget() -> int:
    """The budget in bytes: :func:`set_memory_budget`, else ``CNNCLI_CONV_MEMORY_MB``, else 128 MiB."""
    if _budget is not None:
        return _budget
    env = os.environ.get("CNNCLI_CONV_MEMORY_MB", "").strip()
    if not env:
        return DEFAULT_MEMORY_BUDGET
    try:
        megabytes = float(env)
    except ValueError:
        megabytes = -1.0
    if not megabytes >= 0:
        raise ConfigError("CNNCLI_CONV_MEMORY_MB", "a number of MiB >= 0", env, source="environment")
    return int(megabytes * 2**20)


@register("conv2d")
class Conv2D(ActivatedLayer):
    """2-D convolution with an optional fused activation; see the module docstring."""

    check_output_shape = False

    def __init__(self, *, filters, kernel_size, stride=1, padding="valid", dilation=1,
                 use_bias=True, activation=None, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", implementation="fast"):
        super().__init__(activation)
        self.filters = validate.positive_int("filters", filters)
        self.kernel_size = validate.pair("kernel_size", kernel_size)
        self.stride = validate.pair("stride", stride)
        self.padding = parse_padding("padding", padding)
        self.dilation = validate.pair("dilation", dilation)
        self.use_bias = validate.boolean("use_bias", use_bias)
        make_initializer(kernel_initializer, "kernel_initializer")
        make_initializer(bias_initializer, "bias_initializer")
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        self.implementation = validate.choice("implementation", implementation, IMPLEMENTATIONS)

    def config(self):
        return {
            "type": self.type_name, "filters": self.filters, "kernel_size": list(self.kernel_size),
            "stride": list(self.stride), "padding": padding_config(self.padding),
            "dilation": list(self.dilation), "use_bias": self.use_bias,
            "activation": self.activation_config(),
            "kernel_initializer": self.kernel_initializer, "bias_initializer": self.bias_initializer,
            "implementation": self.implementation,
        }

    def setup(self, input_shape, rng):
        if len(input_shape) != 3:
            raise self.shape_error(f"expected an input of shape (H, W, C); got {input_shape}")
        h, w, c = input_shape
        self.pads = resolve_padding(self.padding, (h, w), self.kernel_size, self.stride, self.dilation)
        pt, pb, pl, pr = self.pads
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        ho = output_size(h, pt, pb, kh, sh, dh)
        wo = output_size(w, pl, pr, kw, sw, dw)
        if ho < 1 or wo < 1:
            span = f"{dh * (kh - 1) + 1}x{dw * (kw - 1) + 1}"
            raise self.shape_error(
                f"kernel {kh}x{kw} (span {span} with dilation) is larger than its padded input "
                f"{h + pt + pb}x{w + pl + pr}; input shape {input_shape}")
        self.out_hw = (ho, wo)
        fan_in, fan_out = kh * kw * c, kh * kw * self.filters
        self.add_parameter("kernel", (kh, kw, c, self.filters), self.kernel_initializer, rng, fan_in, fan_out)
        if self.use_bias:
            self.add_parameter("bias", (self.filters,), self.bias_initializer, rng, fan_in, fan_out)
        return (ho, wo, self.filters)

    # -- what summary, explain and the memory check ask ---------------------------------
    def parameter_calculation(self):
        kh, kw = self.kernel_size
        inner = f"({kh}x{kw}x{self.input_shape[2]})"
        return f"[{inner}+1]x{self.filters}" if self.use_bias else f"{inner}x{self.filters}"

    def _product_flops(self) -> int:
        kh, kw = self.kernel_size
        ho, wo = self.out_hw
        return 2 * kh * kw * self.input_shape[2] * self.filters * ho * wo

    def forward_flops(self):
        ho, wo = self.out_hw
        return self._product_flops() + (self.filters * ho * wo if self.use_bias else 0)

    def linear_backward_flops(self, input_grad):
        """dW (one product) and db; with the input gradient, dcols and col2im's adds."""
        kh, kw = self.kernel_size
        ho, wo = self.out_hw
        total = self.forward_flops()
        if input_grad:
            total += self._product_flops() + kh * kw * self.input_shape[2] * ho * wo
        return total

    def values_per_example(self):
        """Per example: the output twice (z and g(z)), the padded input (its gradient),
        z once more if the activation needs it for backward, and H'*W'*C for the
        input-gradient scratch (a bound: it is allocated for a few examples a thread). The
        im2col matrix is not per example: see :meth:`workspace_bytes`."""
        ho, wo = self.out_hw
        pt, pb, pl, pr = self.pads
        h, w, c = self.input_shape
        return (ho * wo * c + 2 * ho * wo * self.filters + (h + pt + pb) * (w + pl + pr) * c
                + self.kept_z_values())

    def workspace_bytes(self, batch, itemsize):
        """The im2col workspace a training step at ``batch`` uses (:meth:`im2col_bytes`)."""
        if self.implementation == "reference":  # cols and dcols, whole
            ho, wo = self.out_hw
            return 2 * batch * ho * wo * self._row_width()[0] * itemsize
        return self.im2col_bytes(batch, itemsize)

    def explain(self, index, first):
        h, w, c = self.input_shape
        ho, wo, f = self.output_shape
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        pt, pb, pl, pr = self.pads
        sec = Explanation(f"layers[{index}]: conv2d {kh}x{kw}x{f}, {self.activation.name}")
        padded = any(self.pads)
        xname = "X_pad" if padded else "X"
        xtex = xname.replace("_pad", "^{pad}")
        if padded:
            sec.notes.append(f"X_pad is the input padded with zeros: {pt} row(s) on top, {pb} at the bottom, {pl} "
                             f"column(s) left, {pr} right ({'same' if self.padding == 'same' else self.padding!r} "
                             f"padding), shape (N, {h + pt + pb}, {w + pl + pr}, {c}).")
        ri, rtex = window_index("i", sh, dh, "p")
        ci, ctex = window_index("j", sw, dw, "q")
        bias_t = "b[f] + " if self.use_bias else ""
        bias_tex = "b_f + " if self.use_bias else ""
        sec.forward.append(Equation(
            f"z[n,i,j,f] = {bias_t}sum_(p<{kh}, q<{kw}, r<{c}) W[p,q,r,f] * {xname}[n, {ri}, {ci}, r]",
            rf"z_{{n,i,j,f}} = {bias_tex}\sum_{{p=0}}^{{{kh - 1}}}\sum_{{q=0}}^{{{kw - 1}}}\sum_{{r=0}}^{{{c - 1}}}"
            rf" W_{{p,q,r,f}}\, {xtex}_{{n,\,{rtex},\,{ctex},\,r}}",
            f"z: (N, {ho}, {wo}, {f}); W: ({kh}, {kw}, {c}, {f})" + (f"; b: ({f},)" if self.use_bias else "")))
        act_forward, act_backward, act_notes = self.activation.equations(f"(N, {ho}, {wo}, {f})")
        sec.forward += act_forward
        sec.notes += act_notes
        sec.arithmetic.append(f"output height: {size_arithmetic(h, pt, pb, kh, sh, dh, ho)}")
        sec.arithmetic.append(f"output width:  {size_arithmetic(w, pl, pr, kw, sw, dw, wo)}")
        sec.arithmetic.append(f"parameters: {self.parameter_text()}")
        sec.backward += act_backward
        sec.backward.append(Equation(
            f"dW[p,q,r,f] = sum_(n, i<{ho}, j<{wo}) delta[n,i,j,f] * {xname}[n, {ri}, {ci}, r]",
            rf"\frac{{\partial L}}{{\partial W_{{p,q,r,f}}}} = \sum_{{n}}\sum_{{i=0}}^{{{ho - 1}}}\sum_{{j=0}}^{{{wo - 1}}}"
            rf" \delta_{{n,i,j,f}}\, {xtex}_{{n,\,{rtex},\,{ctex},\,r}}",
            f"dW: ({kh}, {kw}, {c}, {f}), one gradient per filter"))
        if self.use_bias:
            sec.backward.append(Equation("db[f] = sum_(n,i,j) delta[n,i,j,f]",
                                         r"\frac{\partial L}{\partial b_f} = \sum_{n,i,j} \delta_{n,i,j,f}",
                                         f"db: ({f},)"))
        if first:
            sec.backward.append(Equation("dX is not computed: nothing comes before the first layer, and the input "
                                         "is never updated",
                                         r"\text{(no } \partial L/\partial X \text{: the input is never updated)}"))
        else:
            sec.backward.append(Equation(
                f"d{xname}[n, {ri}, {ci}, r] += sum_(f<{f}) delta[n,i,j,f] * W[p,q,r,f]   "
                "(the full convolution of delta with the kernel rotated by 180 degrees)",
                rf"\frac{{\partial L}}{{\partial {xtex}_{{n,\,{rtex},\,{ctex},\,r}}}}"
                rf" \mathrel{{+}}= \sum_{{f=0}}^{{{f - 1}}} \delta_{{n,i,j,f}}\, W_{{p,q,r,f}}",
                f"dX: (N, {h}, {w}, {c})" + (" after cropping the padding" if padded else "")))
        return sec

    # -- computation ----------------------------------------------------------------------
    def forward_linear(self, x, training):
        if self.implementation == "reference":
            self._x = x
            return conv_reference.forward(x, self.params["kernel"], self.params.get("bias"), self.pads,
                                          self.stride, self.dilation, self.out_hw)
        return self.forward_rows(x, keep=training)

    def backward_linear(self, dz):
        if self.implementation == "reference":
            dx, dw, db = conv_reference.backward(self._x, dz, self.params["kernel"], self.pads, self.stride,
                                                 self.dilation, self.out_hw, self.needs_input_grad)
            if self.needs_param_grads:
                self.grads["kernel"] = dw
                if self.use_bias:
                    self.grads["bias"] = db
            return dx
        return self.backward_rows(dz)

    # -- the im2col tiles (see "Bounded memory" in the module docstring) ------------------
    def _row_width(self) -> tuple[int, int, int]:
        """(k, width, padded width) of an im2col row: k = kh*kw*C window values, width =
        k plus the bias's column of ones, padded to a multiple of 16 values (BLAS reads the
        transposed cols of dW = cols^T @ delta measurably faster with aligned rows)."""
        kh, kw = self.kernel_size
        k = kh * kw * self.input_shape[2]
        width = k + self.use_bias
        return k, width, -(-width // 16) * 16

    def tile_examples(self, itemsize: int) -> int:
        """Examples per tile: as many as fit :data:`TILE_BYTES` of im2col, at least one."""
        ho, wo = self.out_hw
        return max(1, TILE_BYTES // (ho * wo * self._row_width()[2] * itemsize))

    def im2col_bytes(self, batch: int, itemsize: int, keep: bool = True) -> int:
        """Bytes of the im2col workspace for ``batch`` examples: the whole batch when it
        fits :func:`memory_budget` and ``keep`` (a training step), else one tile. The
        memory estimate (``cnncli.resources``) uses this same figure."""
        ho, wo = self.out_hw
        per_example = ho * wo * self._row_width()[2] * itemsize
        if keep and batch * per_example <= memory_budget():
            return batch * per_example
        return min(batch, self.tile_examples(itemsize)) * per_example

    def _tile_cols(self, buffer: np.ndarray, first: int, count: int) -> np.ndarray:
        """The (count*H'*W', width) im2col rows of ``count`` examples, the ``first``-th
        example's at the start, as a view of the flat workspace ``buffer``."""
        ho, wo = self.out_hw
        _, width, padded = self._row_width()
        rows = ho * wo
        return buffer[first * rows * padded:(first + count) * rows * padded].reshape(count * rows, padded)[:, :width]

    def _im2col(self, windows8: np.ndarray, first: int, cols: np.ndarray, product=None) -> None:
        """Copy the windows of examples ``first``.. into ``cols`` (the tile's rows, in the
        order of ``windows8``), split over the engine's threads; with ``product = (w_aug,
        z)`` also multiply each thread's rows into its rows of z (P, N*rows, F)."""
        ph, pw, _, hb, wb, kh, kw, c = windows8.shape
        count = cols.shape[0] // (ph * pw * hb * wb)
        k = kh * kw * c
        per_example = hb * wb  # rows per example and pooling offset
        dest = cols[:, :k].reshape(ph, pw, count, hb, wb, kh, kw, c)  # a view: rows split, each row's k values split
        if not np.may_share_memory(dest, cols):
            raise AssertionError("im2col target is not a view of the workspace")
        cols3 = cols.reshape(ph * pw, count * per_example, cols.shape[1])  # (P, rows of the tile, width)

        def im2col_and_product(a, b):  # the tile's output rows a..b (each W'/pw pixels wide), all offsets
            # The window view is strided by example: the rows of an example the chunk starts
            # inside of, then whole examples in one copy, then the rows it ends inside of.
            e, top = divmod(a, hb)
            if top:
                stop = min(hb, b - e * hb)
                np.copyto(dest[:, :, e, top:stop], windows8[:, :, first + e, top:stop])
                e += 1
            last, bottom = divmod(b, hb)
            if last > e:
                np.copyto(dest[:, :, e:last], windows8[:, :, first + e:first + last])
            if bottom and last >= e:
                np.copyto(dest[:, :, last, :bottom], windows8[:, :, first + last, :bottom])
            rows = slice(a * wb, b * wb)  # row (example, i, j) of each offset's block is (example*hb + i)*wb + j
            if self.use_bias:
                cols3[:, rows, k] = 1
            if product is not None:
                w_aug, z = product
                offset = first * per_example
                np.matmul(cols3[:, rows], w_aug, out=z[:, offset + a * wb:offset + b * wb])

        # Split by output rows, not examples: a tile of one large example still uses every thread.
        width = cols.shape[1]
        f = self.filters
        per_row_work = parallel.work(ph * pw * wb * k, ph * pw * wb * width * f if product is not None else 0)
        parallel.run(im2col_and_product, parallel.chunks(count * hb, per_row_work))

    def forward_rows(self, x: np.ndarray, blocks: tuple[int, int] | None = None, *, keep: bool = True) -> np.ndarray:
        """The fast forward pass, without the activation.

        ``blocks=None``: z (N, H', W', F). ``blocks=(ph, pw)`` (H' and W' multiples of
        them): the rows come window offset first, (ph*pw, N, H'/ph, W'/pw, F), so that a
        tiling max-pool reads contiguous blocks (``fusion.ConvMaxPool``); that array is a
        workspace, valid until the next call. ``keep``: keep the im2col tiles for the
        backward pass when they fit the memory budget (a training step).
        """
        n = x.shape[0]
        kh, kw = self.kernel_size
        ho, wo = self.out_hw
        f = self.filters
        xp = pad_input(x, self.pads)  # (N, Hp, Wp, C)
        self._padded_shape = xp.shape
        k, width, padded = self._row_width()
        win = windows(xp, self.kernel_size, self.stride, self.dilation, self.out_hw)  # (N, H', W', kh, kw, C)
        ph, pw = blocks or (1, 1)
        if blocks is not None:
            sn, sh, sw, sp, sq, sc = win.strides
            # (ph, pw, N, H'/ph, W'/pw, kh, kw, C): the window offset (u, v) of the pooling first
            win = as_strided(win, (ph, pw, n, ho // ph, wo // pw, kh, kw, xp.shape[3]),
                             (sh, sw, sn, ph * sh, pw * sw, sp, sq, sc), writeable=False)
        else:
            win = win[None, None]  # (1, 1, N, H', W', kh, kw, C)
        # With a bias, cols carries a column of ones and the weights a row holding the
        # bias: the product adds the bias, and cols^T @ delta yields db as its last row.
        w_aug = self.workspace("w_aug", (width, f), x.dtype)
        w_aug[:k] = self.params["kernel"].reshape(k, f)  # (kh*kw*C, F)
        if self.use_bias:
            w_aug[k] = self.params["bias"]
        per_example = (ho // ph) * (wo // pw)
        if blocks is None:  # the output may leave the network: a new array
            z = np.empty((1, n * per_example, f), dtype=x.dtype)
        else:  # only the max-pool after this layer reads it, within the same step
            z = self.workspace("z_blocked", (ph * pw, n * per_example, f), x.dtype)
        itemsize = x.dtype.itemsize
        tile = self.tile_examples(itemsize)
        held = self.im2col_bytes(n, itemsize, keep)
        kept = held == n * ho * wo * padded * itemsize  # every tile stays for the backward pass
        buffer = self.growing_workspace("cols", held // itemsize, x.dtype)
        for first in range(0, n, tile):
            count = min(tile, n - first)
            self._im2col(win, first, self._tile_cols(buffer, first if kept else 0, count), (w_aug, z))
        self._windows, self._cols_buffer, self._cols_kept, self._tile = win, buffer, kept, tile
        if blocks is None:
            return z.reshape(n, ho, wo, f)  # (N, H', W', F)
        return z.reshape(ph * pw, n, ho // ph, wo // pw, f)  # (ph*pw, N, H'/ph, W'/pw, F)

    def backward_rows(self, dz: np.ndarray, blocks: tuple[int, int] | None = None) -> np.ndarray | None:
        """The fast backward pass from dL/dz in the row order of :meth:`forward_rows`:
        fills ``grads`` (not for a frozen layer), returns dL/dx (N, H, W, C), or None when
        nothing below needs it."""
        if self.needs_param_grads:
            self._weight_gradient(dz)
        if not self.needs_input_grad:
            return None
        return crop(self._input_gradient(dz, blocks), self.pads)

    def _weight_gradient(self, dz: np.ndarray) -> None:
        """dW and db, summed tile by tile in tile order: (((tile 0) + tile 1) + ...)."""
        f = self.filters
        kernel = self.params["kernel"]
        win, tile = self._windows, self._tile
        n = win.shape[2]
        blocks = win.shape[0] * win.shape[1]
        dz3 = dz.reshape(blocks, -1, f)  # (P, N*rows, F), rows in the order of cols
        rows = dz3.shape[1] // n  # per example and pooling offset
        _, width, _ = self._row_width()
        grads = np.empty((width, f), dtype=dz.dtype)  # (kh*kw*C [+1], F)
        for first in range(0, n, tile):
            count = min(tile, n - first)
            cols = self._tile_cols(self._cols_buffer, first if self._cols_kept else 0, count)
            if not self._cols_kept:  # the tile's windows again, from the kept input
                self._im2col(win, first, cols)
            if count == n:  # one tile: the rows of dz as they are
                delta = dz3.reshape(-1, f)
            elif blocks == 1:
                delta = dz3[0, first * rows:(first + count) * rows]
            else:  # the tile's rows in the order of its cols: (P, count*rows, F)
                delta = self.workspace("delta_tile", (blocks, count * rows, f), dz.dtype)
                np.copyto(delta, dz3[:, first * rows:(first + count) * rows])
                delta = delta.reshape(-1, f)
            if first == 0:
                self._tile_weight_gradient(cols, delta, grads)
            else:
                partial = self.workspace("dw_tile", (width, f), dz.dtype)
                self._tile_weight_gradient(cols, delta, partial)
                grads += partial
        k = kernel.size // f
        self.grads["kernel"] = grads[:k].reshape(kernel.shape)  # HWIO
        if self.use_bias:
            self.grads["bias"] = grads[k]

    def _tile_weight_gradient(self, cols: np.ndarray, delta: np.ndarray, out: np.ndarray) -> None:
        """out = cols^T @ delta, (width, F), split over the engine's threads."""
        f = self.filters
        width = cols.shape[1]
        if width >= 128:  # each thread: its own rows of dW (its columns of cols)
            def weight_gradient(a, b):
                np.matmul(cols[:, a:b].T, delta, out=out[a:b])

            per_column = parallel.work(macs=cols.shape[0] * f)
            parallel.run(weight_gradient, parallel.chunks(width, per_column, align=16))
        else:  # too few columns to share out evenly: each thread sums over its rows of cols
            ranges = parallel.chunks(cols.shape[0], parallel.work(macs=width * f))
            partial = self.workspace("dw_partial", (len(ranges) - 1, width, f), delta.dtype)
            first = {a: i for i, (a, _) in enumerate(ranges)}

            def weight_gradient(a, b):
                i = first[a]
                np.matmul(cols[a:b].T, delta[a:b], out=out if i == 0 else partial[i - 1])

            parallel.run(weight_gradient, ranges)
            for extra in partial:
                out += extra

    def _input_gradient(self, dz: np.ndarray, blocks: tuple[int, int] | None) -> np.ndarray:
        """dX_pad from delta: col2im, one kernel offset at a time, split by examples.

        For each offset (p, q), ``delta @ W[p, q]^T`` is that offset's share of every
        window, (rows, C), added into the strided slice of dX_pad it came from. Same
        sums as building all of ``dcols = delta @ W^T`` and scattering it back window by window,
        but each product is added while it is still in cache. Each thread works through
        its examples a few at a time (about :data:`INPUT_GRADIENT_ROWS` rows), so the
        scratch stays small however large the images; every example's dX is the same
        sums in the same order whatever the grouping.
        """
        kernel = self.params["kernel"]
        n, hp, wp, c = self._padded_shape
        f = self.filters
        (kh, kw), (s_h, s_w), (d_h, d_w), (ho, wo) = self.kernel_size, self.stride, self.dilation, self.out_hw
        kernel_t = self.workspace("kernel_t", (kh, kw, f, c), kernel.dtype)
        np.copyto(kernel_t, kernel.transpose(0, 1, 3, 2))  # (kh, kw, F, C)
        dxp = self.workspace("dxp", self._padded_shape, dz.dtype)
        per_example = ho * wo
        adds = per_example * kh * kw * c  # per example: the elements added into dX
        ranges = parallel.chunks(n, parallel.work(adds, adds * f))
        slot = {a: i for i, (a, _) in enumerate(ranges)}  # each thread's own scratch
        group = max(1, min(INPUT_GRADIENT_ROWS // per_example, max(b - a for a, b in ranges)))
        share = self.workspace("share", (len(ranges), group * per_example, c), dz.dtype)
        if blocks is not None:  # back to (N, H', W', F) rows for the scatter
            ph, pw = blocks
            blocked = dz.reshape(ph, pw, n, ho // ph, wo // pw, f)
            natural = self.workspace("delta_rows", (len(ranges), group, ho // ph, ph, wo // pw, pw, f), dz.dtype)
        else:
            delta_rows = dz.reshape(n * per_example, f)  # (N*H'*W', F)

        def scatter(a, b):  # examples a..b, ``group`` at a time
            i = slot[a]
            for first in range(a, b, group):
                last = min(b, first + group)
                m = last - first
                if blocks is not None:
                    delta = natural[i, :m]  # (m, H'/ph, ph, W'/pw, pw, F) = (m, H', W', F)
                    np.copyto(delta, blocked[:, :, first:last].transpose(2, 3, 0, 4, 1, 5))
                    delta = delta.reshape(m * per_example, f)
                else:
                    delta = delta_rows[first * per_example:last * per_example]
                part = share[i, :m * per_example]  # (m*H'*W', C)
                dxp[first:last].fill(0)
                for p in range(kh):
                    hs = slice(p * d_h, p * d_h + s_h * (ho - 1) + 1, s_h)
                    for q in range(kw):
                        ws = slice(q * d_w, q * d_w + s_w * (wo - 1) + 1, s_w)
                        np.matmul(delta, kernel_t[p, q], out=part)
                        dxp[first:last, hs, ws, :] += part.reshape(m, ho, wo, c)

        parallel.run(scatter, ranges)
        return dxp
