"""The built-in dataset: coloured shapes at random positions, sizes and colours, with noise.

Class ``k`` is a shape: 0 circle, 1 square, 2 triangle, 3 cross, 4 ring, 5 diamond (the
first ``num_classes`` are used). Colours of shape and background are drawn independently
of the class, so only the shape tells the class: learnable, not trivial. Everything is
drawn from the config's seed: the same seed gives the same images, bit for bit.
Images come out as uint8 (N, H, W, C), like decoded image files, so that every source
goes through the same normalization.
"""

from __future__ import annotations

import numpy as np

SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond")


def _mask(shape: int, dy: np.ndarray, dx: np.ndarray, r: float) -> np.ndarray:
    ax, ay = np.abs(dx), np.abs(dy)
    if shape == 0:
        return dx * dx + dy * dy <= r * r
    if shape == 1:
        return np.maximum(ax, ay) <= 0.8 * r
    if shape == 2:
        return (dy <= 0.7 * r) & (dy >= -r + 1.7 * ax)
    if shape == 3:
        return ((ax <= 0.3 * r) & (ay <= r)) | ((ay <= 0.3 * r) & (ax <= r))
    if shape == 4:
        d2 = dx * dx + dy * dy
        return (d2 <= r * r) & (d2 >= (0.6 * r) ** 2)
    return ax + ay <= r


def make_synthetic(num_samples: int, num_classes: int, height: int, width: int, channels: int,
                   noise: float, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images uint8 (N, H, W, C), labels int64 (N,), class names)."""
    rng = np.random.default_rng([seed, 0x5EED])
    labels = np.arange(num_samples) % num_classes
    rng.shuffle(labels)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    images = np.empty((num_samples, height, width, channels), dtype=np.uint8)
    small = min(height, width)
    for n in range(num_samples):
        r = rng.uniform(0.22, 0.42) * small
        cy = rng.uniform(r * 0.8, height - r * 0.8)
        cx = rng.uniform(r * 0.8, width - r * 0.8)
        fg = rng.uniform(0.35, 1.0, size=channels)
        bg = rng.uniform(0.0, 0.3, size=channels)
        if rng.random() < 0.5:  # light background, dark shape half of the time
            fg, bg = 1.0 - fg, 1.0 - bg
        mask = _mask(int(labels[n]), yy - cy, xx - cx, r)[..., None]  # (H, W, 1)
        img = np.where(mask, fg, bg) + rng.normal(0.0, noise, size=(height, width, channels))
        images[n] = np.round(np.clip(img, 0.0, 1.0) * 255).astype(np.uint8)
    return images, labels.astype(np.int64), list(SHAPES[:num_classes])
