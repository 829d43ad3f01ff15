r"""Activation functions of the paper's Table 2 (and ``linear``).

Each activation maps the pre-activation ``z`` to ``a = g(z)`` elementwise (softmax: along
the last axis) and back-propagates from its **output**: ``backward(a, da)`` returns
``dz = da * g'(z)`` using only ``a``, so layers keep one array per activation, not two.

=============  ================================  ==========================================
name           g(z)                              g'(z) written with a = g(z)
=============  ================================  ==========================================
sigmoid        1 / (1 + e^-z)          (10)      a (1 - a)                            (11)
tanh           (e^z - e^-z)/(e^z + e^-z) (12)    1 - a^2                              (13)
relu           max(0, z)               (14)      1 if a > 0 else 0  (g'(0) = 0, as PyTorch/Keras;
                                                 the paper's Eq. 15 says 1)
leaky_relu     z if z > 0 else s z     (16)      1 if a > 0 else s  (s = negative_slope, 0.01)
softplus       ln(1 + e^z)             (18)      1 / (1 + e^-z) = 1 - e^-a            (19)
softmax        e^z_i / sum_j e^z_j     (20)      J = diag(a) - a a^T, so dz = a * (da - <da, a>)  (21)
linear         z                                 1
=============  ================================  ==========================================

Ranges (the paper's Table 2 has two wrong): sigmoid (0, 1); tanh (-1, 1); relu [0, inf);
leaky_relu (-inf, inf); softplus (0, inf); softmax (0, 1) summing to 1.

Every function is evaluated so that no finite input overflows: sigmoid and softplus
use ``exp(-|z|)``, softmax subtracts the row maximum. At |z| = 1e4 there is no warning
and no NaN.
"""

from __future__ import annotations

import numpy as np

from cnncli.nn import _check
from cnncli.registry import Registry, construct

ACTIVATIONS: Registry = Registry("activation")


class Activation:
    """Base class: ``forward(z) -> a`` and ``backward(a, da) -> dz``."""

    name = "activation"
    #: Whether ``g`` is non-decreasing, so max-pooling commutes with it.
    monotonic = True

    def forward(self, z: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward(self, a: np.ndarray, da: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def derivative(self, z: np.ndarray) -> np.ndarray:
        """g'(z) elementwise (for plots and tests; softmax gives the diagonal of J)."""
        a = self.forward(z)
        return self.backward(a, np.ones_like(a)) if self.name != "softmax" else a * (1 - a)

    def config(self) -> dict:
        return {"name": self.name}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@ACTIVATIONS.register("linear")
class Linear(Activation):
    name = "linear"

    def forward(self, z):
        return z

    def backward(self, a, da):
        return da


@ACTIVATIONS.register("sigmoid")
class Sigmoid(Activation):
    name = "sigmoid"

    def forward(self, z):
        return sigmoid(z)

    def backward(self, a, da):
        return da * a * (1 - a)


@ACTIVATIONS.register("tanh")
class Tanh(Activation):
    name = "tanh"

    def forward(self, z):
        return np.tanh(z)

    def backward(self, a, da):
        return da * (1 - a * a)


@ACTIVATIONS.register("relu")
class ReLU(Activation):
    name = "relu"

    def forward(self, z):
        return np.maximum(z, 0)

    def backward(self, a, da):
        return np.where(a > 0, da, 0).astype(da.dtype, copy=False)


@ACTIVATIONS.register("leaky_relu")
class LeakyReLU(Activation):
    """``max(z, s z)`` for a slope ``0 <= s < 1`` (default 0.01); g'(0) = s."""

    name = "leaky_relu"

    def __init__(self, *, negative_slope: float = 0.01):
        self.negative_slope = _check.number("negative_slope", negative_slope, low=0.0, high=1.0,
                                            high_open=True)

    def forward(self, z):
        return np.where(z > 0, z, z * z.dtype.type(self.negative_slope))

    def backward(self, a, da):
        return np.where(a > 0, da, da * da.dtype.type(self.negative_slope))

    def config(self):
        return {"name": self.name, "negative_slope": self.negative_slope}

    def __repr__(self):
        return f"LeakyReLU(negative_slope={self.negative_slope})"


@ACTIVATIONS.register("softplus")
class Softplus(Activation):
    name = "softplus"

    def forward(self, z):
        # ln(1 + e^z) = max(z, 0) + ln(1 + e^-|z|): no overflow for any finite z.
        return np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))

    def backward(self, a, da):
        # sigmoid(z) = 1 - e^-a; -expm1(-a) keeps precision where a is tiny (z << 0).
        return da * -np.expm1(-a)


@ACTIVATIONS.register("softmax")
class Softmax(Activation):
    """Softmax along the last axis (the classes)."""

    name = "softmax"
    monotonic = False

    def forward(self, z):
        shifted = z - z.max(axis=-1, keepdims=True)
        e = np.exp(shifted)
        return e / e.sum(axis=-1, keepdims=True)

    def backward(self, a, da):
        return a * (da - (da * a).sum(axis=-1, keepdims=True))


def sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-z) without overflow: uses e^-|z| on both branches."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def log_sigmoid(z: np.ndarray) -> np.ndarray:
    """ln sigmoid(z) = -softplus(-z), finite for any finite z."""
    return -(np.maximum(-z, 0) + np.log1p(np.exp(-np.abs(z))))


def make_activation(spec: object, path: str = "activation") -> Activation:
    """An Activation from a name, a ``{name: ..., **kwargs}`` dict, an instance, or None (linear)."""
    if spec is None:
        return Linear()
    if isinstance(spec, Activation):
        return spec
    return construct(ACTIVATIONS, spec, path)
