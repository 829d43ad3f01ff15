r"""Loss functions of the paper's Table 1, with a choice of reduction.

Notation: ``yhat`` predictions, ``y`` targets, ``n`` examples, ``c`` outputs per example.

=========================  ===============================================  ============================
name                       per-element / per-example loss                   dE/dyhat (before reduction)
=========================  ===============================================  ============================
mse                        (yhat - y)^2            [x 1/2 with half: true]  2 (yhat - y)  [yhat - y]
mae                        |yhat - y|                                       sign(yhat - y)  (0 at 0)
binary_crossentropy        -[y ln yhat + (1 - y) ln(1 - yhat)]              (yhat - y) / (yhat (1 - yhat))
categorical_crossentropy   -sum_j y_j ln yhat_j                             -y / yhat
kl_divergence              sum_j y_j (ln y_j - ln yhat_j)   (0 ln 0 = 0)    -y / yhat
=========================  ===============================================  ============================

**Reduction.** ``mean`` (the default, as in Keras and PyTorch) averages the per-example
loss over the batch; mse, mae and binary cross-entropy also average over the outputs of
an example, as ``torch.nn.MSELoss``/``BCELoss`` do. ``sum`` adds everything up: that is
the paper's Eqs. 7-9, which are sums over the examples. The paper's Eq. 5 (MSE) is a
mean with a factor 1/2, which is ``mse`` with ``half: true``. The learning rate depends
on the choice: with ``sum`` the gradient is ``batch_size`` times larger (see
REFERENCE-RESULTS: the paper's SGD lr 1e-4 learns only with the sum).

**From logits.** A network that ends in sigmoid (softmax) trained with binary
(categorical) cross-entropy or KL divergence is differentiated through the fused pair:
the loss takes the pre-activation ``z``, computes ``ln sigmoid`` / ``log-sum-exp``
stably, and gives ``dE/dz = yhat - y`` (ERRATA 5: the paper's Eq. 46 has the wrong
sign; for soft targets ``dE/dz = yhat * sum_j y_j - y``). A saturated output (yhat = 0
or 1 in floating point) then has a finite loss and gradient. Given probabilities
instead, binary cross-entropy clips ``yhat`` to ``[eps, 1 - eps]`` and the categorical
ones to ``[eps, 1]``, with ``eps`` the dtype's machine epsilon, and the gradient is the formula above at the clipped value (large but
finite, so a saturated unit still gets a learning signal).

**Targets.** Binary cross-entropy takes 0/1 (or soft) targets of shape (n,) or the
prediction's shape. Categorical cross-entropy and KL take integer labels (n,) or
one-hot / probability rows (n, c). Integer labels outside [0, c) raise DataError.
"""

from __future__ import annotations

import numpy as np

from cnncli.errors import DataError
from cnncli.nn import _check
from cnncli.nn.activations import log_sigmoid, sigmoid
from cnncli.registry import Registry, construct

LOSSES: Registry = Registry("loss")


class Loss:
    """``value_and_grad(y_pred, y_true, from_logits=False) -> (loss, dE/dy_pred)``."""

    name = "loss"
    #: The output activation whose fused gradient this loss knows, if any.
    fused_activation: str | None = None

    def __init__(self, *, reduction: str = "mean"):
        self.reduction = _check.choice("reduction", reduction, ("mean", "sum"))

    def config(self) -> dict:
        return {"name": self.name, "reduction": self.reduction}

    def __call__(self, y_pred, y_true, from_logits: bool = False) -> float:
        return self.value_and_grad(y_pred, y_true, from_logits=from_logits)[0]

    def value_and_grad(self, y_pred: np.ndarray, y_true: np.ndarray, *, from_logits: bool = False):
        if from_logits and self.fused_activation is None:
            raise ValueError(f"{self.name} has no fused output activation")
        y = self._targets(y_true, y_pred)
        total, grad = self._elementwise(y_pred, y, from_logits)
        scale = self._scale(y_pred)
        return float(total) * scale, grad * y_pred.dtype.type(scale)

    def _scale(self, y_pred: np.ndarray) -> float:
        """The reduction's divisor: 1 for ``sum``."""
        if self.reduction == "sum":
            return 1.0
        return 1.0 / y_pred.size

    def _targets(self, y_true, y_pred):
        y = np.asarray(y_true)
        if y.shape != y_pred.shape:
            squeeze = lambda shape: tuple(d for d in shape if d != 1)  # noqa: E731
            if squeeze(y.shape) == squeeze(y_pred.shape):  # (n,) targets for (n, 1) outputs
                y = y.reshape(y_pred.shape)
            else:
                raise DataError(f"{self.name}: targets of shape {y.shape} do not match predictions "
                                f"of shape {y_pred.shape}")
        return y.astype(y_pred.dtype, copy=False)

    def _elementwise(self, y_pred, y, from_logits):
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}(reduction={self.reduction!r})"


@LOSSES.register("mse")
class MeanSquaredError(Loss):
    name = "mse"

    def __init__(self, *, reduction="mean", half=False):
        super().__init__(reduction=reduction)
        self.half = _check.boolean("half", half)

    def config(self):
        return {**super().config(), "half": self.half}

    def _elementwise(self, y_pred, y, from_logits):
        diff = y_pred - y
        factor = 0.5 if self.half else 1.0
        return factor * float(np.sum(diff * diff)), diff * y_pred.dtype.type(2 * factor)


@LOSSES.register("mae")
class MeanAbsoluteError(Loss):
    name = "mae"

    def _elementwise(self, y_pred, y, from_logits):
        diff = y_pred - y
        return float(np.sum(np.abs(diff))), np.sign(diff)


@LOSSES.register("binary_crossentropy")
class BinaryCrossentropy(Loss):
    name = "binary_crossentropy"
    fused_activation = "sigmoid"

    def _elementwise(self, y_pred, y, from_logits):
        if from_logits:
            z = y_pred
            # -[y ln s(z) + (1-y) ln(1-s(z))] with ln(1 - s(z)) = ln s(-z)
            total = -np.sum(y * log_sigmoid(z) + (1 - y) * log_sigmoid(-z))
            return float(total), sigmoid(z) - y
        eps = np.finfo(y_pred.dtype).eps
        p = np.clip(y_pred, eps, 1 - eps)
        total = -np.sum(y * np.log(p) + (1 - y) * np.log1p(-p))
        return float(total), (p - y) / (p * (1 - p))


class _ClassLoss(Loss):
    """Losses over a class axis: per-example sums, ``mean`` divides by the examples."""

    fused_activation = "softmax"

    def _scale(self, y_pred):
        if self.reduction == "sum":
            return 1.0
        return 1.0 / (y_pred.shape[0] if y_pred.ndim > 1 else 1)

    def _targets(self, y_true, y_pred):
        y = np.asarray(y_true)
        classes = y_pred.shape[-1]
        if y.ndim == y_pred.ndim - 1 and y.shape == y_pred.shape[:-1]:
            if y.dtype.kind not in "iub":
                if not np.all(np.equal(np.mod(y, 1), 0)):
                    raise DataError(f"{self.name}: integer labels expected; got non-integer values")
            labels = y.astype(np.int64)
            bad = (labels < 0) | (labels >= classes)
            if np.any(bad):
                raise DataError(f"{self.name}: label {int(labels[bad][0])} is out of range for "
                                f"{classes} classes (expected 0..{classes - 1})")
            onehot = np.zeros(y_pred.shape, dtype=y_pred.dtype)
            np.put_along_axis(onehot, labels[..., None], 1, axis=-1)
            return onehot
        return super()._targets(y, y_pred)

    def _log_q(self, y_pred, from_logits):
        """(ln q, q) for probabilities q predicted as logits or as (clipped) probabilities."""
        if from_logits:
            shifted = y_pred - y_pred.max(axis=-1, keepdims=True)
            log_q = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
            return log_q, np.exp(log_q)
        eps = np.finfo(y_pred.dtype).eps
        q = np.clip(y_pred, eps, 1.0)
        return np.log(q), q

    def _grad(self, q, y, from_logits):
        if from_logits:
            return q * y.sum(axis=-1, keepdims=True) - y
        return -y / q


@LOSSES.register("categorical_crossentropy")
class CategoricalCrossentropy(_ClassLoss):
    name = "categorical_crossentropy"

    def _elementwise(self, y_pred, y, from_logits):
        log_q, q = self._log_q(y_pred, from_logits)
        return float(-np.sum(y * log_q)), self._grad(q, y, from_logits)


@LOSSES.register("kl_divergence")
class KLDivergence(_ClassLoss):
    """``sum_j y_j (ln y_j - ln yhat_j)``, the paper's Eq. 9; zero where ``y_j = 0``."""

    name = "kl_divergence"

    def _elementwise(self, y_pred, y, from_logits):
        log_q, q = self._log_q(y_pred, from_logits)
        positive = y > 0
        log_y = np.log(np.where(positive, y, 1))
        total = np.sum(np.where(positive, y * (log_y - log_q), 0))
        return float(total), self._grad(q, y, from_logits)


def make_loss(spec: object, path: str = "loss") -> Loss:
    """A Loss from a name, a ``{name: ..., reduction: ...}`` dict or an instance."""
    if isinstance(spec, Loss):
        return spec
    return construct(LOSSES, spec, path)
