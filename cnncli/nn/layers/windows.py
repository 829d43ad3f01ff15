"""Sliding windows over NHWC arrays: padding rules, output sizes, strided window views.

Shared by convolution and pooling. ``Padding`` is (top, bottom, left, right).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from cnncli.nn import validate
from cnncli.nn.errors import ConfigError

Padding = tuple[int, int, int, int]  # (top, bottom, left, right)


def parse_padding(name: str, value: object) -> object:
    """``valid``, ``same``, an int >= 0, or [int, int] (rows, columns; symmetric)."""
    if value in ("valid", "same"):
        return value
    try:
        return validate.pair(name, value, minimum=0)
    except ConfigError:
        raise ConfigError(name, "'valid', 'same', an int >= 0 or [int, int]", value) from None


def padding_config(padding: object) -> object:
    """How a parsed padding is written back into a config."""
    return padding if isinstance(padding, str) else list(padding)


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


def crop(xp: np.ndarray, pads: Padding) -> np.ndarray:
    """Undo :func:`pad_input`: (N, Hp, Wp, C) -> (N, H, W, C)."""
    pt, pb, pl, pr = pads
    if not any(pads):
        return xp
    return xp[:, pt:xp.shape[1] - pb, pl:xp.shape[2] - pr, :]


def windows(xp: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int],
            dilation: tuple[int, int], out_hw: tuple[int, int]) -> np.ndarray:
    """Read-only strided view of every window: (N, H', W', kh, kw, C), no copy."""
    n, _, _, c = xp.shape
    sn, sh, sw, sc = xp.strides
    (kh, kw), (s_h, s_w), (d_h, d_w), (ho, wo) = kernel, stride, dilation, out_hw
    return as_strided(xp, shape=(n, ho, wo, kh, kw, c),
                      strides=(sn, s_h * sh, s_w * sw, d_h * sh, d_w * sw, sc), writeable=False)


def offset_slices(kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int],
                  out_hw: tuple[int, int]):
    """(p, q, row slice, column slice) of each kernel offset, in row-major order: the
    input cells that offset (p, q) of every window reads."""
    (kh, kw), (s_h, s_w), (d_h, d_w), (ho, wo) = kernel, stride, dilation, out_hw
    for p in range(kh):
        rows = slice(p * d_h, p * d_h + s_h * (ho - 1) + 1, s_h)
        for q in range(kw):
            yield p, q, rows, slice(q * d_w, q * d_w + s_w * (wo - 1) + 1, s_w)
