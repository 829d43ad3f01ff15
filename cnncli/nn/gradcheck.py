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
                       indices: np.ndarray | None = None, kink_tolerance: float | None = None) -> np.ndarray:
    """d f / d x at the flat ``indices`` of ``x`` (all when None), perturbing ``x`` in place.

    ``f`` takes no argument: it reads ``x`` (a parameter array, or the input it closes
    over). ``x`` is restored exactly after each entry.

    With ``kink_tolerance``, an entry whose one-sided differences ``(f(x+h) - f(x))/h``
    and ``(f(x) - f(x-h))/h`` disagree by more than that fraction of their size is NaN:
    the step crossed a kink (a ReLU at 0, a max-pool near-tie), where no derivative is
    defined; for a smooth ``f`` they differ by only about ``h |f''|``.
    """
    flat = x.reshape(-1)  # a view: x must be contiguous
    if not np.shares_memory(flat, x):
        raise ValueError("x must be contiguous")
    idx = np.arange(flat.size) if indices is None else np.asarray(indices)
    out = np.empty(idx.size, dtype=np.float64)
    centre = f() if kink_tolerance is not None else 0.0
    for k, i in enumerate(idx):
        old = flat[i]
        flat[i] = old + h
        plus = f()
        flat[i] = old - h
        minus = f()
        flat[i] = old
        out[k] = (plus - minus) / (2 * h)
        if kink_tolerance is not None:
            ahead, behind = (plus - centre) / h, (centre - minus) / h
            if abs(ahead - behind) > kink_tolerance * (abs(ahead) + abs(behind)) + 1e-8:
                out[k] = np.nan
    return out


def relative_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """Norm-wise relative error; entries where ``numeric`` is NaN (kinks) are left out."""
    a = np.asarray(analytic, dtype=np.float64).ravel()
    n = np.asarray(numeric, dtype=np.float64).ravel()
    keep = ~np.isnan(n)
    a, n = a[keep], n[keep]
    return float(np.linalg.norm(a - n) / max(np.linalg.norm(a) + np.linalg.norm(n), 1e-30))


def sample_indices(size: int, max_entries: int | None, rng: np.random.Generator) -> np.ndarray:
    """All flat indices, or ``max_entries`` of them drawn without replacement."""
    if max_entries is None or size <= max_entries:
        return np.arange(size)
    return np.sort(rng.choice(size, size=max_entries, replace=False))


def check_layer(layer, x: np.ndarray, *, training: bool = True, seed: int = 0, h: float = 1e-6,
                max_entries: int | None = None, kink_tolerance: float | None = None,
                skipped: dict | None = None) -> dict[str, float]:
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
        numeric = numerical_gradient(scalar, arr, h=h, indices=idx, kink_tolerance=kink_tolerance)
        errors[name] = relative_error(analytic[name].reshape(-1)[idx], numeric)
        if skipped is not None:
            skipped[name] = int(np.isnan(numeric).sum())
    return errors


def _max_pool_ties(network, inputs: list[np.ndarray]) -> bool:
    """Whether a max pooling window of this forward pass holds its maximum twice."""
    from cnncli.nn.layers.windows import pad_input

    for layer, x in zip(network.layers, inputs):
        if layer.type_name != "max_pool2d":
            continue
        xp = pad_input(x, layer.pads, -np.inf)
        views = [xp[:, rows, cols, :] for _, _, rows, cols in layer.offsets()]
        out = np.maximum.reduce(views)
        if np.any(sum((v == out).astype(np.int64) for v in views) > 1):
            return True
    return False


#: One-sided differences that disagree by more than this fraction mark a kink (skipped).
KINK_TOLERANCE = 1e-5


def check_network(network, loss, x: np.ndarray, y: np.ndarray, *, max_entries: int | None = 20, seed: int = 0,
                  h: float = 1e-6) -> list[dict]:
    """Check every layer of a float64 network two ways, returning one row per layer.

    * **local**: the layer alone, on the input it receives in this forward pass (for max
      pooling with ties broken by a 1e-4 jitter), against a random upstream gradient
      (:func:`check_layer`): a wrong backward is pinned on the layer that has it.
    * **end to end**: each parameter's gradient of the network's loss on ``(x, y)``,
      as training computes it (fused logits where they apply), against central
      differences of that loss; and the input's gradient (the row ``input``).

    When a max pooling window of the forward pass ties (flat image regions), ``x`` gets a
    1e-2 Gaussian jitter first: the loss is not differentiable at a tie, and a smaller
    jitter leaves near-ties that a step of ``h`` crosses. Dropout masks are drawn once and
    fixed; batch norm runs in training mode. Entries
    of tensors larger than ``max_entries`` are sampled (seeded). Row keys: ``index``,
    ``layer``, ``local`` and ``end_to_end`` (dicts of tensor name -> relative error),
    ``entries`` (numbers checked), ``kinks`` (entries left out because the step crossed a
    kink, see :func:`numerical_gradient`), ``error`` (the largest relative error).
    """
    if network.dtype != np.float64:
        raise ValueError("gradient checks need a float64 network")
    # A frozen layer's gradients are still mathematics to prove: check it as if trainable.
    frozen = [layer for layer in network.layers if not layer.trainable]
    for layer in frozen:
        layer.trainable = True
    try:
        return _check_network(network, loss, x, y, max_entries=max_entries, seed=seed, h=h)
    finally:
        for layer in frozen:
            layer.trainable = False


def _check_network(network, loss, x, y, *, max_entries, seed, h) -> list[dict]:
    rng = np.random.default_rng(seed)
    x = np.ascontiguousarray(x, dtype=np.float64)
    fused = network.uses_logits(loss)

    def forward_inputs(x: np.ndarray) -> list[np.ndarray]:
        # One forward pass in training mode, keeping each layer's input and pinning dropout.
        inputs, a = [], x
        for layer in network.layers:
            inputs.append(a)
            a = layer.forward(a, True)
            if getattr(layer, "_mask", None) is not None and hasattr(layer, "fixed_mask"):
                layer.fixed_mask = layer._mask
        return inputs

    inputs = forward_inputs(x)
    if _max_pool_ties(network, inputs):
        # Flat regions of real images (Fashion-MNIST's black background) give equal values
        # in whole pooling windows: the loss is not differentiable there, and central
        # differences across the tie disagree with any one-sided gradient. A 1e-2 jitter
        # of the input (its own generator, so the sampled entries stay the same) breaks them.
        x = x + 1e-2 * np.random.default_rng([seed, 1]).standard_normal(x.shape)
        inputs = forward_inputs(x)
    try:
        value, _, dx = network.loss_and_gradients(x, y, loss, training=True, input_grad=True)
        analytic = {f"{i}.{k}": g.copy() for i, l in enumerate(network.layers) for k, g in l.grads.items()
                    if k in l.params}

        def total_loss() -> float:
            out = network.forward(x, True, logits=fused)
            return loss.value_and_grad(out, y, from_logits=fused)[0]

        rows = [{"index": None, "layer": "input", "local": {}, "end_to_end": {}, "entries": 0, "kinks": 0}]
        idx = sample_indices(x.size, max_entries, rng)
        numeric = numerical_gradient(total_loss, x, h=h, indices=idx, kink_tolerance=KINK_TOLERANCE)
        rows[0]["end_to_end"]["x"] = relative_error(dx.reshape(-1)[idx], numeric)
        rows[0]["entries"] += idx.size
        rows[0]["kinks"] += int(np.isnan(numeric).sum())
        for i, layer in enumerate(network.layers):
            row = {"index": i, "layer": layer.type_name, "local": {}, "end_to_end": {}, "entries": 0, "kinks": 0}
            layer_input = inputs[i].copy()
            if layer.type_name == "max_pool2d":
                # ReLU outputs tie at 0 inside pooling windows; finite differences across a tie
                # measure a different one-sided derivative, so the local check breaks ties.
                layer_input += 1e-4 * rng.standard_normal(layer_input.shape)
            skipped: dict = {}
            row["local"] = check_layer(layer, layer_input, training=True, seed=seed + i, h=h,
                                       max_entries=max_entries, kink_tolerance=KINK_TOLERANCE, skipped=skipped)
            row["kinks"] += sum(skipped.values())
            for key, param in layer.params.items():
                idx = sample_indices(param.size, max_entries, rng)
                numeric = numerical_gradient(total_loss, param, h=h, indices=idx, kink_tolerance=KINK_TOLERANCE)
                row["end_to_end"][key] = relative_error(analytic[f"{i}.{key}"].reshape(-1)[idx], numeric)
                row["entries"] += idx.size
                row["kinks"] += int(np.isnan(numeric).sum())
            row["entries"] += sum(min(arr.size, max_entries or arr.size)
                                  for arr in [inputs[i], *layer.params.values()])
            rows.append(row)
    finally:
        for layer in network.layers:
            if hasattr(layer, "fixed_mask"):
                layer.fixed_mask = None
    for row in rows:
        errors = list(row["local"].values()) + list(row["end_to_end"].values())
        row["error"] = max(errors) if errors else 0.0
    return rows
