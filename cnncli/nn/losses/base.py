r"""The Loss interface, the LOSSES registry, and what every loss shares.

A loss computes ``E`` from the predictions ``yhat`` (N, ...) and the targets ``y`` and
its gradient ``dE/dyhat``. A new loss subclasses :class:`Loss` and defines
``sum_and_gradient(y_pred, y)``: the loss **summed** over everything and its gradient,
elementwise, before the reduction. The base class then applies the reduction:

* ``mean`` (the default, as in Keras and PyTorch) divides by the number of values
  (:class:`ClassLoss`: by the number of examples);
* ``sum`` adds everything up: the paper's Eqs. 7-9 are sums over the examples. The
  gradient is then ``batch_size`` times larger, and so is the right learning rate.

**From logits.** A loss that knows the gradient through the output activation as well
(``fused_activation``: sigmoid for binary cross-entropy, softmax for the categorical ones)
is given the pre-activation ``z`` instead (``from_logits=True``): the network does this
when its last layer has that activation, and ``from_logits: true`` asks for it on a
network whose last layer has no activation. ``dE/dz = yhat - y`` (ERRATA 5).

**Agreement.** :meth:`Loss.check_output` refuses a network output the loss cannot use
(categorical cross-entropy without softmax reports a loss near 0 and learns nothing).
"""

from __future__ import annotations

import math

import numpy as np

from cnncli.nn import validate
from cnncli.nn.describe import Equation, Explanation, docstring_notes, shape_text
from cnncli.nn.errors import ConfigError, DataError
from cnncli.nn.registry import Component, Registry, construct, placeholder

LOSSES: Registry = Registry("loss")


class Loss(Component):
    """``value_and_grad(y_pred, y_true, from_logits=False) -> (loss, dE/dy_pred)``."""

    registry = LOSSES
    required_methods = (("sum_and_gradient",),)
    name = "loss"
    #: The output activation whose fused gradient this loss knows, if any.
    fused_activation: str | None = None
    #: The loss takes logits and applies ``fused_activation`` itself (``from_logits: true``).
    from_logits = False
    #: Targets may be class indices (n,) for outputs (n, c); otherwise one-hot rows are given.
    takes_class_indices = False

    def __init__(self, *, reduction: str = "mean"):
        self.reduction = validate.choice("reduction", reduction, ("mean", "sum"))

    def config(self) -> dict:
        return {"name": self.name, **self.init_arguments(), "reduction": self.reduction}

    def __call__(self, y_pred, y_true, from_logits: bool = False) -> float:
        return self.value_and_grad(y_pred, y_true, from_logits=from_logits)[0]

    def value_and_grad(self, y_pred: np.ndarray, y_true: np.ndarray, *, from_logits: bool = False,
                       sample_weight: np.ndarray | None = None):
        """(loss, dE/dy_pred) after the reduction; ``from_logits``: ``y_pred`` is ``z``.

        ``sample_weight`` (N,) multiplies each example's share of the loss and of the
        gradient (class weights); the reduction still divides by the number of values, as
        Keras does. Examples of equal weight are summed together (one call each)."""
        if from_logits and self.fused_activation is None:
            raise ValueError(f"{self.name} has no fused output activation")
        y = self.targets(y_true, y_pred)
        if sample_weight is None:
            total, grad = self._sum(y_pred, y, from_logits)
        else:
            total, grad = 0.0, np.empty_like(y_pred)
            for weight in np.unique(sample_weight):
                rows = sample_weight == weight  # (N,)
                part, part_grad = self._sum(y_pred[rows], y[rows], from_logits)
                total += float(weight) * float(part)
                grad[rows] = np.asarray(part_grad, dtype=y_pred.dtype) * y_pred.dtype.type(weight)
        scale = self.scale(y_pred)
        return float(total) * scale, np.asarray(grad, dtype=y_pred.dtype) * y_pred.dtype.type(scale)

    def _sum(self, y_pred, y, from_logits):
        if from_logits:
            return self.sum_and_gradient(y_pred, y, from_logits=True)
        return self.sum_and_gradient(y_pred, y)

    @placeholder
    def sum_and_gradient(self, y_pred: np.ndarray, y: np.ndarray, from_logits: bool = False):
        """(the loss summed over every value, dE/dy_pred elementwise), before the reduction."""
        raise NotImplementedError

    def scale(self, y_pred: np.ndarray) -> float:
        """The reduction's factor: 1 for ``sum``, 1 / (number of values) for ``mean``."""
        return 1.0 if self.reduction == "sum" else 1.0 / y_pred.size

    def targets(self, y_true, y_pred) -> np.ndarray:
        """Targets shaped like the predictions ((n,) targets for (n, 1) outputs)."""
        y = np.asarray(y_true)
        if y.shape != y_pred.shape:
            squeeze = lambda shape: tuple(d for d in shape if d != 1)  # noqa: E731
            if squeeze(y.shape) == squeeze(y_pred.shape):
                y = y.reshape(y_pred.shape)
            else:
                raise DataError(f"{self.name}: targets of shape {y.shape} do not match predictions "
                                f"of shape {y_pred.shape}")
        return y.astype(y_pred.dtype, copy=False)

    def probabilities(self, outputs: np.ndarray) -> np.ndarray:
        """What the network's outputs mean as predictions: the outputs themselves, or
        their ``fused_activation`` when the loss takes logits."""
        return outputs

    # -- agreement with the network's output ----------------------------------------------
    def check_output(self, activation, output_shape: tuple[int, ...]) -> None:
        """Refuse (ConfigError) an output this loss cannot learn from. ``activation`` is
        the last layer's Activation (``linear`` when it has none)."""

    # -- what explain prints --------------------------------------------------------------
    def scale_text(self, output_shape: tuple[int, ...]) -> tuple[str, str]:
        """The reduction's factor as written in the equations, (text, TeX)."""
        if self.reduction == "sum":
            return "", ""
        outputs = math.prod(output_shape)
        if outputs == 1:
            return "1/N ", r"\frac{1}{N}"
        return f"1/(N*{outputs}) ", rf"\frac{{1}}{{N\cdot{outputs}}}"

    def formula(self, s: str, s_tex: str) -> tuple[str, str, str, str] | None:
        """(E, E in TeX, dE/dyhat, dE/dyhat in TeX), with the reduction's factor ``s``; None
        when not declared."""
        return None

    def explain(self, output_shape: tuple[int, ...], batch_size: int, fused: str | None) -> Explanation:
        """The loss section of ``explain``; ``fused``: the output activation differentiated
        together with the loss (sigmoid, softmax), if any."""
        shape = f"(N, {shape_text(output_shape)})"
        sec = Explanation(f"loss: {self.name} ({self.reduction})")
        if self.reduction == "sum":
            sec.notes.append("reduction: sum adds the loss over the batch's examples, as the paper's Eqs. 7-9; "
                             f"the gradient is {batch_size} times that of the mean at batch {batch_size}.")
        else:
            sec.notes.append("reduction: mean, as Keras and PyTorch (the paper's Eqs. 7-9 are sums).")
        s, s_tex = self.scale_text(output_shape)
        forms = self.formula(s, s_tex)
        if forms is None:
            sec.notes += docstring_notes(self)
            forms = (f"E = {s}sum {self.name}(yhat, y)", rf"E = {s_tex}\sum \mathrm{{{self.name}}}(\hat y, y)",
                     f"dE/dyhat = {s}{self.name}'(yhat, y)", r"\partial E/\partial \hat y")
        sec.forward.append(Equation(forms[0], forms[1], f"yhat: {shape}"))
        if fused or self.from_logits:
            act = fused or self.fused_activation
            if fused:
                sec.notes.append(f"The output is {fused} and the loss {self.name}: the pair is differentiated "
                                 "together, from the logits z, which stays finite even when yhat rounds to 0 or 1 "
                                 "(ERRATA 5: the paper's Eq. 46 has the opposite sign).")
            else:
                sec.notes.append(f"from_logits: the network's output is the logits z, and yhat = {act}(z) is "
                                 "computed inside the loss, which stays finite even when yhat rounds to 0 or 1 "
                                 "(ERRATA 5: the paper's Eq. 46 has the opposite sign).")
            what = ("fused sigmoid + binary cross-entropy" if act == "sigmoid"
                    else f"fused {act} + {self.name}, one-hot y")
            sec.backward.append(Equation(f"delta = dE/dz = {s}(yhat - y)   ({what})",
                                         rf"\delta = \frac{{\partial E}}{{\partial z}} = {s_tex}(\hat y - y)", shape))
        else:
            sec.backward.append(Equation(forms[2], forms[3], shape))
        return sec

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"


class LogitsLoss(Loss):
    """A loss with a fused output activation, which can also take logits
    (``from_logits: true``) from a network whose last layer has no activation."""

    def __init__(self, *, reduction: str = "mean", from_logits: bool = False):
        super().__init__(reduction=reduction)
        self.from_logits = validate.boolean("from_logits", from_logits)

    def config(self) -> dict:
        return {"name": self.name, **self.init_arguments(), "reduction": self.reduction,
                "from_logits": self.from_logits}

    def value_and_grad(self, y_pred, y_true, *, from_logits=False, sample_weight=None):
        return super().value_and_grad(y_pred, y_true, from_logits=from_logits or self.from_logits,
                                      sample_weight=sample_weight)

    def check_output(self, activation, output_shape):
        if self.from_logits and activation.name != "linear":
            raise ConfigError("from_logits", "", None, raw=(
                f"true: {self.name} then applies {self.fused_activation} to the network's output itself, but the "
                f"last layer already has the activation {activation.name}; remove it, or set from_logits: false"))


class ClassLoss(LogitsLoss):
    """Losses over a class axis (categorical cross-entropy, KL divergence): per-example
    sums, ``mean`` divides by the examples; integer labels (n,) or probability rows (n, c)."""

    fused_activation = "softmax"
    takes_class_indices = True

    def scale(self, y_pred):
        if self.reduction == "sum":
            return 1.0
        return 1.0 / (y_pred.shape[0] if y_pred.ndim > 1 else 1)

    def scale_text(self, output_shape):
        return ("", "") if self.reduction == "sum" else ("1/N ", r"\frac{1}{N}")

    def targets(self, y_true, y_pred):
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
        return super().targets(y, y_pred)

    def log_probabilities(self, y_pred, from_logits):
        """(ln q, q) for probabilities q predicted as logits or as (clipped) probabilities."""
        from cnncli.nn.functional import log_softmax

        if from_logits:
            log_q = log_softmax(y_pred)
            return log_q, np.exp(log_q)
        eps = np.finfo(y_pred.dtype).eps
        q = np.clip(y_pred, eps, 1.0)
        return np.log(q), q

    def gradient(self, q, y, from_logits):
        if from_logits:
            return q * y.sum(axis=-1, keepdims=True) - y
        return -y / q

    def probabilities(self, outputs):
        from cnncli.nn.functional import softmax

        return softmax(outputs) if self.from_logits else outputs

    def check_output(self, activation, output_shape):
        super().check_output(activation, output_shape)
        if math.prod(output_shape) < 2:
            raise ConfigError("", "", None, raw=(
                f"{self.name} compares distributions over classes, but the network has one output (a softmax over "
                "one unit is always 1); give the last dense layer one unit per class, or use sigmoid with "
                "binary_crossentropy"))
        if not self.from_logits and not activation.sums_to_one:
            raise ConfigError("", "", None, raw=(
                f"{self.name} needs probabilities that sum to 1, but the last layer's activation is "
                f"{activation.name} (its loss would read near 0 while nothing is learned); add activation: softmax "
                "to the last layer, or set loss.from_logits: true"))


def make_loss(spec: object, path: str = "loss") -> Loss:
    """A Loss from a name, a ``{name: ..., reduction: ...}`` dict or an instance."""
    if isinstance(spec, Loss):
        return spec
    return construct(LOSSES, spec, path)
