"""Convolutions in bounded memory (issue 16, target 3).

The fast conv layer cuts the batch into tiles of at most ``conv.TILE_BYTES`` of im2col
and sums dW tile by tile. Whether the tiles are kept from the forward pass (within the
memory budget) or copied again in the backward pass (beyond it) must not change a bit of
any output or gradient; the tiles themselves must give the reference implementation's
gradients; and the workspace must stay within one tile when the budget says so.
"""

import contextlib

import numpy as np
import pytest

from cnncli.nn import Network, make_loss
from cnncli.nn.layers import conv
from engine_modes import engine_threads
from networks import figure2

LAYOUTS = {
    # Figure 2: conv (76 columns: the thread-partial dW path) + max-pool, fused with its
    # pooling (rows grouped by window offset), then conv with 1601 columns (column split).
    "figure2": (figure2(classes=3), (20, 20, 3)),
    # Unfused convs with padding, stride and dilation, and one without a bias.
    "strided": ([{"type": "conv2d", "filters": 6, "kernel_size": 3, "padding": "same", "activation": "relu"},
                 {"type": "conv2d", "filters": 5, "kernel_size": [3, 2], "stride": 2, "dilation": [1, 2],
                  "padding": 1, "use_bias": False, "activation": "tanh"},
                 {"type": "flatten"}, {"type": "dense", "units": 3, "activation": "softmax"}], (11, 12, 4)),
}


@contextlib.contextmanager
def tiles_and_budget(tile_bytes: int, budget: int | None):
    saved = conv.TILE_BYTES
    conv.TILE_BYTES = tile_bytes
    conv.set_memory_budget(budget)
    try:
        yield
    finally:
        conv.TILE_BYTES = saved
        conv.set_memory_budget(None)


def conv_layers(net):
    return [layer for layer in net.layers if isinstance(layer, conv.Conv2D)]


def one_step(layers, shape, dtype, batch=7, implementation="fast"):
    """Output, loss, every gradient and dL/dx of one training step (a fresh network)."""
    layers = [dict(spec, implementation=implementation) if spec["type"] == "conv2d" else spec for spec in layers]
    net = Network(layers).build(shape, seed=3, dtype=dtype)
    rng = np.random.default_rng(11)
    x = rng.standard_normal((batch, *shape)).astype(dtype)
    y = rng.integers(0, 3, batch)
    loss = make_loss("categorical_crossentropy")
    value, predictions, dx = net.loss_and_gradients(x, y, loss, input_grad=True)
    return net, {"loss": np.asarray(value), "predictions": predictions, "dx": dx, **net.gradients()}


def assert_bitwise_equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), \
            f"{key}: max difference {np.max(np.abs(a[key] - b[key]))}"


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_the_memory_budget_changes_no_bit_of_a_training_step(layout, dtype, threads):
    layers, shape = LAYOUTS[layout]
    # Tiles of about 2 examples, so that a batch of 7 has 4 tiles (the last one short).
    with engine_threads(threads, 0):
        probe = Network(layers).build(shape, seed=3, dtype=dtype)
        per_example = max(layer.im2col_bytes(1, np.dtype(dtype).itemsize) for layer in conv_layers(probe))
        with tiles_and_budget(2 * per_example, budget=None):
            kept_net, kept = one_step(layers, shape, dtype)
        with tiles_and_budget(2 * per_example, budget=0):
            bounded_net, bounded = one_step(layers, shape, dtype)
    assert all(layer._cols_kept for layer in conv_layers(kept_net))
    # Beyond the budget a layer keeps only its last tile (all of it when one tile holds the batch).
    assert [layer._cols_kept for layer in conv_layers(bounded_net)] == \
        [layer._tile >= 7 for layer in conv_layers(bounded_net)]
    assert not conv_layers(bounded_net)[0]._cols_kept
    assert_bitwise_equal(kept, bounded)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_tiled_gradients_are_the_reference_implementations(layout):
    """Several tiles, summed, give the plain im2col's single product (float64, 1e-12)."""
    layers, shape = LAYOUTS[layout]
    with tiles_and_budget(1, budget=0):  # one example a tile: 7 tiles
        net, tiled = one_step(layers, shape, np.float64)
        assert all(layer._tile == 1 for layer in conv_layers(net))
    _, reference = one_step(layers, shape, np.float64, implementation="reference")
    for key in reference:
        np.testing.assert_allclose(tiled[key], reference[key], rtol=1e-12, atol=1e-12, err_msg=key)


def test_one_tile_is_the_whole_step_when_it_fits():
    """Within TILE_BYTES the batch is one tile: the same computation as before tiles."""
    layers, shape = LAYOUTS["figure2"]
    net, _ = one_step(layers, shape, np.float32)
    assert all(layer._tile >= 7 and layer._cols_kept for layer in conv_layers(net))


def test_beyond_the_budget_the_workspace_holds_one_tile():
    layers, shape = LAYOUTS["figure2"]
    itemsize = 4
    probe = Network(layers).build(shape, seed=3, dtype=np.float32)
    per_example = [layer.im2col_bytes(1, itemsize) for layer in conv_layers(probe)]
    with tiles_and_budget(2 * max(per_example), budget=0):
        net, _ = one_step(layers, shape, np.float32, batch=9)
        for layer, one in zip(conv_layers(net), per_example):
            held = layer._workspace["cols"].nbytes
            assert held == layer._tile * one <= 2 * max(per_example), (held, layer._tile, one)
            assert layer.im2col_bytes(9, itemsize) == held  # the estimate's figure is what was allocated
    with tiles_and_budget(2 * max(per_example), budget=None):
        net, _ = one_step(layers, shape, np.float32, batch=9)
        for layer, one in zip(conv_layers(net), per_example):
            assert layer._workspace["cols"].nbytes == 9 * one == layer.im2col_bytes(9, itemsize)


def test_the_memory_estimate_uses_the_bounded_figure():
    """Figure 2 at 224x224: the estimate follows the layers' im2col_bytes, and the budget
    brings the second conv's 2.3 GB of im2col at batch 32 down to one tile."""
    from cnncli.resources import estimate_memory

    net = Network(figure2()).build((224, 224, 3), dtype=np.float32, allocate=False)
    second = conv_layers(net)[1]
    whole = 32 * second.im2col_bytes(1, 4)
    assert whole > 2 * 2**30
    # One example's im2col (72.6 MB) is over TILE_BYTES: a tile is then that one example.
    assert second.tile_examples(4) == 1 and second.im2col_bytes(32, 4) == second.im2col_bytes(1, 4)
    first = conv_layers(net)[0]
    assert first.im2col_bytes(32, 4) == first.tile_examples(4) * first.im2col_bytes(1, 4) <= conv.TILE_BYTES
    bounded = estimate_memory(net, 32, 0)
    with tiles_and_budget(conv.TILE_BYTES, budget=2**40):
        unbounded = estimate_memory(net, 32, 0)
    assert unbounded.total - bounded.total == sum(32 * layer.im2col_bytes(1, 4) - layer.im2col_bytes(32, 4)
                                                  for layer in conv_layers(net))
    assert unbounded.total - bounded.total > 2 * 2**30


def test_a_bad_budget_is_refused(monkeypatch):
    from cnncli.nn.errors import ConfigError

    with pytest.raises(ConfigError):
        conv.set_memory_budget(-1)
    monkeypatch.setenv("CNNCLI_CONV_MEMORY_MB", "lots")
    with pytest.raises(ConfigError, match="CNNCLI_CONV_MEMORY_MB"):
        conv.memory_budget()
    monkeypatch.setenv("CNNCLI_CONV_MEMORY_MB", "1.5")
    assert conv.memory_budget() == 3 * 2**19


def test_evaluation_reuses_the_training_workspace():
    """A larger evaluation batch grows the im2col workspace once; switching back to the
    training batch and to evaluation again allocates nothing new."""
    layers, shape = LAYOUTS["figure2"]
    net, _ = one_step(layers, shape, np.float32, batch=7)
    x = np.random.default_rng(0).standard_normal((20, *shape)).astype(np.float32)
    net.forward(x)
    buffers = [id(layer._workspace["cols"]) for layer in conv_layers(net)]
    net.loss_and_gradients(x[:7], np.zeros(7, dtype=int), make_loss("categorical_crossentropy"))
    net.forward(x)
    assert [id(layer._workspace["cols"]) for layer in conv_layers(net)] == buffers


def test_a_bad_budget_in_the_environment_is_one_line_before_any_work(tmp_path, monkeypatch):
    import yaml

    from tests.helpers import TINY, assert_user_error, invoke

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    monkeypatch.setenv("CNNCLI_CONV_MEMORY_MB", "-3")
    assert_user_error(invoke("train", config, "--runs-dir", tmp_path / "runs"), "CNNCLI_CONV_MEMORY_MB", "-3")
    assert not (tmp_path / "runs").exists()
