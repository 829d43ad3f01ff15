r"""Weight initializers.

Fans for a dense kernel ``(D_in, D_out)`` are ``D_in`` and ``D_out``; for a conv kernel
HWIO ``(kh, kw, C_in, C_out)`` they are ``kh*kw*C_in`` and ``kh*kw*C_out``.

=================  =====================================================
name               distribution
=================  =====================================================
glorot_uniform     U(-a, a),  a = sqrt(6 / (fan_in + fan_out))   (Keras default)
glorot_normal      N(0, s^2), s = sqrt(2 / (fan_in + fan_out))
he_uniform         U(-a, a),  a = sqrt(6 / fan_in)
he_normal          N(0, s^2), s = sqrt(2 / fan_in)
lecun_uniform      U(-a, a),  a = sqrt(3 / fan_in)
lecun_normal       N(0, s^2), s = sqrt(1 / fan_in)
pytorch_default    U(-a, a),  a = 1 / sqrt(fan_in)   (torch.nn Conv2d/Linear, weights and biases)
random_normal      N(mean, stddev^2), whatever the fans (Keras: mean 0, stddev 0.05)
random_uniform     U(minval, maxval), whatever the fans (Keras: -0.05, 0.05)
zeros, ones        constants
constant           every value ``value`` (``{name: constant, value: -1}``)
=================  =====================================================

``random_normal`` and ``random_uniform`` ignore the fans: their scale does not follow
the layer's width, which is what makes a deep stack's gradient vanish or explode (see
the training dynamics, ``cnncli.nn.dynamics``); they are here to show that and for
configs written for Keras.

The ``*_normal`` initializers draw an untruncated normal. Values are drawn in float64
from the network's ``numpy.random.Generator`` and then cast, so the same seed gives the
same weights, bit for bit, and float32 weights are the rounded float64 ones.

An initializer of your own subclasses :class:`Initializer` and defines ``sample``; a
layer names it like a built-in (``kernel_initializer: my_init`` or
``{name: my_init, scale: 0.5}``).
"""

from __future__ import annotations

import math

import numpy as np

from cnncli.nn import validate
from cnncli.nn.errors import ConfigError, ShapeError
from cnncli.nn.registry import Component, Registry, construct, placeholder, register

INITIALIZERS: Registry = Registry("initializer")


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a kernel shape; a 1-D shape (a bias) has fan_in = fan_out = size."""
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[:-2])
    return receptive * shape[-2], receptive * shape[-1]


class Initializer(Component):
    """``sample(shape, rng, fan_in, fan_out)`` -> float64 values of ``shape``.

    Layers pass their own fans (a bias gets its kernel's); ``fans(shape)`` is the
    default when a caller gives none.
    """

    registry = INITIALIZERS
    required_methods = (("sample",),)
    name = "initializer"

    @placeholder
    def sample(self, shape: tuple[int, ...], rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
        raise NotImplementedError

    def config(self) -> str | dict:
        """The name alone, or ``{name, **keywords}`` when the initializer takes any."""
        args = self.init_arguments()
        return {"name": self.name, **args} if args else self.name

    def __call__(self, shape, rng, fan_in=None, fan_out=None) -> np.ndarray:
        fi, fo = fans(tuple(shape))
        return self.sample(tuple(shape), rng, fi if fan_in is None else fan_in, fo if fan_out is None else fan_out)


class _Uniform(Initializer):
    def limit(self, fan_in: int, fan_out: int) -> float:
        raise NotImplementedError

    def sample(self, shape, rng, fan_in, fan_out):
        a = self.limit(fan_in, fan_out)
        return rng.uniform(-a, a, size=shape)


class _Normal(Initializer):
    def std(self, fan_in: int, fan_out: int) -> float:
        raise NotImplementedError

    def sample(self, shape, rng, fan_in, fan_out):
        return rng.normal(0.0, self.std(fan_in, fan_out), size=shape)


@register("glorot_uniform")
class GlorotUniform(_Uniform):
    def limit(self, fan_in, fan_out):
        return math.sqrt(6.0 / (fan_in + fan_out))


@register("glorot_normal")
class GlorotNormal(_Normal):
    def std(self, fan_in, fan_out):
        return math.sqrt(2.0 / (fan_in + fan_out))


@register("he_uniform")
class HeUniform(_Uniform):
    def limit(self, fan_in, fan_out):
        return math.sqrt(6.0 / fan_in)


@register("he_normal")
class HeNormal(_Normal):
    def std(self, fan_in, fan_out):
        return math.sqrt(2.0 / fan_in)


@register("lecun_uniform")
class LecunUniform(_Uniform):
    def limit(self, fan_in, fan_out):
        return math.sqrt(3.0 / fan_in)


@register("lecun_normal")
class LecunNormal(_Normal):
    def std(self, fan_in, fan_out):
        return math.sqrt(1.0 / fan_in)


@register("pytorch_default")
class PytorchDefault(_Uniform):
    """torch.nn's default for Conv2d and Linear: U(+-1/sqrt(fan_in)) for weights and biases.

    A bias must be given the fan_in of its layer's kernel, which layers pass explicitly.
    """

    def limit(self, fan_in, fan_out):
        return 1.0 / math.sqrt(fan_in)


@register("random_normal")
class RandomNormal(Initializer):
    """N(mean, stddev^2) for every value, whatever the fans."""

    def __init__(self, *, mean=0.0, stddev=0.05):
        self.mean = validate.number("mean", mean)
        self.stddev = validate.number("stddev", stddev, low=0.0)

    def sample(self, shape, rng, fan_in, fan_out):
        return rng.normal(self.mean, self.stddev, size=shape)


@register("random_uniform")
class RandomUniform(Initializer):
    """U(minval, maxval) for every value, whatever the fans."""

    def __init__(self, *, minval=-0.05, maxval=0.05):
        self.minval = validate.number("minval", minval)
        self.maxval = validate.number("maxval", maxval)
        if not self.maxval > self.minval:
            raise ConfigError("maxval", f"a number greater than minval ({self.minval})", maxval)

    def sample(self, shape, rng, fan_in, fan_out):
        return rng.uniform(self.minval, self.maxval, size=shape)


@register("constant")
class Constant(Initializer):
    """Every value ``value`` (a bias of -3 makes relu units start dead, for example)."""

    def __init__(self, *, value=0.0):
        self.value = validate.number("value", value)

    def sample(self, shape, rng, fan_in, fan_out):
        return np.full(shape, self.value, dtype=np.float64)


@register("zeros")
class Zeros(Initializer):
    def sample(self, shape, rng, fan_in, fan_out):
        return np.zeros(shape)


@register("ones")
class Ones(Initializer):
    def sample(self, shape, rng, fan_in, fan_out):
        return np.ones(shape)


def make_initializer(spec: object, path: str = "initializer") -> Initializer:
    """An Initializer from a name, a ``{name: ..., **kwargs}`` dict or an instance."""
    if isinstance(spec, Initializer):
        return spec
    return construct(INITIALIZERS, spec, path)


def initialize(initializer: Initializer, shape: tuple[int, ...], rng: np.random.Generator | None, dtype,
               fan_in: int | None = None, fan_out: int | None = None) -> np.ndarray:
    """Draw an array of ``shape`` with ``initializer`` and cast it to ``dtype``.

    Without a generator (``rng=None``: a network built with ``allocate=False``) the result
    is a read-only zero-strided placeholder of the right shape that takes no memory.
    """
    if rng is None:
        return np.broadcast_to(np.zeros((), dtype=dtype), tuple(shape))
    values = initializer(tuple(shape), rng, fan_in, fan_out)
    if np.shape(values) != tuple(shape):
        raise ShapeError(None, f"initializer {initializer.name!r} returned an array of shape {np.shape(values)} for "
                               f"a parameter of shape {tuple(shape)}")
    return np.ascontiguousarray(values, dtype=dtype)
