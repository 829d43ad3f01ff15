"""Layers: gradient checks, naive-loop and PyTorch references, shapes, errors, configs.

Every gradient check is float64 central differences (``cnncli.nn.gradcheck``) of
``L = sum(forward(x) * U)`` for a random upstream ``U``, for ``dx`` and every parameter.
"""

import numpy as np
import pytest

import naive
from engine_modes import serial_and_split
from cnncli.errors import ConfigError, ShapeError
from cnncli.nn import Network
from cnncli.nn.activations import ACTIVATIONS
from cnncli.nn.gradcheck import check_layer
from cnncli.nn.layers import (LAYERS, ActivationLayer, AvgPool2D, BatchNorm, Conv2D, Dense, Dropout,
                              Flatten, GlobalAvgPool2D, MaxPool2D)
from cnncli.nn.registry import construct

ALL_ACTIVATIONS = ", ".join(ACTIVATIONS.names())  # every activation, new built-ins included

# Every test twice: serially and with the work split over the engine's threads.
engine_mode = serial_and_split()

TOL = 1e-6
ACTS = [None, "linear", "sigmoid", "tanh", "relu", "leaky_relu",
        {"name": "leaky_relu", "negative_slope": 0.3}, "softplus", "softmax"]


def act_id(a):
    return a["name"] + "_custom" if isinstance(a, dict) else str(a)


def assert_gradcheck(layer, x, training=True, max_entries=None):
    errors = check_layer(layer, x, training=training, max_entries=max_entries)
    assert set(errors) == {"x", *layer.params}, errors
    bad = {k: v for k, v in errors.items() if not v < TOL}
    assert not bad, f"relative errors above {TOL}: {errors}"


def separated(rng, shape, scale=0.01):
    """Distinct values, at least ``scale`` apart: max pooling never ties under +-h."""
    size = int(np.prod(shape))
    return (rng.permutation(size).reshape(shape) - size / 2) * scale


def assert_away_from_kink(layer, x, margin=1e-4):
    """For relu-like fused activations: no pre-activation within ``margin`` of 0."""
    if layer.activation.name in ("relu", "leaky_relu"):
        z = layer.forward(x, True, logits=True)
        assert np.min(np.abs(z)) > margin, "test data too close to the kink; change the seed"


# ---------------------------------------------------------------------------------
# 1. Gradient checks
# ---------------------------------------------------------------------------------
CONV_MODES = [
    dict(kernel_size=3),
    dict(kernel_size=3, padding="same"),
    dict(kernel_size=3, padding="same", stride=2),
    dict(kernel_size=2, padding="same"),  # asymmetric: the odd cell at the bottom/right
    dict(kernel_size=3, padding=1),
    dict(kernel_size=3, padding=[2, 1]),
    dict(kernel_size=3, stride=2),
    dict(kernel_size=3, stride=[2, 1]),
    dict(kernel_size=2, stride=[1, 2], padding="same"),
    dict(kernel_size=3, dilation=2),
    dict(kernel_size=2, dilation=[2, 1], padding="same"),
    dict(kernel_size=3, dilation=2, stride=2, padding=2),
    dict(kernel_size=[2, 3]),
    dict(kernel_size=[3, 2], stride=2, padding="same"),
    dict(kernel_size=[1, 3], padding=[0, 1], use_bias=False),
    dict(kernel_size=3, padding="same", use_bias=False),
]


@pytest.mark.parametrize("mode", CONV_MODES, ids=lambda m: "-".join(f"{k}={v}" for k, v in m.items()))
def test_conv2d_gradcheck_modes(mode, rng, build64):
    layer = build64(Conv2D(filters=3, **mode), (7, 6, 2))
    x = rng.standard_normal((2, 7, 6, 2))
    assert_gradcheck(layer, x)
    assert ("bias" in layer.params) == mode.get("use_bias", True)


@pytest.mark.parametrize("activation", ACTS, ids=act_id)
def test_conv2d_gradcheck_fused_activation(activation, rng, build64):
    layer = build64(Conv2D(filters=3, kernel_size=3, padding="same", activation=activation), (5, 5, 2))
    x = rng.standard_normal((2, 5, 5, 2))
    assert_away_from_kink(layer, x)
    assert_gradcheck(layer, x)


POOL_MODES = [
    dict(pool_size=2),  # stride = pool, no overlap
    dict(pool_size=3, stride=1),  # overlapping
    dict(pool_size=3, stride=2),  # overlapping
    dict(pool_size=2, stride=3),  # gaps: stride > pool
    dict(pool_size=[2, 3], stride=[1, 2]),
    dict(pool_size=2, padding="same"),
    dict(pool_size=3, stride=2, padding="same"),
    dict(pool_size=2, stride=1, padding="same"),
    dict(pool_size=3, stride=2, padding=1),
    dict(pool_size=3, stride=1, padding=[1, 0]),
    dict(pool_size=3, stride=3, padding=1),
]
POOL_IDS = ["-".join(f"{k}={v}" for k, v in m.items()) for m in POOL_MODES]


@pytest.mark.parametrize("mode", POOL_MODES, ids=POOL_IDS)
def test_max_pool2d_gradcheck(mode, rng, build64):
    layer = build64(MaxPool2D(**mode), (7, 6, 2))
    x = separated(rng, (2, 7, 6, 2))
    assert_gradcheck(layer, x)


@pytest.mark.parametrize("count_include_pad", [False, True])
@pytest.mark.parametrize("mode", POOL_MODES, ids=POOL_IDS)
def test_avg_pool2d_gradcheck(mode, count_include_pad, rng, build64):
    layer = build64(AvgPool2D(count_include_pad=count_include_pad, **mode), (7, 6, 2))
    x = rng.standard_normal((2, 7, 6, 2))
    assert_gradcheck(layer, x)


def test_global_avg_pool2d_gradcheck(rng, build64):
    layer = build64(GlobalAvgPool2D(), (4, 3, 5))
    assert_gradcheck(layer, rng.standard_normal((3, 4, 3, 5)))


def test_flatten_gradcheck(rng, build64):
    layer = build64(Flatten(), (3, 4, 2))
    assert_gradcheck(layer, rng.standard_normal((2, 3, 4, 2)))


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("activation", ACTS, ids=act_id)
def test_dense_gradcheck(activation, use_bias, rng, build64):
    layer = build64(Dense(units=4, activation=activation, use_bias=use_bias), (6,))
    x = rng.standard_normal((5, 6))
    assert_away_from_kink(layer, x)
    assert_gradcheck(layer, x)


@pytest.mark.parametrize("shape", [(6, 5), (2, 3, 4, 3)])
def test_dropout_gradcheck_with_fixed_mask(shape, rng, build64):
    rate = 0.4
    layer = build64(Dropout(rate=rate), shape[1:])
    mask = (rng.random(shape) >= rate) / (1 - rate)
    assert 0 < np.count_nonzero(mask) < mask.size
    layer.fixed_mask = mask
    x = rng.standard_normal(shape)
    np.testing.assert_array_equal(layer.forward(x, training=True), x * mask)
    assert_gradcheck(layer, x, training=True)
    dy = rng.standard_normal(shape)
    np.testing.assert_array_equal(layer.backward(dy), dy * mask)


def test_dropout_random_mask_is_inverted_and_reused_by_backward(rng, build64):
    rate = 0.25
    layer = build64(Dropout(rate=rate), (40, 50))
    x = rng.uniform(1.0, 2.0, (4, 40, 50))  # never 0, so y / x recovers the mask
    y = layer.forward(x, training=True)
    mask = y / x
    kept = mask != 0
    np.testing.assert_allclose(mask[kept], 1 / (1 - rate), rtol=1e-15)
    assert abs(kept.mean() - (1 - rate)) < 0.02  # 8000 Bernoulli draws: sd ~ 0.005
    dy = rng.standard_normal(x.shape)
    np.testing.assert_allclose(layer.backward(dy), dy * mask, rtol=1e-15)
    # inference: identity, and rate 0 is identity in training too
    np.testing.assert_array_equal(layer.forward(x, training=False), x)
    np.testing.assert_array_equal(layer.backward(dy), dy)
    zero = build64(Dropout(rate=0.0), (40, 50))
    np.testing.assert_array_equal(zero.forward(x, training=True), x)


def test_dropout_same_seed_same_mask():
    x = np.ones((3, 20))
    a = Dropout(rate=0.5)
    b = Dropout(rate=0.5)
    a.build((20,), np.random.default_rng(7), np.float64)
    b.build((20,), np.random.default_rng(7), np.float64)
    np.testing.assert_array_equal(a.forward(x, True), b.forward(x, True))


@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 3, 2)], ids=["2d", "4d"])
def test_batch_norm_gradcheck_training(shape, rng, build64):
    layer = build64(BatchNorm(), shape[1:])
    x = rng.standard_normal(shape) * 2 + 0.5
    assert_gradcheck(layer, x, training=True)


@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 3, 2)], ids=["2d", "4d"])
def test_batch_norm_gradcheck_inference(shape, rng, build64):
    layer = build64(BatchNorm(), shape[1:])
    c = shape[-1]
    layer.buffers["running_mean"][...] = rng.standard_normal(c)
    layer.buffers["running_var"][...] = rng.uniform(0.5, 2.0, c)
    x = rng.standard_normal(shape)
    assert_gradcheck(layer, x, training=False)
    # the inference output uses the running statistics
    rm, rv = layer.buffers["running_mean"], layer.buffers["running_var"]
    g, b = layer.params["gamma"], layer.params["beta"]
    expected = (x - rm) / np.sqrt(rv + layer.epsilon) * g + b
    np.testing.assert_allclose(layer.forward(x, training=False), expected, rtol=1e-12, atol=1e-12)


def test_batch_norm_training_statistics(rng, build64):
    """Normalizes with the batch statistics; running = m * running + (1 - m) * batch (unbiased var)."""
    layer = build64(BatchNorm(momentum=0.8), (3, 3, 2), randomize=False)
    x = rng.standard_normal((4, 3, 3, 2)) * 3 + 1
    y = layer.forward(x, training=True)
    np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(0, 1, 2)), 1 - layer.epsilon / (x.var(axis=(0, 1, 2)) + layer.epsilon),
                               rtol=1e-10)
    np.testing.assert_allclose(layer.buffers["running_mean"], 0.2 * x.mean(axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(layer.buffers["running_var"], 0.8 + 0.2 * x.var(axis=(0, 1, 2), ddof=1),
                               rtol=1e-12)


@pytest.mark.parametrize("spec", [
    {"type": "activation", "activation": "sigmoid"},
    {"type": "tanh"},
    {"type": "relu"},
    {"type": "leaky_relu"},
    {"type": "leaky_relu", "negative_slope": 0.2},
    {"type": "softplus"},
    {"type": "softmax"},
    {"type": "linear"},
], ids=lambda s: "-".join(str(v) for v in s.values()))
def test_standalone_activation_layer_gradcheck(spec, rng, build64):
    layer = build64(construct(LAYERS, spec, "x", key="type"), (3, 3, 4))
    assert isinstance(layer, ActivationLayer)
    x = rng.standard_normal((2, 3, 3, 4))
    x += np.where(x >= 0, 0.1, -0.1)  # |x| >= 0.1: away from the relu kink
    assert_gradcheck(layer, x)


def test_gradcheck_detects_a_wrong_gradient(rng, build64):
    """The checker itself can fail: a conv whose dx is off by 1% is caught."""
    layer = build64(Conv2D(filters=2, kernel_size=3), (5, 5, 2))
    original = layer.backward_linear
    layer.backward_linear = lambda dz: original(dz) * 1.01
    errors = check_layer(layer, rng.standard_normal((2, 5, 5, 2)))
    assert errors["x"] > 1e-3 and errors["kernel"] < TOL


def test_gradcheck_samples_entries(rng, build64):
    """``max_entries`` checks a sample of a larger tensor (used to keep the suite fast)."""
    layer = build64(Conv2D(filters=8, kernel_size=3, padding="same", stride=2), (12, 12, 4))
    assert_gradcheck(layer, rng.standard_normal((2, 12, 12, 4)), max_entries=40)


def test_conv_skips_input_gradient_but_keeps_parameter_gradients(rng, build64):
    layer = build64(Conv2D(filters=2, kernel_size=3), (5, 5, 2))
    x, dy = rng.standard_normal((2, 5, 5, 2)), rng.standard_normal((2, 3, 3, 2))
    layer.forward(x, True)
    layer.backward(dy)
    full = {k: v.copy() for k, v in layer.grads.items()}
    layer.needs_input_grad = False
    layer.forward(x, True)
    assert layer.backward(dy) is None
    for k in full:
        np.testing.assert_array_equal(layer.grads[k], full[k])


# ---------------------------------------------------------------------------------
# 2. Naive loop references (forward and backward), ~1e-12 in float64
# ---------------------------------------------------------------------------------
NAIVE_CONV = [
    dict(kernel_size=3, stride=1, padding="valid", dilation=1),
    dict(kernel_size=3, stride=2, padding="valid", dilation=1),
    dict(kernel_size=3, stride=1, padding="same", dilation=1),
    dict(kernel_size=2, stride=1, padding="same", dilation=1),
    dict(kernel_size=3, stride=2, padding="same", dilation=1),
    dict(kernel_size=3, stride=1, padding=1, dilation=2),
    dict(kernel_size=[2, 3], stride=[2, 1], padding=[1, 2], dilation=1),
    dict(kernel_size=[3, 2], stride=[1, 2], padding="same", dilation=[1, 2]),
    dict(kernel_size=2, stride=3, padding="valid", dilation=2),
    dict(kernel_size=3, stride=1, padding="valid", dilation=1, use_bias=False),
]


@pytest.mark.parametrize("cfg", NAIVE_CONV, ids=lambda m: "-".join(f"{k}={v}" for k, v in m.items()))
def test_conv2d_matches_naive_loops(cfg, rng, build64):
    shape = (6, 7, 2)
    layer = build64(Conv2D(filters=3, **cfg), shape)
    x = rng.standard_normal((2,) + shape)
    k = naive.pair(cfg["kernel_size"])
    s, d = naive.pair(cfg["stride"]), naive.pair(cfg["dilation"])
    pads = naive.explicit_pads(cfg["padding"], shape[:2], k, s, d)
    w, b = layer.params["kernel"], layer.params.get("bias")

    z = layer.forward(x, True)
    z_ref = naive.conv2d_forward(x, w, b, s, pads, d)
    assert z.shape == z_ref.shape
    np.testing.assert_allclose(z, z_ref, rtol=1e-12, atol=1e-12)

    dz = rng.standard_normal(z.shape)
    dx = layer.backward(dz)
    dx_ref, dw_ref, db_ref = naive.conv2d_backward(x, w, dz, s, pads, d)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.grads["kernel"], dw_ref, rtol=1e-12, atol=1e-12)
    if b is not None:
        np.testing.assert_allclose(layer.grads["bias"], db_ref, rtol=1e-12, atol=1e-12)
    else:
        assert "bias" not in layer.grads


NAIVE_POOL = [
    dict(pool_size=2, stride=2, padding="valid"),
    dict(pool_size=3, stride=1, padding="valid"),
    dict(pool_size=3, stride=2, padding="valid"),
    dict(pool_size=2, stride=3, padding="valid"),
    dict(pool_size=[2, 3], stride=[1, 2], padding="valid"),
    dict(pool_size=2, stride=2, padding="same"),
    dict(pool_size=3, stride=2, padding="same"),
    dict(pool_size=3, stride=1, padding=1),
    dict(pool_size=3, stride=2, padding=[1, 2]),
]
NAIVE_POOL_IDS = ["-".join(f"{k}={v}" for k, v in m.items()) for m in NAIVE_POOL]


def _pool_pads(cfg, shape):
    k, s = naive.pair(cfg["pool_size"]), naive.pair(cfg["stride"])
    return k, s, naive.explicit_pads(cfg["padding"], shape[:2], k, s)


@pytest.mark.parametrize("training", [True, False], ids=["train", "infer"])
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("cfg", NAIVE_POOL, ids=NAIVE_POOL_IDS)
def test_max_pool2d_matches_naive_loops(cfg, ties, training, rng, build64):
    """``training=False`` skips recording the winners; a backward pass then records them."""
    shape = (7, 6, 2)
    layer = build64(MaxPool2D(**cfg), shape)
    # with ties: small integers, so most windows hold several equal maxima
    x = rng.integers(0, 3, (2,) + shape).astype(float) if ties else rng.standard_normal((2,) + shape)
    k, s, pads = _pool_pads(cfg, shape)
    y = layer.forward(x, training)
    dy = rng.standard_normal(y.shape)
    y_ref, dx_ref = naive.max_pool_forward_backward(x, dy, k, s, pads)
    assert y.shape == y_ref.shape
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_allclose(layer.backward(dy), dx_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("count_include_pad", [False, True])
@pytest.mark.parametrize("cfg", NAIVE_POOL, ids=NAIVE_POOL_IDS)
def test_avg_pool2d_matches_naive_loops(cfg, count_include_pad, rng, build64):
    shape = (7, 6, 2)
    layer = build64(AvgPool2D(count_include_pad=count_include_pad, **cfg), shape)
    x = rng.standard_normal((2,) + shape)
    k, s, pads = _pool_pads(cfg, shape)
    y = layer.forward(x, True)
    dy = rng.standard_normal(y.shape)
    y_ref, dx_ref = naive.avg_pool_forward_backward(x, dy, k, s, pads, count_include_pad)
    assert y.shape == y_ref.shape
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.backward(dy), dx_ref, rtol=1e-12, atol=1e-12)


def test_count_include_pad_changes_only_padded_windows(rng, build64):
    x = rng.standard_normal((1, 4, 4, 1))
    inc = build64(AvgPool2D(pool_size=3, stride=1, padding=1, count_include_pad=True), (4, 4, 1))
    exc = build64(AvgPool2D(pool_size=3, stride=1, padding=1, count_include_pad=False), (4, 4, 1))
    a, b = inc.forward(x), exc.forward(x)
    np.testing.assert_allclose(a[:, 1:3, 1:3], b[:, 1:3, 1:3], rtol=1e-14)  # interior: 9 real cells
    np.testing.assert_allclose(b[0, 0, 0, 0], x[0, :2, :2, 0].mean(), rtol=1e-14)  # corner: 4 real
    np.testing.assert_allclose(a[0, 0, 0, 0], x[0, :2, :2, 0].sum() / 9, rtol=1e-14)


def test_global_avg_pool_and_flatten_match_direct_formulas(rng, build64):
    x = rng.standard_normal((2, 3, 4, 5))
    g = build64(GlobalAvgPool2D(), (3, 4, 5))
    np.testing.assert_allclose(g.forward(x), x.sum(axis=(1, 2)) / 12, rtol=1e-14)
    dy = rng.standard_normal((2, 5))
    np.testing.assert_allclose(g.backward(dy), np.broadcast_to(dy[:, None, None, :] / 12, x.shape), rtol=1e-14)


def test_dense_matches_direct_formula(rng, build64):
    layer = build64(Dense(units=3, activation="tanh"), (4,))
    x = rng.standard_normal((5, 4))
    w, b = layer.params["kernel"], layer.params["bias"]
    np.testing.assert_allclose(layer.forward(x), np.tanh(x @ w + b), rtol=1e-14)
    da = rng.standard_normal((5, 3))
    delta = da * (1 - np.tanh(x @ w + b) ** 2)
    np.testing.assert_allclose(layer.backward(da), delta @ w.T, rtol=1e-12)
    np.testing.assert_allclose(layer.grads["kernel"], x.T @ delta, rtol=1e-12)
    np.testing.assert_allclose(layer.grads["bias"], delta.sum(axis=0), rtol=1e-12)


# ---------------------------------------------------------------------------------
# 3. Tie rule, and PyTorch references
# ---------------------------------------------------------------------------------
@pytest.mark.parametrize("window, first", [
    ([[1.0, 3.0], [3.0, 2.0]], (0, 1)),
    ([[3.0, 1.0], [2.0, 3.0]], (0, 0)),
    ([[0.0, 1.0], [5.0, 5.0]], (1, 0)),
    ([[7.0, 7.0], [7.0, 7.0]], (0, 0)),
])
def test_max_pool_tie_sends_gradient_to_first_max_row_major(window, first, build64):
    layer = build64(MaxPool2D(pool_size=2), (2, 2, 1))
    x = np.array(window).reshape(1, 2, 2, 1)
    assert layer.forward(x)[0, 0, 0, 0] == np.max(window)
    dx = layer.backward(np.full((1, 1, 1, 1), 2.5))[0, :, :, 0]
    expected = np.zeros((2, 2))
    expected[first] = 2.5
    np.testing.assert_array_equal(dx, expected)


def test_max_pool_tie_in_overlapping_windows(build64):
    """Each window sends its gradient to its own first maximum; overlaps add up."""
    layer = build64(MaxPool2D(pool_size=2, stride=1), (2, 3, 1))
    x = np.array([[4.0, 4.0, 4.0], [0.0, 0.0, 0.0]]).reshape(1, 2, 3, 1)
    layer.forward(x)
    dx = layer.backward(np.array([1.0, 10.0]).reshape(1, 1, 2, 1))[0, :, :, 0]
    np.testing.assert_array_equal(dx, [[1.0, 10.0, 0.0], [0.0, 0.0, 0.0]])


def _torch():
    return pytest.importorskip("torch")


def nchw(t):
    return np.ascontiguousarray(np.transpose(t, (0, 3, 1, 2)))


def nhwc(t):
    return np.transpose(t, (0, 2, 3, 1))


@pytest.mark.torch
@pytest.mark.parametrize("cfg", [
    dict(kernel_size=2, stride=2, padding=0),
    dict(kernel_size=3, stride=1, padding=1),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=2, stride=3, padding=0),
    dict(kernel_size=[3, 2], stride=[2, 1], padding=[1, 0]),
], ids=lambda m: "-".join(f"{k}={v}" for k, v in m.items()))
def test_max_pool2d_matches_torch(cfg, rng, build64):
    torch = _torch()
    F = torch.nn.functional
    shape = (7, 6, 3)
    layer = build64(MaxPool2D(pool_size=cfg["kernel_size"], stride=cfg["stride"], padding=cfg["padding"]),
                    shape)
    x = separated(rng, (2,) + shape)
    y = layer.forward(x, True)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    xt = torch.tensor(nchw(x), requires_grad=True)
    yt = F.max_pool2d(xt, cfg["kernel_size"], cfg["stride"], cfg["padding"])
    yt.backward(torch.tensor(nchw(dy)))
    np.testing.assert_allclose(y, nhwc(yt.detach().numpy()), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, nhwc(xt.grad.numpy()), rtol=1e-10, atol=1e-12)


@pytest.mark.torch
@pytest.mark.parametrize("stride", [2, 1])
def test_max_pool2d_tie_rule_matches_torch(stride, rng, build64):
    """Windows full of equal values: the first maximum in row-major order wins, as in torch."""
    torch = _torch()
    shape = (6, 6, 2)
    layer = build64(MaxPool2D(pool_size=2, stride=stride), shape)
    x = rng.integers(0, 3, (2,) + shape).astype(np.float64)  # values 0..2: ties everywhere
    y = layer.forward(x, True)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    xt = torch.tensor(nchw(x), requires_grad=True)
    yt = torch.nn.functional.max_pool2d(xt, 2, stride)
    yt.backward(torch.tensor(nchw(dy)))
    np.testing.assert_array_equal(y, nhwc(yt.detach().numpy()))
    np.testing.assert_allclose(dx, nhwc(xt.grad.numpy()), rtol=1e-12, atol=1e-12)


@pytest.mark.torch
@pytest.mark.parametrize("count_include_pad", [False, True])
@pytest.mark.parametrize("cfg", [
    dict(kernel_size=3, stride=1, padding=1),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=2, stride=3, padding=0),
], ids=lambda m: "-".join(f"{k}={v}" for k, v in m.items()))
def test_avg_pool2d_matches_torch(cfg, count_include_pad, rng, build64):
    torch = _torch()
    F = torch.nn.functional
    shape = (7, 6, 3)
    layer = build64(AvgPool2D(pool_size=cfg["kernel_size"], stride=cfg["stride"], padding=cfg["padding"],
                              count_include_pad=count_include_pad), shape)
    x = rng.standard_normal((2,) + shape)
    y = layer.forward(x, True)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    xt = torch.tensor(nchw(x), requires_grad=True)
    yt = F.avg_pool2d(xt, cfg["kernel_size"], cfg["stride"], cfg["padding"],
                      count_include_pad=count_include_pad)
    yt.backward(torch.tensor(nchw(dy)))
    np.testing.assert_allclose(y, nhwc(yt.detach().numpy()), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, nhwc(xt.grad.numpy()), rtol=1e-10, atol=1e-12)


@pytest.mark.torch
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
@pytest.mark.parametrize("cfg", [
    dict(kernel_size=3, stride=1, padding=0, dilation=1),
    dict(kernel_size=3, stride=2, padding=1, dilation=1),
    dict(kernel_size=3, stride=1, padding=2, dilation=2),
    dict(kernel_size=[2, 3], stride=[2, 1], padding=[1, 0], dilation=[1, 2]),
    dict(kernel_size=5, stride=3, padding=2, dilation=1),
    dict(kernel_size=2, stride=1, padding="same", dilation=1),  # asymmetric same
    dict(kernel_size=3, stride=1, padding="same", dilation=2),
], ids=lambda m: "-".join(f"{k}={v}" for k, v in m.items()))
def test_conv2d_matches_torch(cfg, rng, build64):
    torch = _torch()
    F = torch.nn.functional
    shape = (8, 7, 3)
    layer = build64(Conv2D(filters=4, **cfg), shape)
    x = rng.standard_normal((2,) + shape)
    z = layer.forward(x, True)
    dz = rng.standard_normal(z.shape)
    dx = layer.backward(dz)

    xt = torch.tensor(nchw(x), requires_grad=True)
    wt = torch.tensor(np.ascontiguousarray(np.transpose(layer.params["kernel"], (3, 2, 0, 1))),
                      requires_grad=True)  # HWIO -> OIHW
    bt = torch.tensor(layer.params["bias"], requires_grad=True)
    padding = cfg["padding"] if isinstance(cfg["padding"], str) else naive.pair(cfg["padding"])
    zt = F.conv2d(xt, wt, bt, stride=naive.pair(cfg["stride"]), padding=padding,
                  dilation=naive.pair(cfg["dilation"]))
    zt.backward(torch.tensor(nchw(dz)))
    np.testing.assert_allclose(z, nhwc(zt.detach().numpy()), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, nhwc(xt.grad.numpy()), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.grads["kernel"], np.transpose(wt.grad.numpy(), (2, 3, 1, 0)),
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.grads["bias"], bt.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.torch
@pytest.mark.parametrize("shape", [(6, 3), (3, 4, 3, 2)], ids=["2d", "4d"])
def test_batch_norm_matches_torch(shape, rng, build64):
    torch = _torch()
    layer = build64(BatchNorm(momentum=0.9, epsilon=1e-5), shape[1:])
    c = shape[-1]
    x = rng.standard_normal(shape) * 2 + 1
    y = layer.forward(x, True)
    dy = rng.standard_normal(shape)
    dx = layer.backward(dy)
    bn = (torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d)(c, momentum=0.1, eps=1e-5,
                                                                             dtype=torch.float64)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor(layer.params["gamma"]))
        bn.bias.copy_(torch.tensor(layer.params["beta"]))
    to_t = (lambda a: a) if len(shape) == 2 else nchw
    from_t = (lambda a: a) if len(shape) == 2 else nhwc
    xt = torch.tensor(to_t(x), requires_grad=True)
    yt = bn.train()(xt)
    yt.backward(torch.tensor(to_t(dy)))
    np.testing.assert_allclose(y, from_t(yt.detach().numpy()), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, from_t(xt.grad.numpy()), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.grads["gamma"], bn.weight.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.grads["beta"], bn.bias.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.buffers["running_mean"], bn.running_mean.numpy(), rtol=1e-10)
    np.testing.assert_allclose(layer.buffers["running_var"], bn.running_var.numpy(), rtol=1e-10)
    # inference with the updated running statistics
    np.testing.assert_allclose(layer.forward(x, False), from_t(bn.eval()(torch.tensor(to_t(x))).detach().numpy()),
                               rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------
# 4. Shape tables
# ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, input_shape, expected", [
    (dict(filters=64, kernel_size=5), (28, 28, 3), (24, 24, 64)),  # ERRATA 1
    (dict(filters=8, kernel_size=5, padding="same"), (28, 28, 3), (28, 28, 8)),
    (dict(filters=8, kernel_size=3, padding="same", stride=2), (28, 28, 3), (14, 14, 8)),
    (dict(filters=8, kernel_size=3, padding="same", stride=2), (7, 7, 1), (4, 4, 8)),
    (dict(filters=8, kernel_size=3, stride=2), (7, 7, 1), (3, 3, 8)),
    (dict(filters=8, kernel_size=3, stride=2), (8, 8, 1), (3, 3, 8)),
    (dict(filters=8, kernel_size=3, stride=[2, 1]), (7, 7, 1), (3, 5, 8)),
    (dict(filters=8, kernel_size=3, dilation=2), (7, 7, 1), (3, 3, 8)),
    (dict(filters=8, kernel_size=3, dilation=2, padding="same"), (7, 6, 1), (7, 6, 8)),
    (dict(filters=8, kernel_size=3, padding=1), (5, 5, 2), (5, 5, 8)),
    (dict(filters=8, kernel_size=3, padding=[1, 0]), (5, 6, 2), (5, 4, 8)),
    (dict(filters=2, kernel_size=[1, 3]), (5, 6, 2), (5, 4, 2)),
    (dict(filters=2, kernel_size=5, padding=2, stride=2), (28, 28, 3), (14, 14, 2)),
])
def test_conv2d_output_shapes(kwargs, input_shape, expected, rng, build64):
    layer = build64(Conv2D(**kwargs), input_shape)
    assert layer.output_shape == expected
    assert layer.forward(rng.standard_normal((1,) + input_shape)).shape == (1,) + expected


@pytest.mark.parametrize("layer_fn, input_shape, expected", [
    (lambda: MaxPool2D(pool_size=2), (28, 28, 3), (14, 14, 3)),
    (lambda: MaxPool2D(pool_size=2), (7, 7, 3), (3, 3, 3)),
    (lambda: MaxPool2D(pool_size=2, padding="same"), (7, 7, 3), (4, 4, 3)),
    (lambda: AvgPool2D(pool_size=3, stride=2), (7, 7, 1), (3, 3, 1)),
    (lambda: AvgPool2D(pool_size=3, stride=1, padding=1), (5, 6, 1), (5, 6, 1)),
    (lambda: AvgPool2D(pool_size=[2, 3], stride=[2, 1]), (6, 6, 2), (3, 4, 2)),
    (lambda: MaxPool2D(pool_size=2, stride=3), (8, 8, 1), (3, 3, 1)),
    (lambda: GlobalAvgPool2D(), (5, 4, 7), (7,)),
    (lambda: Flatten(), (4, 5, 3), (60,)),
    (lambda: Dense(units=9), (60,), (9,)),
    (lambda: Dropout(rate=0.5), (4, 5, 3), (4, 5, 3)),
    (lambda: BatchNorm(), (4, 5, 3), (4, 5, 3)),
])
def test_other_output_shapes(layer_fn, input_shape, expected, rng, build64):
    layer = build64(layer_fn(), input_shape)
    assert layer.output_shape == expected
    assert layer.forward(rng.standard_normal((2,) + input_shape), True).shape == (2,) + expected


def test_flatten_order_is_h_w_c(build64):
    H, W, C = 3, 4, 5
    layer = build64(Flatten(), (H, W, C))
    x = np.zeros((2, H, W, C))
    for h in range(H):
        for w in range(W):
            for c in range(C):
                x[1, h, w, c] = 1000 * h + 10 * w + c
    y = layer.forward(x)
    assert y.shape == (2, H * W * C)
    for h in range(H):
        for w in range(W):
            for c in range(C):
                assert y[1, (h * W + w) * C + c] == 1000 * h + 10 * w + c
    np.testing.assert_array_equal(layer.backward(y), x)


# ---------------------------------------------------------------------------------
# 5. Bad arguments: exact messages
# ---------------------------------------------------------------------------------
@pytest.mark.parametrize("make, message", [
    (lambda: Conv2D(filters=0, kernel_size=3), "filters: expected a positive int; got 0"),
    (lambda: Conv2D(filters=True, kernel_size=3), "filters: expected a positive int; got True"),
    (lambda: Conv2D(filters=2.0, kernel_size=3), "filters: expected a positive int; got 2.0"),
    (lambda: Conv2D(filters=1, kernel_size=0), "kernel_size: expected a positive int or [int, int]; got 0"),
    (lambda: Conv2D(filters=1, kernel_size=[3]), "kernel_size: expected a positive int or [int, int]; got [3]"),
    (lambda: Conv2D(filters=1, kernel_size=[3, 0]),
     "kernel_size: expected a positive int or [int, int]; got [3, 0]"),
    (lambda: Conv2D(filters=1, kernel_size=3, stride=0), "stride: expected a positive int or [int, int]; got 0"),
    (lambda: Conv2D(filters=1, kernel_size=3, dilation=-1),
     "dilation: expected a positive int or [int, int]; got -1"),
    (lambda: Conv2D(filters=1, kernel_size=3, padding="foo"),
     "padding: expected 'valid', 'same', an int >= 0 or [int, int]; got 'foo'"),
    (lambda: Conv2D(filters=1, kernel_size=3, padding=-1),
     "padding: expected 'valid', 'same', an int >= 0 or [int, int]; got -1"),
    (lambda: Conv2D(filters=1, kernel_size=3, use_bias="yes"), "use_bias: expected true or false; got 'yes'"),
    (lambda: Conv2D(filters=1, kernel_size=3, activation="tanhh"),
     "activation: unknown activation 'tanhh' (did you mean 'tanh'?); expected one of: "
     + ALL_ACTIVATIONS),
    (lambda: Conv2D(filters=1, kernel_size=3, activation={"name": "leaky_relu", "negative_slope": -1}),
     "activation.negative_slope: expected a number >= 0 and < 1; got -1"),
    (lambda: Dense(units=0), "units: expected a positive int; got 0"),
    (lambda: Dense(units=3, activation="sigmod"),
     "activation: unknown activation 'sigmod' (did you mean 'sigmoid'?); expected one of: "
     + ALL_ACTIVATIONS),
    (lambda: MaxPool2D(pool_size=0), "pool_size: expected a positive int or [int, int]; got 0"),
    (lambda: MaxPool2D(pool_size=2, stride=[1, 0]), "stride: expected a positive int or [int, int]; got [1, 0]"),
    (lambda: AvgPool2D(padding="full"), "padding: expected 'valid', 'same', an int >= 0 or [int, int]; got 'full'"),
    (lambda: AvgPool2D(count_include_pad=1), "count_include_pad: expected true or false; got 1"),
    (lambda: Dropout(rate=1.0), "rate: expected a number >= 0 and < 1; got 1.0"),
    (lambda: Dropout(rate=-0.1), "rate: expected a number >= 0 and < 1; got -0.1"),
    (lambda: Dropout(rate="half"), "rate: expected a number >= 0 and < 1; got 'half'"),
    (lambda: BatchNorm(momentum=1.0), "momentum: expected a number >= 0 and < 1; got 1.0"),
    (lambda: BatchNorm(epsilon=0), "epsilon: expected a number > 0; got 0"),
    (lambda: ActivationLayer(activation="tanhh"),
     "activation: unknown activation 'tanhh' (did you mean 'tanh'?); expected one of: "
     + ALL_ACTIVATIONS),
])
def test_bad_arguments_exact_message(make, message):
    with pytest.raises(ConfigError) as err:
        make()
    assert str(err.value) == message


def test_unknown_layer_type_suggests(build64):
    with pytest.raises(ConfigError) as err:
        construct(LAYERS, {"type": "conv2", "filters": 1}, "layers[0]", key="type")
    msg = str(err.value)
    assert msg.startswith("layers[0].type: unknown layer 'conv2' (did you mean 'conv2d'?); expected one of: ")
    assert "max_pool2d" in msg and "flatten" in msg


def test_unknown_layer_keyword_is_named():
    with pytest.raises(ConfigError) as err:
        construct(LAYERS, {"type": "conv2d", "filters": 1, "kernel_size": 3, "strides": 2}, "layers[1]", key="type")
    assert str(err.value).startswith("layers[1].strides: unknown key for layer 'conv2d' (did you mean 'stride'?)")


@pytest.mark.parametrize("layer, input_shape, parts", [
    (lambda: Conv2D(filters=1, kernel_size=5), (3, 4, 1), ["conv2d:", "kernel 5x5", "3x4", "(3, 4, 1)"]),
    (lambda: Conv2D(filters=1, kernel_size=3, dilation=3), (6, 6, 1), ["span 7x7", "6x6"]),
    (lambda: Conv2D(filters=1, kernel_size=[2, 6], padding=[0, 1]), (4, 3, 1), ["kernel 2x6", "4x5"]),
    (lambda: MaxPool2D(pool_size=4), (3, 5, 2), ["max_pool2d:", "pool 4x4", "3x5", "(3, 5, 2)"]),
    (lambda: AvgPool2D(pool_size=2, padding=2), (5, 5, 1), ["avg_pool2d:", "padding", "pool size 2x2"]),
    (lambda: Conv2D(filters=1, kernel_size=3), (8, 8), ["conv2d:", "(H, W, C)", "(8, 8)"]),
    (lambda: MaxPool2D(), (8,), ["max_pool2d:", "(8,)"]),
    (lambda: GlobalAvgPool2D(), (8,), ["global_avg_pool2d:", "(8,)"]),
    (lambda: BatchNorm(), (4, 4), ["batch_norm:", "(4, 4)"]),
    (lambda: Dense(units=2), (6, 6, 2), ["dense:", "(6, 6, 2)", "flatten"]),
])
def test_shape_errors_name_the_sizes(layer, input_shape, parts, build64):
    with pytest.raises(ShapeError) as err:
        build64(layer(), input_shape)
    msg = str(err.value)
    for part in parts:
        assert part in msg, msg
    assert err.value.index is None


def test_network_shape_error_names_the_layer_index():
    net = Network([
        {"type": "conv2d", "filters": 2, "kernel_size": 3},
        {"type": "conv2d", "filters": 2, "kernel_size": 3},
        {"type": "conv2d", "filters": 2, "kernel_size": 5},
    ])
    with pytest.raises(ShapeError) as err:
        net.build((8, 8, 1), seed=0, dtype="float64")
    assert err.value.index == 2
    assert str(err.value) == ("layers[2]: conv2d: kernel 5x5 (span 5x5 with dilation) is larger than "
                              "its padded input 4x4; input shape (4, 4, 2)")


def test_dense_after_conv_without_flatten_mentions_flatten():
    net = Network([{"type": "conv2d", "filters": 2, "kernel_size": 3}, {"type": "dense", "units": 2}])
    with pytest.raises(ShapeError) as err:
        net.build((8, 8, 1), seed=0)
    assert err.value.index == 1
    assert str(err.value).startswith("layers[1]: dense: ")
    assert "flatten" in str(err.value) and "(6, 6, 2)" in str(err.value)
    # and with the flatten it builds
    Network([{"type": "conv2d", "filters": 2, "kernel_size": 3}, {"type": "flatten"},
             {"type": "dense", "units": 2}]).build((8, 8, 1), seed=0)


# ---------------------------------------------------------------------------------
# 6. Config round trip
# ---------------------------------------------------------------------------------
ROUND_TRIP = [
    lambda: Conv2D(filters=3, kernel_size=3),
    lambda: Conv2D(filters=4, kernel_size=[2, 3], stride=[2, 1], padding=[1, 0], dilation=2, use_bias=False,
                   activation="relu", kernel_initializer="he_normal", bias_initializer="ones"),
    lambda: Conv2D(filters=2, kernel_size=3, padding="same", activation={"name": "leaky_relu",
                                                                        "negative_slope": 0.2}),
    lambda: MaxPool2D(),
    lambda: MaxPool2D(pool_size=3, stride=2, padding="same"),
    lambda: AvgPool2D(pool_size=[3, 2], stride=1, padding=1, count_include_pad=True),
    lambda: GlobalAvgPool2D(),
    lambda: Flatten(),
    lambda: Dense(units=5, activation="softmax", use_bias=False, kernel_initializer="lecun_uniform"),
    lambda: Dense(units=1, activation="sigmoid"),
    lambda: Dropout(rate=0.3),
    lambda: BatchNorm(momentum=0.5, epsilon=1e-3),
    lambda: ActivationLayer(activation="tanh"),
    lambda: ActivationLayer(activation={"name": "leaky_relu", "negative_slope": 0.05}),
]


@pytest.mark.parametrize("make", ROUND_TRIP, ids=lambda f: repr(f()))
def test_config_round_trip(make):
    layer = make()
    cfg = layer.config()
    assert cfg["type"] == layer.type_name and LAYERS.get(cfg["type"]) is type(layer)
    again = type(layer)(**{k: v for k, v in cfg.items() if k != "type"})
    assert again.config() == cfg
    via_registry = construct(LAYERS, cfg, "x", key="type")
    assert type(via_registry) is type(layer)
    assert via_registry.config() == cfg


@pytest.mark.parametrize("make", ROUND_TRIP, ids=lambda f: repr(f()))
def test_same_config_and_seed_give_same_parameters(make):
    shape = (6, 6, 3) if not isinstance(make(), Dense) else (12,)
    a, b = make(), construct(LAYERS, make().config(), "x", key="type")
    a.build(shape, np.random.default_rng(3), np.float32)
    b.build(shape, np.random.default_rng(3), np.float32)
    assert a.output_shape == b.output_shape
    assert a.params.keys() == b.params.keys()
    for k in a.params:
        assert a.params[k].dtype == np.float32
        np.testing.assert_array_equal(a.params[k], b.params[k])
