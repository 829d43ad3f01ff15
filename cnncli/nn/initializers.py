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
zeros, ones        constants
=================  =====================================================

The ``*_normal`` initializers draw an untruncated normal. Values are drawn in float64
from the network's ``numpy.random.Generator`` and then cast, so the same seed gives the
same weights, bit for bit, and float32 weights are the rounded float64 ones.
"""

from __future__ import annotations

import math

import numpy as np

from cnncli.registry import Registry

INITIALIZERS: Registry = Registry("initializer")


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a kernel shape; a 1-D shape (a bias) has fan_in = fan_out = size."""
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[:-2])
    return receptive * shape[-2], receptive * shape[-1]


def _uniform(rng, shape, limit):
    return rng.uniform(-limit, limit, size=shape)


def _normal(rng, shape, std):
    return rng.normal(0.0, std, size=shape)


@INITIALIZERS.register("glorot_uniform")
def glorot_uniform(shape, rng, fan_in=None, fan_out=None):
    fi, fo = fans(shape) if fan_in is None else (fan_in, fan_out)
    return _uniform(rng, shape, math.sqrt(6.0 / (fi + fo)))


@INITIALIZERS.register("glorot_normal")
def glorot_normal(shape, rng, fan_in=None, fan_out=None):
    fi, fo = fans(shape) if fan_in is None else (fan_in, fan_out)
    return _normal(rng, shape, math.sqrt(2.0 / (fi + fo)))


@INITIALIZERS.register("he_uniform")
def he_uniform(shape, rng, fan_in=None, fan_out=None):
    fi = fans(shape)[0] if fan_in is None else fan_in
    return _uniform(rng, shape, math.sqrt(6.0 / fi))


@INITIALIZERS.register("he_normal")
def he_normal(shape, rng, fan_in=None, fan_out=None):
    fi = fans(shape)[0] if fan_in is None else fan_in
    return _normal(rng, shape, math.sqrt(2.0 / fi))


@INITIALIZERS.register("lecun_uniform")
def lecun_uniform(shape, rng, fan_in=None, fan_out=None):
    fi = fans(shape)[0] if fan_in is None else fan_in
    return _uniform(rng, shape, math.sqrt(3.0 / fi))


@INITIALIZERS.register("lecun_normal")
def lecun_normal(shape, rng, fan_in=None, fan_out=None):
    fi = fans(shape)[0] if fan_in is None else fan_in
    return _normal(rng, shape, math.sqrt(1.0 / fi))


@INITIALIZERS.register("pytorch_default")
def pytorch_default(shape, rng, fan_in=None, fan_out=None):
    """torch.nn's default for Conv2d and Linear: U(+-1/sqrt(fan_in)) for weights and biases.

    A bias must be given the fan_in of its layer's kernel, which layers pass explicitly.
    """
    fi = fans(shape)[0] if fan_in is None else fan_in
    return _uniform(rng, shape, 1.0 / math.sqrt(fi))


@INITIALIZERS.register("zeros")
def zeros(shape, rng, fan_in=None, fan_out=None):
    return np.zeros(shape)


@INITIALIZERS.register("ones")
def ones(shape, rng, fan_in=None, fan_out=None):
    return np.ones(shape)


def initialize(name: str, shape: tuple[int, ...], rng: np.random.Generator, dtype,
               fan_in: int | None = None, fan_out: int | None = None) -> np.ndarray:
    """Draw an array of ``shape`` with the named initializer and cast it to ``dtype``.

    Without a generator (``rng=None``: a network built with ``allocate=False``) the result
    is a read-only zero-strided placeholder of the right shape that takes no memory.
    """
    if rng is None:
        return np.broadcast_to(np.zeros((), dtype=dtype), tuple(shape))
    values = INITIALIZERS.get(name)(tuple(shape), rng, fan_in, fan_out)
    return np.ascontiguousarray(values, dtype=dtype)
