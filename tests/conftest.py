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


@pytest.fixture(autouse=True)
def no_dataset_download_leaves_this_machine(tmp_path_factory, monkeypatch):
    """Datasets by name are cached in a new folder for each test, never in the user's
    cache, and any download goes to a port on this machine where nothing listens (a
    test that serves a mirror sets its own)."""
    monkeypatch.setenv("CNNCLI_DATA_DIR", str(tmp_path_factory.mktemp("datasets")))
    monkeypatch.setenv("CNNCLI_DATA_MIRROR", "http://127.0.0.1:9")
