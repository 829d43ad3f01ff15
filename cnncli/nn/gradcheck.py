r"""Central finite differences, for the tests and for ``cnncli gradcheck``.

For a scalar function ``f`` of an array ``x``, the numerical derivative of entry ``i`` is

.. math::  \frac{f(x + h e_i) - f(x - h e_i)}{2h}

with error ``O(h^2)``; in float64 with ``h = 1e-6`` it agrees with a correct analytic
gradient to about 1e-9 relative. The comparison is the norm-wise relative error

.. math::  \frac{\lVert g_a - g_n \rVert_2}{\max(\lVert g_a \rVert_2 + \lVert g_n \rVert_2,\ 10^{-30})}

over the entries checked (all of them, or a seeded sample of a large tensor).
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def numerical_gradient(f: Callable[[], float], x: np.ndarray, *, h: float = 1e-6,
                       indices: np.ndarray | None = None) -> np.ndarray:
    """d f / d x at the flat ``indices`` of ``x`` (all when None), perturbing ``x`` in place.

    ``f`` takes no argument: it reads ``x`` (a parameter array, or the input it closes
    over). ``x`` is restored exactly after each entry.
    """
    flat = x.reshape(-1)  # a view: x must be contiguous
    if not np.shares_memory(flat, x):
        raise ValueError("x must be contiguous")
    idx = np.arange(flat.size) if indices is None else np.asarray(indices)
    out = np.empty(idx.size, dtype=np.float64)
    for k, i in enumerate(idx):
        old = flat[i]
        flat[i] = old + h
        plus = f()
        flat[i] = old - h
        minus = f()
        flat[i] = old
        out[k] = (plus - minus) / (2 * h)
    return out


def relative_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    a = np.asarray(analytic, dtype=np.float64).ravel()
    n = np.asarray(numeric, dtype=np.float64).ravel()
    return float(np.linalg.norm(a - n) / max(np.linalg.norm(a) + np.linalg.norm(n), 1e-30))


def sample_indices(size: int, max_entries: int | None, rng: np.random.Generator) -> np.ndarray:
    """All flat indices, or ``max_entries`` of them drawn without replacement."""
    if max_entries is None or size <= max_entries:
        return np.arange(size)
    return np.sort(rng.choice(size, size=max_entries, replace=False))


def check_layer(layer, x: np.ndarray, *, training: bool = True, seed: int = 0, h: float = 1e-6,
                max_entries: int | None = None) -> dict[str, float]:
    """Relative errors of ``dx`` and each parameter gradient of a built float64 layer.

    The scalar checked is ``L = sum(forward(x) * U)`` for a fixed random ``U`` (not ones,
    so that errors which cancel in a plain sum show).
    """
    rng = np.random.default_rng(seed)
    x = np.ascontiguousarray(x, dtype=np.float64)
    y = layer.forward(x, training)
    upstream = rng.standard_normal(y.shape)
    layer.needs_input_grad = True
    dx = layer.backward(upstream)
    analytic = {"x": dx, **{k: g.copy() for k, g in layer.grads.items()}}

    def scalar() -> float:
        return float(np.sum(layer.forward(x, training) * upstream))

    errors = {}
    targets = {"x": x, **layer.params}
    for name, arr in targets.items():
        idx = sample_indices(arr.size, max_entries, rng)
        numeric = numerical_gradient(scalar, arr, h=h, indices=idx)
        errors[name] = relative_error(analytic[name].reshape(-1)[idx], numeric)
    return errors
