"""Data augmentation of training batches: random flips, crops, shifts, rotations, brightness,
contrast and cutout, in pure NumPy and vectorized over the batch.

Configured by ``data.augment``; applied to each *training* batch after normalization, so
that every fill value below is 0 **in normalized units** (the channel mean when the data is
standardized, black when it is scaled to [0, 1]). Evaluation and prediction never augment.

Usage::

    aug = Augmenter.from_config(spec, input_shape)   # spec: the mapping of data.augment, or None
    aug.config()        # every key with its default filled in; from_config(aug.config()) is aug again
    xb2 = aug(xb, rng)  # xb (N, H, W, C) float, untouched; xb2 a new array, same shape and dtype

``aug(x, rng)`` is ``aug.apply(x, aug.draw(len(x), rng))``: :meth:`Augmenter.draw` takes every
random number a batch needs from ``rng`` and returns them as plain arrays, and
:meth:`Augmenter.apply` is a deterministic function of the images and those arrays. Tests fix
the parameters by hand (an angle of exactly 90 degrees); a resumed run can replay the draws
of batches it skips without touching images.

Operations
----------
All are off by default and are applied in the order below, which is also the order of
:data:`AUGMENT_KEYS`. Notation: ``x`` is one image (H, W, C) indexed ``x[i, j, c]`` (row ``i``
from the top, column ``j`` from the left); ``x~[i, j, c]`` is ``x[i, j, c]`` inside the image and
0 outside; ``y`` is the result; ``u ~ U[0, 1)`` is ``rng.random()``.

flip_horizontal: true
    With probability 1/2 per image (``u < 0.5``): ``y[i, j] = x[i, W - 1 - j]``, else ``y = x``.
flip_vertical: true
    With probability 1/2 per image (``u < 0.5``): ``y[i, j] = x[H - 1 - i, j]``, else ``y = x``.
random_crop: {padding: p}   (or ``random_crop: p``)
    Pad by ``p`` zero pixels on every side and take the H x W window whose top-left corner is
    at ``(top, left)`` of the padded image, both integers uniform in ``[0, 2p]``:
    ``y[i, j] = x~[i + top - p, j + left - p]`` (torchvision's ``RandomCrop(size, padding=p)``,
    the CIFAR recipe). ``p`` <= min(H, W); 0 is off.
translate: P
    Shift the content down by ``dy`` and right by ``dx``, both integers uniform in ``[-P, P]``:
    ``y[i, j] = x~[i - dy, j - dx]``. ``P`` <= min(H, W); 0 is off. (The same distribution of
    shifts as ``random_crop`` with padding ``P``; when both are on they compose.)
rotate: D   (degrees)
    Rotate counter-clockwise (as displayed, row 0 at the top; torchvision's and Keras' sign) by
    ``theta = D * (2u - 1)`` degrees, i.e. uniform in ``[-D, D)``, about the centre
    ``(ci, cj) = ((H - 1) / 2, (W - 1) / 2)``. Each output pixel samples the input at

        r = ci + (i - ci) cos(theta) + (j - cj) sin(theta)
        s = cj - (i - ci) sin(theta) + (j - cj) cos(theta)

    bilinearly from the four pixels around it, each weighted by ``(1 - |r - r'|)(1 - |s - s'|)``,
    pixels outside the image being 0: ``y[i, j] = sum over r' in {floor r, floor r + 1},
    s' in {floor s, floor s + 1} of w(r', s') x~[r', s']``. Any D >= 0 (D >= 180 is every angle).
    (``torch.nn.functional.grid_sample`` with ``align_corners=True, padding_mode='zeros'``.)
brightness: B
    ``y = x + delta``, ``delta = B * (2u - 1)`` per image (uniform in ``[-B, B)``), the same for
    every pixel and channel, in normalized units.
contrast: C   (0 <= C < 1)
    ``y[..., c] = m_c + f * (x[..., c] - m_c)`` with ``m_c`` the image's own mean of channel ``c``
    and ``f = 1 + C * (2u - 1)`` per image (uniform in ``[1 - C, 1 + C)``): the channel means
    are kept, the spread around them scaled by ``f``.
cutout: {size: S}   (or ``cutout: S``)
    Zero the S x S square with rows ``[ci - S // 2, ci - S // 2 + S)`` and columns
    ``[cj - S // 2, cj - S // 2 + S)`` (clipped to the image), centre ``(ci, cj)`` uniform over the
    pixels (integers in ``[0, H) x [0, W)``), so that the square may lie partly outside the image
    (DeVries & Taylor, 2017). ``S`` <= min(H, W); 0 is off.

Random draws
------------
Everything random comes from the generator passed in, and only from it. :meth:`Augmenter.draw`
makes exactly one call per *enabled* operation, in the order above, whatever the images
hold and whether or not an image's draw turns out to change it (a flip that does not happen,
a delta that is 0 still take their numbers), so the numbers consumed by a batch depend only
on the configuration and the batch size ``N``:

1. flip_horizontal: ``rng.random(N) < 0.5``                          -> (N,) bool
2. flip_vertical:   ``rng.random(N) < 0.5``                          -> (N,) bool
3. random_crop:     ``rng.integers(0, 2p + 1, size=(N, 2))``         -> (N, 2) int [top, left]
4. translate:       ``rng.integers(-P, P + 1, size=(N, 2))``         -> (N, 2) int [dy, dx]
5. rotate:          ``D * (2 * rng.random(N) - 1)``                  -> (N,) float degrees
6. brightness:      ``B * (2 * rng.random(N) - 1)``                  -> (N,) float delta
7. contrast:        ``1 + C * (2 * rng.random(N) - 1)``              -> (N,) float factor
8. cutout:          ``rng.integers(0, (H, W), size=(N, 2))``         -> (N, 2) int [ci, cj]

Draws are float64 whatever the images' dtype; the result has the images' dtype. The same
generator state therefore gives the same batch bit for bit (with the same NumPy: NumPy does
not promise identical streams across its feature releases).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from numpy.lib.stride_tricks import as_strided

from cnncli.nn.errors import ConfigError
from cnncli.nn.validate import boolean, is_int, known_keys, number, positive_int

#: The keys of ``data.augment``, in the order the operations are drawn and applied.
AUGMENT_KEYS = ("flip_horizontal", "flip_vertical", "random_crop", "translate", "rotate", "brightness",
                "contrast", "cutout")

#: The one key of the mapping form of ``random_crop`` and of ``cutout``.
_SIZE_KEY = {"random_crop": "padding", "cutout": "size"}

Params = dict  # {operation key: array of that operation's draws for the batch}; see Augmenter.draw


# ------------------------------------------------------------------------ the operations
# Each takes a batch ``x`` (N, H, W, C) and that batch's draws, returns a new array of x's
# shape and dtype, and never writes into ``x``.

def flip(x: np.ndarray, flipped: np.ndarray, axis: int) -> np.ndarray:
    """Mirror the images where ``flipped`` (N,) is true: ``axis`` 2 left-right, 1 up-down."""
    out = x.copy()
    chosen = np.flatnonzero(flipped)  # (K,) the images to mirror
    # Copying only the chosen images is 2.5x faster than np.where over the whole batch.
    out[chosen] = np.flip(x[chosen], axis=axis)  # (K, H, W, C)
    return out


def _pad(x: np.ndarray, pad: int) -> np.ndarray:
    """The batch with ``pad`` zero rows and columns on every side: (N, H + 2 pad, W + 2 pad, C)."""
    n, h, w, c = x.shape
    padded = np.zeros((n, h + 2 * pad, w + 2 * pad, c), dtype=x.dtype)
    padded[:, pad:pad + h, pad:pad + w] = x
    return padded


def _windows(x: np.ndarray, pad: int, top: np.ndarray, left: np.ndarray) -> np.ndarray:
    """``y[n, i, j] = padded[n, top[n] + i, left[n] + j]``, ``padded`` being ``x`` with ``pad`` zeros
    on every side and ``top``, ``left`` (N,) ints in ``[0, 2 pad]``.

    The batch is padded once; a strided view lists every H x W window of every image with
    channels last, and one fancy index picks each image's window, already (N, H, W, C) and
    contiguous. For 32 x 28x28x3 this beats 3-D fancy indexing (~12x), a ``take`` of flat
    indices (~2.5x) and a Python loop over the images (~1.6x); see benchmarks/augment.py.
    """
    n, h, w, c = x.shape
    padded = _pad(x, pad)  # (N, H + 2 pad, W + 2 pad, C)
    s_n, s_h, s_w, s_c = padded.strides
    windows = as_strided(padded, shape=(n, 2 * pad + 1, 2 * pad + 1, h, w, c),
                         strides=(s_n, s_h, s_w, s_h, s_w, s_c), writeable=False)  # (N, top, left, H, W, C)
    return windows[np.arange(n), top, left]  # (N, H, W, C)


def random_crop(x: np.ndarray, corners: np.ndarray, padding: int) -> np.ndarray:
    """Zero-pad by ``padding`` and crop back to H x W at ``corners`` (N, 2) = [top, left] of the
    padded image, each in ``[0, 2 padding]``."""
    return _windows(x, padding, corners[:, 0], corners[:, 1])


def translate(x: np.ndarray, shifts: np.ndarray, max_shift: int) -> np.ndarray:
    """Move each image's content by ``shifts`` (N, 2) = [dy, dx] (down, right), each in
    ``[-max_shift, max_shift]``; uncovered pixels are 0: ``y[i, j] = x~[i - dy, j - dx]``."""
    # y[i] = padded[i + max_shift - dy]: a window of the padded batch at top = max_shift - dy.
    return _windows(x, max_shift, max_shift - shifts[:, 0], max_shift - shifts[:, 1])


def rotate(x: np.ndarray, degrees: np.ndarray) -> np.ndarray:
    """Rotate each image counter-clockwise by ``degrees`` (N,) about its centre, bilinear, 0 outside.

    One sampling grid for the whole batch; the four neighbours of every sample are gathered
    from the batch padded by one zero pixel, with their indices clipped into that padding,
    so that a neighbour outside the image reads 0 without a mask.
    """
    n, h, w, c = x.shape
    theta = np.radians(np.remainder(np.asarray(degrees, dtype=np.float64), 360.0))  # (N,)
    cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]  # (N, 1, 1)
    ci, cj = (h - 1) / 2.0, (w - 1) / 2.0
    di = (np.arange(h, dtype=np.float64) - ci)[None, :, None]  # (1, H, 1)
    dj = (np.arange(w, dtype=np.float64) - cj)[None, None, :]  # (1, 1, W)
    rows = ci + di * cos + dj * sin  # (N, H, W) source row of every output pixel
    cols = cj - di * sin + dj * cos  # (N, H, W) source column
    row0, col0 = np.floor(rows), np.floor(cols)
    frac_r, frac_c = (rows - row0).astype(x.dtype), (cols - col0).astype(x.dtype)  # (N, H, W)
    flat = _pad(x, 1).reshape(-1, c)  # (N * (H + 2) * (W + 2), C); padded index = image index + 1
    image_base = (np.arange(n) * ((h + 2) * (w + 2)))[:, None, None]  # (N, 1, 1)
    # Clipping to [-1, H] keeps a neighbour outside the image in the zero border.
    r_lo = np.clip(row0, -1, h).astype(np.intp) + 1  # (N, H, W) padded row of floor(r)
    r_hi = np.clip(row0 + 1, -1, h).astype(np.intp) + 1
    c_lo = np.clip(col0, -1, w).astype(np.intp) + 1
    c_hi = np.clip(col0 + 1, -1, w).astype(np.intp) + 1
    one = x.dtype.type(1)
    out = np.zeros_like(x)
    # The four neighbours (a loop of four, each step vectorized over the whole batch).
    for r_pad, c_pad, weight in ((r_lo, c_lo, (one - frac_r) * (one - frac_c)),
                                 (r_lo, c_hi, (one - frac_r) * frac_c),
                                 (r_hi, c_lo, frac_r * (one - frac_c)),
                                 (r_hi, c_hi, frac_r * frac_c)):
        index = image_base + r_pad * (w + 2) + c_pad  # (N, H, W) rows of ``flat``
        out += flat.take(index, axis=0) * weight[..., None]  # (N, H, W, C)
    return out


def adjust_brightness(x: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """``y = x + delta`` per image; ``deltas`` (N,)."""
    return x + deltas.astype(x.dtype)[:, None, None, None]


def adjust_contrast(x: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """``y = m + f (x - m)`` per image, ``m`` its per-channel mean (N, 1, 1, C); ``factors`` (N,)."""
    means = x.mean(axis=(1, 2), keepdims=True, dtype=np.float64).astype(x.dtype)  # (N, 1, 1, C)
    return means + factors.astype(x.dtype)[:, None, None, None] * (x - means)


def cutout(x: np.ndarray, centres: np.ndarray, size: int) -> np.ndarray:
    """Zero the ``size`` x ``size`` square at rows/columns ``[centre - size // 2, + size)``;
    ``centres`` (N, 2) = [ci, cj]."""
    n, h, w, c = x.shape
    top = (centres[:, 0] - size // 2)[:, None]  # (N, 1)
    left = (centres[:, 1] - size // 2)[:, None]
    row = np.arange(h)[None, :]  # (1, H)
    col = np.arange(w)[None, :]  # (1, W)
    in_rows = (row >= top) & (row < top + size)  # (N, H)
    in_cols = (col >= left) & (col < left + size)  # (N, W)
    square = in_rows[:, :, None] & in_cols[:, None, :]  # (N, H, W)
    out = x.copy()
    out[square] = 0  # every channel of the chosen pixels
    return out


# ------------------------------------------------------------------------ the augmenter
class Augmenter:
    """The augmentation of ``data.augment``: draws per batch from a generator, then applies.

    Construct with :meth:`from_config` (the YAML mapping) or with keywords (the resolved values;
    ``crop_padding`` and ``cutout_size`` are the sizes of random_crop and cutout); both validate and raise :class:`ConfigError` with the key
    path relative to ``data.augment`` (``augment.rotate: expected a number >= 0; got -5``).
    """

    def __init__(self, input_shape: Sequence[int], *, flip_horizontal: bool = False,
                 flip_vertical: bool = False, crop_padding: int = 0, translate: int = 0, rotate: float = 0.0,
                 brightness: float = 0.0, contrast: float = 0.0, cutout_size: int = 0,
                 _written: Mapping[str, str] | None = None):
        # _written: the key path each value was written at (``augment.cutout`` for the short
        # form ``cutout: 8``), so that a size refused below names what the user wrote.
        written = {"random_crop": "augment.random_crop.padding", "translate": "augment.translate",
                   "cutout": "augment.cutout.size", **(_written or {})}
        self.input_shape = tuple(int(d) for d in input_shape)
        self.flip_horizontal = boolean("augment.flip_horizontal", flip_horizontal)
        self.flip_vertical = boolean("augment.flip_vertical", flip_vertical)
        self.crop_padding = positive_int(written["random_crop"], crop_padding, minimum=0)
        self.translate = positive_int(written["translate"], translate, minimum=0)
        self.rotate = number("augment.rotate", rotate, low=0)
        self.brightness = number("augment.brightness", brightness, low=0)
        self.contrast = number("augment.contrast", contrast, low=0, high=1, high_open=True)
        self.cutout_size = positive_int(written["cutout"], cutout_size, minimum=0)
        if self.enabled and len(self.input_shape) != 3:
            raise ConfigError("augment", "", None,
                              raw=f"needs images [height, width, channels]; the input shape is "
                                  f"{list(self.input_shape)}")
        if self.enabled:
            h, w = self.input_shape[:2]
            for key, size in (("random_crop", self.crop_padding), ("translate", self.translate),
                              ("cutout", self.cutout_size)):
                if size > min(h, w):
                    raise ConfigError(written[key], f"an int <= {min(h, w)} (the image is {h}x{w})", size)

    # ---------------------------------------------------------------- configuration
    @classmethod
    def from_config(cls, spec: Mapping | None, input_shape: Sequence[int]) -> "Augmenter":
        """Validate ``spec`` (the mapping of ``data.augment``; None or {} for none) for images
        of ``input_shape`` (H, W, C). A key given as null takes its default (off)."""
        if spec is None:
            spec = {}
        if not isinstance(spec, Mapping):
            raise ConfigError("augment", "a mapping", spec)
        known_keys(spec, AUGMENT_KEYS, "augment")
        values = {key: value for key, value in spec.items() if value is not None}
        kwargs, written = {}, {}
        for key in ("flip_horizontal", "flip_vertical", "translate", "rotate", "brightness", "contrast"):
            if key in values:
                kwargs[key] = values[key]
        for key, keyword in (("random_crop", "crop_padding"), ("cutout", "cutout_size")):
            if key in values:
                kwargs[keyword], written[key] = _size_form(key, values[key])
        return cls(input_shape, **kwargs, _written=written)

    def config(self) -> dict:
        """Every key of ``data.augment`` with its value (defaults filled in), YAML-able."""
        return {
            "flip_horizontal": self.flip_horizontal,
            "flip_vertical": self.flip_vertical,
            "random_crop": {"padding": self.crop_padding},
            "translate": self.translate,
            "rotate": self.rotate,
            "brightness": self.brightness,
            "contrast": self.contrast,
            "cutout": {"size": self.cutout_size},
        }

    @property
    def operations(self) -> tuple[str, ...]:
        """The keys of the operations that are on, in the order they are drawn and applied."""
        on = {"flip_horizontal": self.flip_horizontal, "flip_vertical": self.flip_vertical,
              "random_crop": self.crop_padding > 0, "translate": self.translate > 0, "rotate": self.rotate > 0,
              "brightness": self.brightness > 0, "contrast": self.contrast > 0, "cutout": self.cutout_size > 0}
        return tuple(key for key in AUGMENT_KEYS if on[key])

    @property
    def enabled(self) -> bool:
        """False when no operation is on: calling the augmenter then only copies."""
        return bool(self.operations)

    def __repr__(self) -> str:
        on = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k in self.operations)
        return f"Augmenter({list(self.input_shape)}{', ' + on if on else ''})"

    # ---------------------------------------------------------------- draws and application
    def draw(self, n: int, rng: np.random.Generator) -> Params:
        """The random numbers of a batch of ``n`` images, one ``rng`` call per enabled operation in
        the order of :data:`AUGMENT_KEYS` (see the module docstring): ``{key: array}``."""
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, not {type(rng).__name__}")
        n = int(n)
        params: Params = {}
        for key in self.operations:  # at most eight calls, each drawing for the whole batch
            if key in ("flip_horizontal", "flip_vertical"):
                params[key] = rng.random(n) < 0.5  # (N,) bool
            elif key == "random_crop":
                params[key] = rng.integers(0, 2 * self.crop_padding + 1, size=(n, 2))  # (N, 2) [top, left]
            elif key == "translate":
                params[key] = rng.integers(-self.translate, self.translate + 1, size=(n, 2))  # (N, 2) [dy, dx]
            elif key == "rotate":
                params[key] = self.rotate * (2.0 * rng.random(n) - 1.0)  # (N,) degrees
            elif key == "brightness":
                params[key] = self.brightness * (2.0 * rng.random(n) - 1.0)  # (N,) delta
            elif key == "contrast":
                params[key] = 1.0 + self.contrast * (2.0 * rng.random(n) - 1.0)  # (N,) factor
            elif key == "cutout":
                params[key] = rng.integers(0, self.input_shape[:2], size=(n, 2))  # (N, 2) [ci, cj]
        return params

    def apply(self, x: np.ndarray, params: Params) -> np.ndarray:
        """The batch ``x`` (N, H, W, C) transformed by ``params`` (from :meth:`draw`, or made by
        hand with the same keys, shapes and ranges): a new array, ``x`` untouched. Entries of
        operations that are off are ignored."""
        x = self._check_batch(x)
        missing = [key for key in self.operations if key not in params]
        if missing:
            raise ValueError(f"params lack {', '.join(missing)}; they come from Augmenter.draw")
        out = x
        for key in self.operations:  # a loop over the (at most eight) operations, not the images
            p = np.asarray(params[key])
            if len(p) != len(x):
                raise ValueError(f"params[{key!r}] has {len(p)} entries for a batch of {len(x)}")
            if key == "flip_horizontal":
                out = flip(out, p.astype(bool), axis=2)
            elif key == "flip_vertical":
                out = flip(out, p.astype(bool), axis=1)
            elif key == "random_crop":
                out = random_crop(out, p, self.crop_padding)
            elif key == "translate":
                out = translate(out, p, self.translate)
            elif key == "rotate":
                out = rotate(out, p)
            elif key == "brightness":
                out = adjust_brightness(out, p)
            elif key == "contrast":
                out = adjust_contrast(out, p)
            elif key == "cutout":
                out = cutout(out, p, self.cutout_size)
        return out.copy() if out is x else out

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``apply(x, draw(len(x), rng))``: the augmented batch, a new array of x's shape and dtype."""
        x = self._check_batch(x)
        return self.apply(x, self.draw(len(x), rng))

    def _check_batch(self, x: np.ndarray) -> np.ndarray:
        if not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"the batch must be a float array (normalized images), not "
                            f"{getattr(x, 'dtype', type(x).__name__)}")
        if x.shape[1:] != self.input_shape:
            raise ValueError(f"the batch has shape {x.shape}; this augmenter is for (N, "
                             f"{', '.join(map(str, self.input_shape))}) images")
        return x


def _size_form(key: str, value: object) -> tuple[object, str]:
    """The size of ``random_crop`` / ``cutout`` given as ``{padding|size: n}`` or as ``n``, and the
    key path it was written at."""
    inner = _SIZE_KEY[key]
    if isinstance(value, Mapping):
        known_keys(value, (inner,), f"augment.{key}")
        if value.get(inner) is None:
            raise ConfigError(f"augment.{key}.{inner}", "", None,
                              raw=f"missing; for example {key}: {{{inner}: 4}}")
        return value[inner], f"augment.{key}.{inner}"
    if is_int(value):
        return value, f"augment.{key}"
    raise ConfigError(f"augment.{key}", f"{{{inner}: int >= 0}} or an int >= 0", value)


__all__ = ["AUGMENT_KEYS", "Augmenter", "flip", "random_crop", "translate", "rotate", "adjust_brightness",
           "adjust_contrast", "cutout"]
