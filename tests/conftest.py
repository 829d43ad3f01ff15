"""Shared fixtures for the engine tests: a seeded generator and a float64 layer builder."""

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(20240601)


@pytest.fixture
def build64():
    """``build64(layer, input_shape, seed=0, randomize=True)``: build in float64.

    With ``randomize`` every parameter (biases too, which start at zero) is overwritten
    in place with standard normals, so that no gradient is checked at a trivial point.
    """

    def build(layer, input_shape, seed=0, randomize=True):
        layer.build(tuple(input_shape), np.random.default_rng(seed), np.float64)
        if randomize:
            r = np.random.default_rng(seed + 1)
            for arr in layer.params.values():
                arr[...] = r.standard_normal(arr.shape)
        return layer

    return build
