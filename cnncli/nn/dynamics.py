r"""Training dynamics: what one training step does inside the network, layer by layer.

A :class:`Probe` passed to ``Network.loss_and_gradients(..., probe=probe)`` watches that
one step (forward and backward) and :func:`parameter_dynamics` compares the weights
before and after its update. Nothing in the step changes: the probe reads arrays the
step computes anyway, so a run with dynamics recorded follows the same trajectory, bit
for bit, as one without.

For layer :math:`l` with output :math:`a^{(l)}` (shape ``(N, ...)``: the whole batch):

* **delta norm** :math:`\|\partial L / \partial a^{(l)}\|_2`, the back-propagated signal
  that reaches the layer from above (the Frobenius norm over the batch). Shrinking
  toward the input is the vanishing gradient; growing, the exploding one. The output
  layer's delta is the loss's gradient as the layer receives it: :math:`\partial L /
  \partial z` when the loss is differentiated together with the activation (sigmoid +
  binary cross-entropy, softmax + categorical cross-entropy).
* **activation statistics** of :math:`a^{(l)} = g(z^{(l)})` for a layer with a
  non-linear activation: mean and standard deviation over the batch, and

  - *saturated fraction*, for an activation with two finite bounds
    :math:`[lo, hi]` (tanh, sigmoid): outputs within 1% of the range from a bound,
    :math:`a - lo \le 0.01(hi - lo)` or :math:`hi - a \le 0.01(hi - lo)`, where
    :math:`g'` is nearly 0 and the delta dies;
  - *dead fraction*, for an activation that is exactly 0 on a half-line (relu): the
    units (the last axis: a conv layer's channels, a dense layer's units) whose output
    is 0 for every example and position of the batch, so that no gradient reaches
    their weights.

* **per parameter** :math:`W`: :math:`\|\partial L/\partial W\|_2` (the gradient of the
  loss, before clipping and weight decay), :math:`\|W\|_2` before the update, the
  update's norm :math:`\|\Delta W\|_2 = \|W_{t+1} - W_t\|_2` and the update-to-weight
  ratio :math:`\|\Delta W\|_2 / \|W_t\|_2` (around 1e-3 is the usual healthy figure; 1e-1
  moves the weights too far each step, 1e-6 barely at all).

A step of the execution plan that runs two layers as one (``cnncli.nn.fusion``) reports
both: :meth:`Step.activated_outputs` gives the activated output before pooling and
:meth:`Step.delta_norms` the delta that reaches each of its layers.
"""

from __future__ import annotations

import math

import numpy as np

#: Outputs within this fraction of the range from a bound count as saturated.
SATURATION_MARGIN = 0.01


def norm(a: np.ndarray) -> float:
    """The 2-norm of all of ``a``, accumulated in float64."""
    flat = np.asarray(a, dtype=np.float64).reshape(-1)  # (size,)
    return math.sqrt(float(np.dot(flat, flat)))


def activation_statistics(activation, a: np.ndarray) -> dict:
    """Mean, standard deviation, saturated and dead fractions of ``a = g(z)`` (N, ..., units).

    ``saturated`` is None for an activation without two finite bounds (``output_range``),
    and for one whose rows sum to one (softmax: near 0 is the normal state of most
    classes); ``dead`` is None unless the activation is exactly 0 on a half-line
    (``activation.zero_on_half_line``).
    """
    # In the array's own precision, without float64 copies of a whole batch's outputs
    # (the mean is summed in float64; the deviations' squares by BLAS in the array's dtype,
    # about 1e-6 relative in float32: plenty for a statistic).
    flat = np.ascontiguousarray(a).reshape(-1)  # (size,)
    mean = float(np.sum(flat, dtype=np.float64)) / flat.size
    deviation = flat - flat.dtype.type(mean)
    stats = {"name": activation.name, "mean": mean,
             "std": math.sqrt(max(float(np.dot(deviation, deviation)), 0.0) / flat.size),
             "saturated": None, "dead": None}
    bounds = activation.output_range
    if bounds is not None and all(math.isfinite(b) for b in bounds) and not activation.sums_to_one:
        lo, hi = bounds
        margin = SATURATION_MARGIN * (hi - lo)
        low, high = flat.dtype.type(lo + margin), flat.dtype.type(hi - margin)
        saturated = np.count_nonzero(flat <= low) + np.count_nonzero(flat >= high)
        stats["saturated"] = saturated / a.size
    if getattr(activation, "zero_on_half_line", False):
        units = a.reshape(-1, a.shape[-1])  # (N * positions, units)
        alive = np.any(units != 0, axis=0)  # (units,)
        stats["dead"] = float(1.0 - alive.mean())
    return stats


class Probe:
    """Collects what one training step shows of each layer (see the module docstring).

    The network calls :meth:`forward` after each step of its plan and :meth:`backward`
    before each step's backward pass; afterwards ``deltas`` maps layer index to the
    delta norm and ``activations`` to :func:`activation_statistics`.
    """

    def __init__(self) -> None:
        self.deltas: dict[int, float] = {}
        self.activations: dict[int, dict] = {}

    def forward(self, step, out: np.ndarray, logits: bool) -> None:
        for index, activation, a in step.activated_outputs(out, logits=logits):
            self.activations[index] = activation_statistics(activation, a)

    def backward(self, step, dy: np.ndarray) -> None:
        self.deltas.update(step.delta_norms(dy))


def parameter_dynamics(before: dict[str, np.ndarray], after: dict[str, np.ndarray],
                       grad_norms: dict[str, float]) -> dict[str, dict]:
    """Per parameter name: ``norm`` (before the update), ``grad_norm``, ``update_norm`` and
    ``update_ratio`` (None when the weights were all zero, as biases start)."""
    out = {}
    for key, old in before.items():
        weight = norm(old)
        update = norm(after[key].astype(np.float64) - old)
        out[key] = {"norm": weight, "grad_norm": grad_norms[key], "update_norm": update,
                    "update_ratio": update / weight if weight > 0 else None}
    return out


def layer_records(network, probe: Probe, parameters: dict[str, dict]) -> list[dict]:
    """One dict per layer of ``network``: ``layer`` (index), ``label``, ``delta_norm``,
    ``activation`` (statistics, for a layer with a non-linear activation) and ``params``
    (by parameter name, from :func:`parameter_dynamics` keyed ``layers.<i>.<name>``)."""
    rows = []
    for i, layer in enumerate(network.layers):
        row = {"layer": i, "label": layer.label(), "delta_norm": probe.deltas.get(i)}
        if i in probe.activations:
            row["activation"] = probe.activations[i]
        prefix = f"layers.{i}."
        params = {key[len(prefix):]: v for key, v in parameters.items() if key.startswith(prefix)}
        if params:
            row["params"] = params
        rows.append(row)
    return rows
