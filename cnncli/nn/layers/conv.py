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

Implementation: the input windows are gathered once (im2col, through a strided view, in
(kh, kw, C) order so that each copied run is a contiguous C-vector) into
``cols (N*H'*W', kh*kw*C)``; then ``z = cols @ W.reshape(kh*kw*C, F)``,
``dW = cols^T @ delta``, and the input gradient ``delta @ W^T`` is scattered back (col2im)
one kernel offset at a time: ``delta @ W[p, q]^T`` added into its strided slice of dX.

Shapes:
    x: (N, H, W, C)   W: (kh, kw, C, F)   b: (F,)   z, a: (N, H', W', F)
"""

from __future__ import annotations


import numpy as np
from numpy.lib.stride_tricks import as_strided

from cnncli.errors import ConfigError
from cnncli.nn import _check, parallel
from cnncli.nn.initializers import INITIALIZERS, initialize
from cnncli.nn.layers.base import LAYERS, ActivatedLayer

Padding = tuple[int, int, int, int]  # (top, bottom, left, right)


def parse_padding(name: str, value: object) -> object:
    """``valid``, ``same``, an int >= 0, or [int, int] (rows, columns; symmetric)."""
    if value in ("valid", "same"):
        return value
    try:
        return _check.pair(name, value, minimum=0)
    except ConfigError:
        raise ConfigError(name, "'valid', 'same', an int >= 0 or [int, int]", value) from None


def resolve_padding(padding: object, size: tuple[int, int], kernel: tuple[int, int],
                    stride: tuple[int, int], dilation: tuple[int, int] = (1, 1)) -> Padding:
    """Explicit (top, bottom, left, right) padding.

    ``same`` follows TensorFlow/Keras: the output has ``ceil(H / s)`` rows, the total
    padding ``max((ceil(H/s) - 1) s + d (k - 1) + 1 - H, 0)`` is split with the odd row at
    the bottom (right).
    """
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        pads = []
        for n, k, s, d in zip(size, kernel, stride, dilation):
            out = -(-n // s)
            total = max((out - 1) * s + d * (k - 1) + 1 - n, 0)
            pads += [total // 2, total - total // 2]
        return tuple(pads)  # type: ignore[return-value]
    ph, pw = padding  # type: ignore[misc]
    return (ph, ph, pw, pw)


def output_size(n: int, pad_before: int, pad_after: int, k: int, s: int, d: int = 1) -> int:
    """``floor((n + pads - d (k - 1) - 1) / s) + 1``; <= 0 when the kernel does not fit."""
    return (n + pad_before + pad_after - d * (k - 1) - 1) // s + 1


def pad_input(x: np.ndarray, pads: Padding, value: float = 0.0) -> np.ndarray:
    """x (N, H, W, C) -> (N, H+pt+pb, W+pl+pr, C); no copy when there is no padding."""
    pt, pb, pl, pr = pads
    if not any(pads):
        return x
    n, h, w, c = x.shape
    out = np.full((n, h + pt + pb, w + pl + pr, c), value, dtype=x.dtype)
    out[:, pt:pt + h, pl:pl + w, :] = x
    return out


def windows(xp: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int],
            dilation: tuple[int, int], out_hw: tuple[int, int]) -> np.ndarray:
    """Read-only strided view of every window: (N, H', W', kh, kw, C), no copy."""
    n, _, _, c = xp.shape
    sn, sh, sw, sc = xp.strides
    (kh, kw), (s_h, s_w), (d_h, d_w), (ho, wo) = kernel, stride, dilation, out_hw
    return as_strided(xp, shape=(n, ho, wo, kh, kw, c),
                      strides=(sn, s_h * sh, s_w * sw, d_h * sh, d_w * sw, sc), writeable=False)


def crop(xp: np.ndarray, pads: Padding) -> np.ndarray:
    """Undo :func:`pad_input`: (N, Hp, Wp, C) -> (N, H, W, C)."""
    pt, pb, pl, pr = pads
    if not any(pads):
        return xp
    return xp[:, pt:xp.shape[1] - pb, pl:xp.shape[2] - pr, :]


@LAYERS.register("conv2d")
class Conv2D(ActivatedLayer):
    """2-D convolution with an optional fused activation; see the module docstring."""

    type_name = "conv2d"

    def __init__(self, *, filters, kernel_size, stride=1, padding="valid", dilation=1,
                 use_bias=True, activation=None, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros"):
        super().__init__(activation)
        self.filters = _check.positive_int("filters", filters)
        self.kernel_size = _check.pair("kernel_size", kernel_size)
        self.stride = _check.pair("stride", stride)
        self.padding = parse_padding("padding", padding)
        self.dilation = _check.pair("dilation", dilation)
        self.use_bias = _check.boolean("use_bias", use_bias)
        INITIALIZERS.get(kernel_initializer, "kernel_initializer")
        INITIALIZERS.get(bias_initializer, "bias_initializer")
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer

    def config(self):
        return {
            "type": self.type_name, "filters": self.filters, "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": self.padding if isinstance(self.padding, str) else list(self.padding),
            "dilation": list(self.dilation), "use_bias": self.use_bias,
            "activation": self.activation_config(),
            "kernel_initializer": self.kernel_initializer, "bias_initializer": self.bias_initializer,
        }

    def _build(self, input_shape, rng):
        if len(input_shape) != 3:
            raise self._shape_error(f"expected an input of shape (H, W, C); got {input_shape}")
        h, w, c = input_shape
        self.pads = resolve_padding(self.padding, (h, w), self.kernel_size, self.stride, self.dilation)
        pt, pb, pl, pr = self.pads
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        ho = output_size(h, pt, pb, kh, sh, dh)
        wo = output_size(w, pl, pr, kw, sw, dw)
        if ho < 1 or wo < 1:
            span = f"{dh * (kh - 1) + 1}x{dw * (kw - 1) + 1}"
            raise self._shape_error(
                f"kernel {kh}x{kw} (span {span} with dilation) is larger than its padded input "
                f"{h + pt + pb}x{w + pl + pr}; input shape {input_shape}")
        self.out_hw = (ho, wo)
        fan_in, fan_out = kh * kw * c, kh * kw * self.filters
        self.params["kernel"] = initialize(self.kernel_initializer, (kh, kw, c, self.filters), rng,
                                           self.dtype, fan_in, fan_out)
        if self.use_bias:
            self.params["bias"] = initialize(self.bias_initializer, (self.filters,), rng, self.dtype,
                                             fan_in, fan_out)
        return (ho, wo, self.filters)

    def forward_flops(self):
        kh, kw = self.kernel_size
        c = self.input_shape[2]
        ho, wo = self.out_hw
        return 2 * kh * kw * c * self.filters * ho * wo + (self.filters * ho * wo if self.use_bias else 0)

    #: Set by the network when a tiling max-pool follows (see ``Network._fuse_pooling``):
    #: (ph, pw) makes the output rows come window offset first, shape
    #: (ph*pw, N, H'/ph, W'/pw, F), so the pooling reads contiguous blocks.
    blocks: tuple[int, int] | None = None

    def forward_linear(self, x, training):
        n = x.shape[0]
        kh, kw = self.kernel_size
        ho, wo = self.out_hw
        f = self.filters
        xp = pad_input(x, self.pads)  # (N, Hp, Wp, C)
        self._padded_shape = xp.shape
        k = kh * kw * xp.shape[3]
        # With a bias, cols carries a column of ones and the weights a row holding the
        # bias: the product adds the bias, and cols^T @ delta yields db as its last row.
        # Rows padded to a multiple of 16 values: BLAS reads the transposed cols of
        # dW = cols^T @ delta measurably faster with aligned rows.
        width = k + self.use_bias
        cols = self.workspace("cols", (n * ho * wo, -(-width // 16) * 16), x.dtype)[:, :width]
        win = windows(xp, self.kernel_size, self.stride, self.dilation, self.out_hw)  # (N, H', W', kh, kw, C)
        ph, pw = self.blocks or (1, 1)
        if self.blocks is not None:
            sn, sh, sw, sp, sq, sc = win.strides
            # (ph, pw, N, H'/ph, W'/pw, kh, kw, C): the window offset (u, v) of the pooling first
            win = as_strided(win, (ph, pw, n, ho // ph, wo // pw, kh, kw, xp.shape[3]),
                             (sh, sw, sn, ph * sh, pw * sw, sp, sq, sc), writeable=False)
        else:
            win = win[None, None]  # (1, 1, N, H', W', kh, kw, C)
        dest = cols[:, :k].reshape(win.shape)  # a view: rows split, each row's k values split
        if not np.may_share_memory(dest, cols):
            raise AssertionError("im2col target is not a view of the workspace")
        w_aug = self.workspace("w_aug", (width, f), x.dtype)
        w_aug[:k] = self.params["kernel"].reshape(k, f)  # (kh*kw*C, F)
        if self.use_bias:
            w_aug[k] = self.params["bias"]
        # Row blocks (one per pooling offset, or one): (P, N*H'/ph*W'/pw, width)
        per_example = (ho // ph) * (wo // pw)
        cols3 = cols.reshape(ph * pw, n * per_example, width)
        if self.blocks is None:  # the output may leave the network: a new array
            z = np.empty((ph * pw, n * per_example, f), dtype=x.dtype)
        else:  # only the max-pool after this layer reads it, within the same step
            z = self.workspace("z_blocked", (ph * pw, n * per_example, f), x.dtype)

        def im2col_and_product(a, b):  # examples a..b: copy their windows, multiply their rows
            np.copyto(dest[:, :, a:b], win[:, :, a:b])
            rows = slice(a * per_example, b * per_example)
            if self.use_bias:
                cols3[:, rows, k] = 1
            np.matmul(cols3[:, rows], w_aug, out=z[:, rows])

        per_example_work = parallel.work(ho * wo * k, ho * wo * width * f)  # im2col copy, product
        parallel.run(im2col_and_product, parallel.chunks(n, per_example_work))
        self._cols = cols
        if self.blocks is None:
            return z.reshape(n, ho, wo, f)  # (N, H', W', F)
        return z.reshape(ph * pw, n, ho // ph, wo // pw, f)  # (ph*pw, N, H'/ph, W'/pw, F)

    def backward_linear(self, dz):
        f = self.filters
        kernel = self.params["kernel"]
        dz2d = dz.reshape(-1, f)  # (rows, F), in the row order of cols
        cols = self._cols
        width = cols.shape[1]
        # (kh*kw*C [+1], F): the sums over rows do not mind their order
        grads = np.empty((width, f), dtype=dz.dtype)
        if width >= 128:  # each thread: its own rows of dW (its columns of cols)
            def weight_gradient(a, b):
                np.matmul(cols[:, a:b].T, dz2d, out=grads[a:b])

            per_column = parallel.work(macs=cols.shape[0] * f)
            parallel.run(weight_gradient, parallel.chunks(width, per_column, align=16))
        else:  # too few columns to share out evenly: each thread sums over its rows of cols
            ranges = parallel.chunks(cols.shape[0], parallel.work(macs=width * f))
            partial = self.workspace("dw_partial", (len(ranges) - 1, width, f), dz.dtype)
            first = {a: i for i, (a, _) in enumerate(ranges)}

            def weight_gradient(a, b):
                i = first[a]
                np.matmul(cols[a:b].T, dz2d[a:b], out=grads if i == 0 else partial[i - 1])

            parallel.run(weight_gradient, ranges)
            for extra in partial:
                grads += extra
        k = kernel.size // f
        self.grads["kernel"] = grads[:k].reshape(kernel.shape)  # HWIO
        if self.use_bias:
            self.grads["bias"] = grads[k]
        if not self.needs_input_grad:
            return None
        return crop(self._input_gradient(dz, kernel), self.pads)

    def _input_gradient(self, dz: np.ndarray, kernel: np.ndarray) -> np.ndarray:
        """dX_pad from delta: col2im, one kernel offset at a time, split by examples.

        For each offset (p, q), ``delta @ W[p, q]^T`` is that offset's share of every
        window, (N*H'*W', C), added into the strided slice of dX_pad it came from. Same
        sums as building all of ``dcols = delta @ W^T`` and scattering it back window by window,
        but each product is added while it is still in cache.
        """
        n, hp, wp, c = self._padded_shape
        f = self.filters
        (kh, kw), (s_h, s_w), (d_h, d_w), (ho, wo) = self.kernel_size, self.stride, self.dilation, self.out_hw
        kernel_t = self.workspace("kernel_t", (kh, kw, f, c), kernel.dtype)
        np.copyto(kernel_t, kernel.transpose(0, 1, 3, 2))  # (kh, kw, F, C)
        share = self.workspace("share", (n * ho * wo, c), dz.dtype)  # (N*H'*W', C)
        dxp = self.workspace("dxp", self._padded_shape, dz.dtype)
        if self.blocks is not None:  # back to (N, H', W', F) rows for the scatter
            ph, pw = self.blocks
            blocked = dz.reshape(ph, pw, n, ho // ph, wo // pw, f)
            delta = self.workspace("delta_rows", (n, ho // ph, ph, wo // pw, pw, f), dz.dtype)
        else:
            delta = dz.reshape(n, ho, wo, f)
        delta_rows = delta.reshape(n * ho * wo, f)  # (N*H'*W', F)
        per_example = ho * wo

        def scatter(a, b):  # examples a..b
            if self.blocks is not None:
                np.copyto(delta[a:b], blocked[:, :, a:b].transpose(2, 3, 0, 4, 1, 5))
            dxp[a:b].fill(0)
            rows = slice(a * per_example, b * per_example)
            for p in range(kh):
                hs = slice(p * d_h, p * d_h + s_h * (ho - 1) + 1, s_h)
                for q in range(kw):
                    ws = slice(q * d_w, q * d_w + s_w * (wo - 1) + 1, s_w)
                    np.matmul(delta_rows[rows], kernel_t[p, q], out=share[rows])
                    dxp[a:b, hs, ws, :] += share[rows].reshape(b - a, ho, wo, c)

        adds = per_example * kh * kw * c  # per example: the elements added into dX
        parallel.run(scatter, parallel.chunks(n, parallel.work(adds, adds * f)))
        return dxp
