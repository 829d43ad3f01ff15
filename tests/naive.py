"""Naive loop references for convolution and pooling, written from the ERRATA formulas.

Deliberately slow and obvious: explicit Python loops over n, i, j, f, p, q, r and
bounds checks instead of padded arrays, so that they share no code (im2col, strided
views, padding helpers) with the engine under test. NHWC activations, HWIO kernels.

ERRATA 1 / 13 / 14 (cross-correlation, zero padding ``pt`` rows on top, ``pl`` columns
on the left; cells outside the input are zeros):

    z[n,i,j,f]  = b[f] + sum_{p,q,r} W[p,q,r,f] X[n, s_h i + d_h p - pt, s_w j + d_w q - pl, r]
    dW[p,q,r,f] = sum_{n,i,j} delta[n,i,j,f] X[n, s_h i + d_h p - pt, s_w j + d_w q - pl, r]
    db[f]       = sum_{n,i,j} delta[n,i,j,f]
    dX[n, s_h i + d_h p - pt, s_w j + d_w q - pl, r] += delta[n,i,j,f] W[p,q,r,f]

ERRATA 2 / 15 (pooling over the window ``X[n, s_h i + u - pt, s_w j + v - pl, c]``,
``u < k_h, v < k_w``; max ignores cells outside the input, average counts them as zeros).
"""

from __future__ import annotations

import math

import numpy as np


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def same_pads(size, kernel, stride, dilation=(1, 1)):
    """TensorFlow 'same': ceil(n / s) outputs, the odd padding cell at the bottom/right."""
    pads = []
    for n, k, s, d in zip(size, kernel, stride, dilation):
        out = math.ceil(n / s)
        total = max((out - 1) * s + d * (k - 1) + 1 - n, 0)
        pads += [total // 2, total - total // 2]
    return tuple(pads)


def explicit_pads(padding, size, kernel, stride, dilation=(1, 1)):
    """(top, bottom, left, right) for 'valid', 'same', an int or [rows, cols]."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        return same_pads(size, kernel, stride, dilation)
    ph, pw = pair(padding)
    return (ph, ph, pw, pw)


def out_len(n, before, after, k, s, d=1):
    return (n + before + after - d * (k - 1) - 1) // s + 1


def conv2d_forward(x, w, b, stride, pads, dilation):
    """z (N, H', W', F) by the loop formula above; ``b`` may be None."""
    n_, h, wd, c = x.shape
    kh, kw, c2, f_ = w.shape
    assert c == c2
    (sh, sw), (dh, dw) = pair(stride), pair(dilation)
    pt, pb, pl, pr = pads
    ho, wo = out_len(h, pt, pb, kh, sh, dh), out_len(wd, pl, pr, kw, sw, dw)
    z = np.zeros((n_, ho, wo, f_))
    for n in range(n_):
        for i in range(ho):
            for j in range(wo):
                for f in range(f_):
                    acc = 0.0 if b is None else b[f]
                    for p in range(kh):
                        row = sh * i + dh * p - pt
                        if not 0 <= row < h:
                            continue
                        for q in range(kw):
                            col = sw * j + dw * q - pl
                            if not 0 <= col < wd:
                                continue
                            for r in range(c):
                                acc += w[p, q, r, f] * x[n, row, col, r]
                    z[n, i, j, f] = acc
    return z


def conv2d_backward(x, w, delta, stride, pads, dilation):
    """(dX, dW, db) for delta = dL/dz, by the loop formulas above."""
    n_, h, wd, c = x.shape
    kh, kw, _, f_ = w.shape
    (sh, sw), (dh, dw) = pair(stride), pair(dilation)
    pt, _, pl, _ = pads
    _, ho, wo, _ = delta.shape
    dx = np.zeros_like(x)
    dW = np.zeros_like(w)
    db = np.zeros(f_)
    for n in range(n_):
        for i in range(ho):
            for j in range(wo):
                for f in range(f_):
                    g = delta[n, i, j, f]
                    db[f] += g
                    for p in range(kh):
                        row = sh * i + dh * p - pt
                        if not 0 <= row < h:
                            continue
                        for q in range(kw):
                            col = sw * j + dw * q - pl
                            if not 0 <= col < wd:
                                continue
                            for r in range(c):
                                dW[p, q, r, f] += g * x[n, row, col, r]
                                dx[n, row, col, r] += g * w[p, q, r, f]
    return dx, dW, db


def _pool_windows(x_shape, pool, stride, pads):
    """Yield (n, i, j, c, [(row, col) of the real cells in row-major window order])."""
    n_, h, wd, c_ = x_shape
    (kh, kw), (sh, sw) = pair(pool), pair(stride)
    pt, pb, pl, pr = pads
    ho, wo = out_len(h, pt, pb, kh, sh), out_len(wd, pl, pr, kw, sw)
    for n in range(n_):
        for i in range(ho):
            for j in range(wo):
                for c in range(c_):
                    cells = []
                    for u in range(kh):
                        for v in range(kw):
                            row, col = sh * i + u - pt, sw * j + v - pl
                            if 0 <= row < h and 0 <= col < wd:
                                cells.append((row, col))
                    yield n, i, j, c, cells
    return ho, wo


def pool_out_shape(x_shape, pool, stride, pads):
    n_, h, wd, c_ = x_shape
    (kh, kw), (sh, sw) = pair(pool), pair(stride)
    pt, pb, pl, pr = pads
    return (n_, out_len(h, pt, pb, kh, sh), out_len(wd, pl, pr, kw, sw), c_)


def max_pool_forward_backward(x, dy, pool, stride, pads):
    """(y, dx): max over the real cells; the gradient goes to the FIRST maximum in
    row-major window order (strict ``>`` while scanning)."""
    y = np.zeros(pool_out_shape(x.shape, pool, stride, pads))
    dx = np.zeros_like(x)
    for n, i, j, c, cells in _pool_windows(x.shape, pool, stride, pads):
        best = None
        for row, col in cells:
            if best is None or x[n, row, col, c] > x[n, best[0], best[1], c]:
                best = (row, col)
        y[n, i, j, c] = x[n, best[0], best[1], c]
        if dy is not None:
            dx[n, best[0], best[1], c] += dy[n, i, j, c]
    return y, dx


def avg_pool_forward_backward(x, dy, pool, stride, pads, count_include_pad):
    """(y, dx): window sum divided by k_h*k_w (count_include_pad) or by the number of
    real cells; each real cell gets ``dy`` over the same divisor."""
    kh, kw = pair(pool)
    y = np.zeros(pool_out_shape(x.shape, pool, stride, pads))
    dx = np.zeros_like(x)
    for n, i, j, c, cells in _pool_windows(x.shape, pool, stride, pads):
        divisor = kh * kw if count_include_pad else len(cells)
        total = 0.0
        for row, col in cells:
            total += x[n, row, col, c]
        y[n, i, j, c] = total / divisor
        if dy is not None:
            for row, col in cells:
                dx[n, row, col, c] += dy[n, i, j, c] / divisor
    return y, dx
