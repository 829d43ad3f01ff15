r"""The convolution as written: plain im2col, one matrix product, col2im.

This is what ``conv2d`` computes (``implementation: reference``), in the fewest lines
NumPy allows; the fast path in ``conv.py`` is tested against it. With
``cols[(n, i, j), (p, q, r)] = X_pad[n, s i + d p, s j + d q, r]``:

.. math::

    z = \text{cols}\, W_{(kh\,kw\,C) \times F} + b, \qquad
    dW = \text{cols}^\top \delta, \qquad db = \textstyle\sum_{rows} \delta, \qquad
    d\text{cols} = \delta\, W^\top

and ``dX_pad`` gathers ``dcols`` back: every window adds its row to the cells it read.
"""

from __future__ import annotations

import numpy as np

from cnncli.nn.layers.windows import Padding, crop, offset_slices, pad_input, windows


def im2col(xp: np.ndarray, kernel: tuple[int, int], stride, dilation, out_hw) -> np.ndarray:
    """X_pad (N, Hp, Wp, C) -> cols (N*H'*W', kh*kw*C), a copy of every window."""
    win = windows(xp, kernel, stride, dilation, out_hw)  # (N, H', W', kh, kw, C)
    return win.reshape(-1, win.shape[3] * win.shape[4] * win.shape[5])  # reshape copies the strided view


def forward(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray | None, pads: Padding, stride, dilation,
            out_hw) -> np.ndarray:
    """z (N, H', W', F) for x (N, H, W, C), kernel (kh, kw, C, F), bias (F,) or None."""
    kh, kw, c, f = kernel.shape
    cols = im2col(pad_input(x, pads), (kh, kw), stride, dilation, out_hw)  # (N*H'*W', kh*kw*C)
    z = cols @ kernel.reshape(kh * kw * c, f)  # (N*H'*W', F)
    if bias is not None:
        z += bias
    return z.reshape(x.shape[0], *out_hw, f)


def backward(x: np.ndarray, dz: np.ndarray, kernel: np.ndarray, pads: Padding, stride, dilation, out_hw,
             input_grad: bool = True):
    """(dX or None, dW, db) from delta = dL/dz (N, H', W', F)."""
    kh, kw, c, f = kernel.shape
    xp = pad_input(x, pads)
    cols = im2col(xp, (kh, kw), stride, dilation, out_hw)  # (N*H'*W', kh*kw*C)
    delta = dz.reshape(-1, f)  # (N*H'*W', F)
    dw = (cols.T @ delta).reshape(kernel.shape)  # (kh, kw, C, F)
    db = delta.sum(axis=0)  # (F,)
    if not input_grad:
        return None, dw, db
    dcols = (delta @ kernel.reshape(kh * kw * c, f).T).reshape(x.shape[0], *out_hw, kh, kw, c)
    dxp = np.zeros(xp.shape, dtype=dz.dtype)  # (N, Hp, Wp, C)
    for p, q, rows, cols_ in offset_slices((kh, kw), stride, dilation, out_hw):
        dxp[:, rows, cols_, :] += dcols[:, :, :, p, q, :]
    return crop(dxp, pads), dw, db
