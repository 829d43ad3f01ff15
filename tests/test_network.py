"""The sequential network: the paper's Figure 2 / Table 5, PyTorch references, gradient
checks of a whole network, seeds and dtypes, state, shape errors, overfitting, saturation.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from engine_modes import serial_and_split
from networks import figure2
from cnncli.errors import CheckpointError, CnnCliError, ConfigError, ShapeError
from cnncli.nn import Conv2D, Dense, Flatten, MaxPool2D, Network, make_loss, make_optimizer
from cnncli.nn.gradcheck import numerical_gradient, relative_error, sample_indices

# Every test twice: serially and with the work split over the engine's threads.
engine_mode = serial_and_split()


# ------------------------------------------------------------------------ a. Table 5
TABLE5 = [  # (weights, biases, total, output shape)
    (4_800, 64, 4_864, (24, 24, 64)),
    (0, 0, 0, (12, 12, 64)),
    (204_800, 128, 204_928, (8, 8, 128)),
    (0, 0, 0, (4, 4, 128)),
    (0, 0, 0, (2048,)),
    (1_024_000, 500, 1_024_500, (500,)),
    (500, 1, 501, (1,)),
]


def _figure2_from_classes():
    return [
        Conv2D(filters=64, kernel_size=5, activation="tanh"),
        MaxPool2D(pool_size=2),
        Conv2D(filters=128, kernel_size=[5, 5], activation="tanh"),
        MaxPool2D(pool_size=2),
        Flatten(),
        Dense(units=500, activation="tanh"),
        Dense(units=1, activation="sigmoid"),
    ]


@pytest.mark.parametrize("make", [figure2, _figure2_from_classes], ids=["dicts", "classes"])
def test_figure2_matches_table5(make):
    net = Network(make()).build((28, 28, 3), seed=0)
    rows = [(l.weight_count(), l.bias_count(), sum(p.size for p in l.params.values()), l.output_shape)
            for l in net.layers]
    assert rows == TABLE5
    weights = sum(l.weight_count() for l in net.layers)
    biases = sum(l.bias_count() for l in net.layers)
    assert (weights, biases) == (1_234_100, 693)
    assert net.parameter_count() == 1_234_793 == weights + biases
    assert net.output_shape == (1,)
    assert net.output_activation.name == "sigmoid"
    shapes = {k: v.shape for k, v in net.parameters().items()}
    assert shapes == {
        "layers.0.kernel": (5, 5, 3, 64), "layers.0.bias": (64,),
        "layers.2.kernel": (5, 5, 64, 128), "layers.2.bias": (128,),
        "layers.5.kernel": (2048, 500), "layers.5.bias": (500,),
        "layers.6.kernel": (500, 1), "layers.6.bias": (1,),
    }
    x = np.zeros((2, 28, 28, 3), np.float32)
    assert net.forward(x).shape == (2, 1)


# -------------------------------------------------------------------- b. PyTorch reference
def _randomize_biases(net, rng, scale=0.1):
    for layer in net.layers:
        if "bias" in layer.params:
            layer.params["bias"][...] = scale * rng.standard_normal(layer.params["bias"].shape)


def _dense_rows_hwc_to_chw(kernel, hwc):
    """Our first dense kernel (H*W*C, U), rows in (h, w, c) order -> torch Linear weight (U, C*H*W)."""
    h, w, c = hwc
    return kernel.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(c * h * w, -1).T


def _dense_grad_chw_to_hwc(grad, hwc):
    """torch's Linear weight gradient (U, C*H*W) -> our kernel layout (H*W*C, U)."""
    h, w, c = hwc
    return grad.T.reshape(c, h, w, -1).transpose(1, 2, 0, 3).reshape(h * w * c, -1)


def _torch_figure2(torch, net):
    """Leaf tensors of our weights in torch's layouts, and a forward function (NCHW -> logits)."""
    F = torch.nn.functional
    p = net.parameters()
    t = {
        "c0w": p["layers.0.kernel"].transpose(3, 2, 0, 1), "c0b": p["layers.0.bias"],  # HWIO -> OIHW
        "c2w": p["layers.2.kernel"].transpose(3, 2, 0, 1), "c2b": p["layers.2.bias"],
        "d5w": _dense_rows_hwc_to_chw(p["layers.5.kernel"], (4, 4, 128)), "d5b": p["layers.5.bias"],
        "d6w": p["layers.6.kernel"].T, "d6b": p["layers.6.bias"],  # (D, U) -> (U, D)
    }
    t = {k: torch.tensor(np.ascontiguousarray(v), dtype=torch.float64, requires_grad=True)
         for k, v in t.items()}

    def forward(x):  # x: (N, C, H, W)
        h = F.max_pool2d(torch.tanh(F.conv2d(x, t["c0w"], t["c0b"])), 2)
        h = F.max_pool2d(torch.tanh(F.conv2d(h, t["c2w"], t["c2b"])), 2)
        h = torch.flatten(h, 1)  # torch's (c, h, w) order
        h = torch.tanh(F.linear(h, t["d5w"], t["d5b"]))
        return F.linear(h, t["d6w"], t["d6b"])

    return t, forward


def _torch_grads_in_our_layout(t):
    g = {k: v.grad.numpy() for k, v in t.items()}
    return {
        "layers.0.kernel": g["c0w"].transpose(2, 3, 1, 0), "layers.0.bias": g["c0b"],  # OIHW -> HWIO
        "layers.2.kernel": g["c2w"].transpose(2, 3, 1, 0), "layers.2.bias": g["c2b"],
        "layers.5.kernel": _dense_grad_chw_to_hwc(g["d5w"], (4, 4, 128)), "layers.5.bias": g["d5b"],
        "layers.6.kernel": g["d6w"].T, "layers.6.bias": g["d6b"],
    }


def _assert_rel(actual, expected, tol=1e-10, what=""):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, what
    scale = max(float(np.max(np.abs(expected))), 1e-300)
    err = float(np.max(np.abs(actual - expected))) / scale
    assert err < tol, f"{what}: relative difference {err:.3g}"


@pytest.mark.torch
@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("classes", [1, 10])
def test_figure2_matches_torch(classes, reduction):
    """Loss, prediction, every parameter gradient and the input gradient, in float64."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    net = Network(figure2(classes)).build((28, 28, 3), seed=3, dtype="float64")
    _randomize_biases(net, rng)
    n = 4
    x = rng.random((n, 28, 28, 3))
    if classes == 1:
        y = np.array([0, 1, 1, 0])
        loss = make_loss({"name": "binary_crossentropy", "reduction": reduction})
    else:
        y = rng.integers(0, classes, n)
        loss = make_loss({"name": "categorical_crossentropy", "reduction": reduction})
    value, pred, dx = net.loss_and_gradients(x, y, loss, input_grad=True)
    grads = net.gradients()

    t, forward = _torch_figure2(torch, net)
    tx = torch.tensor(x.transpose(0, 3, 1, 2), dtype=torch.float64, requires_grad=True)  # NHWC -> NCHW
    z = forward(tx)
    if classes == 1:
        tloss = torch.nn.BCEWithLogitsLoss(reduction=reduction)(z[:, 0], torch.tensor(y, dtype=torch.float64))
        tpred = torch.sigmoid(z)
    else:
        tloss = torch.nn.CrossEntropyLoss(reduction=reduction)(z, torch.tensor(y))
        tpred = torch.softmax(z, dim=1)
    tloss.backward()

    assert value == pytest.approx(tloss.item(), rel=1e-10)
    _assert_rel(pred, tpred.detach().numpy(), what="predictions")
    _assert_rel(dx, tx.grad.numpy().transpose(0, 2, 3, 1), what="input gradient")
    expected = _torch_grads_in_our_layout(t)
    assert set(grads) == set(expected)
    for key in expected:
        _assert_rel(grads[key], expected[key], what=key)
    # The forward pass alone (inference path, probabilities) agrees too.
    _assert_rel(net.forward(x), tpred.detach().numpy(), what="forward")


@pytest.mark.torch
def test_figure2_sgd_step_matches_torch():
    """One summed-BCE SGD step (the paper's training) gives torch's weights."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    net = Network(figure2()).build((28, 28, 3), seed=4, dtype="float64")
    x, y = rng.random((3, 28, 28, 3)), np.array([1, 0, 1])
    t, forward = _torch_figure2(torch, net)
    loss = make_loss({"name": "binary_crossentropy", "reduction": "sum"})
    net.train_step(x, y, loss, make_optimizer({"name": "sgd", "lr": 1e-3}))
    topt = torch.optim.SGD(list(t.values()), lr=1e-3)
    z = forward(torch.tensor(x.transpose(0, 3, 1, 2)))
    torch.nn.BCEWithLogitsLoss(reduction="sum")(z[:, 0], torch.tensor(y, dtype=torch.float64)).backward()
    topt.step()
    p = net.parameters()
    _assert_rel(p["layers.0.kernel"], t["c0w"].detach().numpy().transpose(2, 3, 1, 0), 1e-12, "conv0")
    _assert_rel(p["layers.5.kernel"], _dense_grad_chw_to_hwc(t["d5w"].detach().numpy(), (4, 4, 128)),
                1e-12, "dense5")
    _assert_rel(p["layers.6.bias"], t["d6b"].detach().numpy(), 1e-12, "bias6")


def test_flatten_order_is_hwc():
    """Feature (h, w, c) lands at index (h*W + w)*C + c (the layout checkpoints depend on)."""
    net = Network([{"type": "flatten"}]).build((2, 3, 4), dtype="float64")
    x = np.arange(24.0).reshape(1, 2, 3, 4)
    out = net.forward(x)
    for h in range(2):
        for w in range(3):
            for c in range(4):
                assert out[0, (h * 3 + w) * 4 + c] == x[0, h, w, c]


FUSABLE = [
    {"type": "conv2d", "filters": 4, "kernel_size": 3, "activation": "ACT"},   # 10x10 -> 8x8
    {"type": "max_pool2d", "pool_size": 2},
    {"type": "conv2d", "filters": 3, "kernel_size": 2, "padding": "same", "activation": "ACT"},
    {"type": "max_pool2d", "pool_size": 2},
    {"type": "flatten"},
    {"type": "dense", "units": 2},
]


def _run_both(layers, activation, training, *, fast_reference=False, seed=5):
    """(fused fast network, the same layers as written) on small-integer weights and
    inputs (many equal maxima), forward and backward; returns both results."""
    rng = np.random.default_rng(seed)
    specs = [{k: (activation if v == "ACT" else v) for k, v in spec.items()} for spec in layers]
    plain_specs = [{**s, "implementation": "reference"} if fast_reference and s["type"] == "conv2d" else s
                   for s in specs]
    fused = Network(specs).build((10, 10, 2), seed=0, dtype="float64")
    plain = Network(plain_specs).build((10, 10, 2), seed=0, dtype="float64", fuse=False)
    for key, v in fused.parameters().items():
        v[...] = rng.integers(-1, 2, v.shape)
        plain.parameters()[key][...] = v
    x = rng.integers(0, 3, (5, 10, 10, 2)).astype(float)
    dy = rng.standard_normal((5, 2))
    results = []
    for net in (fused, plain):
        y = net.forward(x, training)
        dx = net.backward(dy, input_grad=True)
        results.append((y, dx, {k: g.copy() for k, g in net.gradients().items()}))
    return fused, results


def _assert_same(results):
    (y1, dx1, g1), (y2, dx2, g2) = results
    np.testing.assert_allclose(y1, y2, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(dx1, dx2, rtol=1e-12, atol=1e-12)
    for key in g1:
        np.testing.assert_allclose(g1[key], g2[key], rtol=1e-12, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("training", [True, False], ids=["train", "infer"])
@pytest.mark.parametrize("activation", ["tanh", "relu", None])
def test_fused_conv_pooling_equals_the_layers_as_written(activation, training):
    """Rows blocked by pooling offset and the activation after pooling compute what the
    layers as written compute, ties included (relu makes many), forward and backward."""
    from cnncli.nn.fusion import ConvMaxPool

    fused, results = _run_both(FUSABLE, activation, training)
    assert [type(s) for s in fused.steps][:2] == [ConvMaxPool, ConvMaxPool]
    _assert_same(results)


@pytest.mark.parametrize("training", [True, False], ids=["train", "infer"])
@pytest.mark.parametrize("activation", ["tanh", "relu", None])
def test_fast_fused_convolution_equals_the_reference_convolution(activation, training):
    """The fast conv (workspaces, threads, blocked rows, fused pooling) against the
    readable reference (plain im2col, one product, col2im), layers as written."""
    _, results = _run_both(FUSABLE, activation, training, fast_reference=True)
    _assert_same(results)


@pytest.mark.parametrize("spec", [
    {"filters": 3, "kernel_size": 3, "stride": 2, "padding": "same", "dilation": 1},
    {"filters": 2, "kernel_size": [2, 3], "dilation": [2, 1], "padding": [1, 2]},
    {"filters": 4, "kernel_size": 1, "use_bias": False},
])
def test_fast_convolution_equals_the_reference_on_strides_dilation_padding(spec):
    rng = np.random.default_rng(3)
    fast = Conv2D(**spec)
    fast.build((7, 6, 3), rng, np.float64)
    ref = Conv2D(**spec, implementation="reference")
    ref.build((7, 6, 3), np.random.default_rng(0), np.float64)
    for k, v in fast.params.items():
        ref.params[k][...] = v
    x = rng.standard_normal((4, 7, 6, 3))
    z = fast.forward(x)
    np.testing.assert_allclose(z, ref.forward(x), rtol=1e-12, atol=1e-12)
    dz = rng.standard_normal(z.shape)
    np.testing.assert_allclose(fast.backward(dz), ref.backward(dz), rtol=1e-12, atol=1e-12)
    for k in fast.grads:
        np.testing.assert_allclose(fast.grads[k], ref.grads[k], rtol=1e-12, atol=1e-12, err_msg=k)


def test_activation_after_pooling_is_one_step_for_any_monotonic_layer():
    """An activation layer (or a reference conv) before max pooling: g runs after the
    pooling, in one step, and gives what the layers as written give."""
    from cnncli.nn.fusion import PoolAfterActivation

    layers = [{"type": "conv2d", "filters": 3, "kernel_size": 3, "implementation": "reference"},
              {"type": "relu"}, {"type": "max_pool2d", "pool_size": 2},
              {"type": "conv2d", "filters": 2, "kernel_size": 2, "activation": "ACT",
               "implementation": "reference"}, {"type": "max_pool2d", "pool_size": 3, "stride": 1},
              {"type": "flatten"}, {"type": "dense", "units": 2}]
    for training in (True, False):
        fused, results = _run_both(layers, "sigmoid", training)
        assert [type(s).__name__ for s in fused.steps] == ["Single", "PoolAfterActivation", "PoolAfterActivation",
                                                           "Single", "Single"]
        assert isinstance(fused.steps[1], PoolAfterActivation)
        _assert_same(results)


def test_non_monotonic_activation_is_never_moved_after_pooling():
    from cnncli.nn import Activation
    from cnncli.nn.fusion import plan

    class Bump(Activation):  # not registered: used as an instance
        def forward(self, z):
            return -z * z

        def derivative(self, z):
            return -2 * z

    net = Network([{"type": "conv2d", "filters": 2, "kernel_size": 3},
                   {"type": "max_pool2d"}, {"type": "flatten"}]).build((6, 6, 1), seed=0)
    net.layers[0].activation = Bump()
    assert [type(s).__name__ for s in plan(net.layers)] == ["Single", "Single", "Single"]


# ----------------------------------------------------------- c. whole-network gradient check
def _gradcheck_net(seed=1):
    net = Network([
        {"type": "conv2d", "filters": 3, "kernel_size": 3, "stride": 2, "padding": "same",
         "activation": "tanh"},                                                   # 9x9x2 -> 5x5x3
        {"type": "batch_norm"},
        {"type": "max_pool2d", "pool_size": 2, "padding": "same"},                # -> 3x3x3 (pads)
        {"type": "avg_pool2d", "pool_size": 2, "stride": 1, "padding": "same"},   # -> 3x3x3 (pads)
        {"type": "dropout", "rate": 0.3},
        {"type": "flatten"},
        {"type": "dense", "units": 4, "activation": "tanh"},
        {"type": "dense", "units": 3, "activation": "softmax"},
    ]).build((9, 9, 2), seed=seed, dtype="float64")
    return net


@pytest.mark.parametrize("loss_spec", [
    "categorical_crossentropy",                             # fused softmax path
    {"name": "mse", "reduction": "sum"},                    # through the softmax Jacobian
])
def test_whole_network_gradient_check(loss_spec):
    rng = np.random.default_rng(0)
    net = _gradcheck_net()
    assert [l.output_shape for l in net.layers][:5] == [(5, 5, 3), (5, 5, 3), (3, 3, 3), (3, 3, 3),
                                                        (3, 3, 3)]
    for v in net.parameters().values():  # move away from the initial zeros / ones
        v += 0.3 * rng.standard_normal(v.shape)
    n = 5
    net.layers[4].fixed_mask = (rng.random((n, 3, 3, 3)) >= 0.3) / 0.7
    x = rng.standard_normal((n, 9, 9, 2))
    labels = rng.integers(0, 3, n)
    loss = make_loss(loss_spec)
    y = labels if loss.name == "categorical_crossentropy" else np.eye(3)[labels]

    value, _, dx = net.loss_and_gradients(x, y, loss, training=True, input_grad=True)
    analytic = {"input": dx.copy(), **{k: g.copy() for k, g in net.gradients().items()}}
    assert set(analytic) - {"input"} == set(net.parameters())

    def f():
        return net.loss_and_gradients(x, y, loss, training=True)[0]

    assert f() == value
    targets = {"input": x, **net.parameters()}
    for name, arr in targets.items():
        idx = sample_indices(arr.size, 300, rng)
        numeric = numerical_gradient(f, arr, indices=idx)
        err = relative_error(analytic[name].reshape(-1)[idx], numeric)
        assert np.linalg.norm(numeric) > 1e-6, name  # a real signal, not two zeros
        assert err < 1e-6, f"{name}: relative error {err:.3g}"


def test_predict_in_batches_and_empty():
    net = _gradcheck_net()
    x = np.random.default_rng(0).standard_normal((7, 9, 9, 2))
    np.testing.assert_allclose(net.predict(x, batch_size=3), net.forward(x), rtol=0, atol=1e-15)
    empty = net.predict(x[:0])
    assert empty.shape == (0, 3) and empty.dtype == np.float64


def test_input_grad_none_unless_asked():
    net = _gradcheck_net()
    x = np.random.default_rng(0).standard_normal((2, 9, 9, 2))
    out = net.loss_and_gradients(x, np.array([0, 1]), make_loss("categorical_crossentropy"))
    assert len(out) == 2
    out = net.loss_and_gradients(x, np.array([0, 1]), make_loss("categorical_crossentropy"),
                                 input_grad=True)
    assert len(out) == 3 and out[2].shape == x.shape


# ----------------------------------------------------------------------- d. seeds and dtypes
def _small(dropout=False):
    layers = [
        {"type": "conv2d", "filters": 4, "kernel_size": 3, "activation": "relu",
         "kernel_initializer": "he_normal", "bias_initializer": "pytorch_default"},
        {"type": "batch_norm"},
        {"type": "max_pool2d", "pool_size": 2},
        {"type": "flatten"},
        {"type": "dense", "units": 5, "activation": "tanh", "kernel_initializer": "lecun_uniform",
         "bias_initializer": "glorot_normal"},
    ]
    if dropout:
        layers.insert(4, {"type": "dropout", "rate": 0.5})
    layers.append({"type": "dense", "units": 2, "activation": "softmax"})
    return layers


def test_same_seed_same_weights_bit_for_bit():
    a = Network(_small(dropout=True)).build((8, 8, 3), seed=123)
    b = Network(_small(dropout=True)).build((8, 8, 3), seed=123)
    pa, pb = a.parameters(), b.parameters()
    assert list(pa) == list(pb)
    for k in pa:
        assert np.array_equal(pa[k], pb[k]), k
    # ... and the same dropout masks while training
    x = np.random.default_rng(0).standard_normal((4, 8, 8, 3)).astype(np.float32)
    assert np.array_equal(a.forward(x, training=True), b.forward(x, training=True))


def test_different_seed_different_weights():
    a = Network(_small()).build((8, 8, 3), seed=1)
    b = Network(_small()).build((8, 8, 3), seed=2)
    random_keys = [k for k, v in a.parameters().items() if np.ptp(v) > 0]  # not constant-initialized
    assert len(random_keys) == 5
    for k in random_keys:
        assert not np.array_equal(a.parameters()[k], b.parameters()[k]), k


def test_dropout_does_not_shift_later_initializers():
    """The dropout layer draws from its own child stream."""
    a = Network(_small(dropout=False)).build((8, 8, 3), seed=9)
    b = Network(_small(dropout=True)).build((8, 8, 3), seed=9)
    assert np.array_equal(a.parameters()["layers.5.kernel"], b.parameters()["layers.6.kernel"])


def test_dtypes():
    f32 = Network(_small()).build((8, 8, 3), seed=5)
    f64 = Network(_small()).build((8, 8, 3), seed=5, dtype="float64")
    f64b = Network(_small()).build((8, 8, 3), seed=5, dtype=np.float64)
    assert f32.dtype == np.float32 and f64.dtype == np.float64
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 3))
    assert f32.forward(x).dtype == np.float32
    assert f64.forward(x).dtype == np.float64
    for k, v in f64.parameters().items():
        assert v.dtype == np.float64, k
        assert f32.parameters()[k].dtype == np.float32, k
        assert np.array_equal(f32.parameters()[k], v.astype(np.float32)), k
        assert np.array_equal(f64b.parameters()[k], v), k
    for k, v in f64.buffers().items():
        assert v.dtype == np.float64 and f32.buffers()[k].dtype == np.float32
    loss = make_loss("categorical_crossentropy")
    f32.loss_and_gradients(x, np.array([0, 1]), loss)
    assert all(g.dtype == np.float32 for g in f32.gradients().values())


def test_float64_weights_are_drawn_in_float64():
    """float32 weights are the rounded float64 ones, not float64 copies of float32 draws."""
    f64 = Network(_small()).build((8, 8, 3), seed=5, dtype="float64")
    kernel = f64.parameters()["layers.0.kernel"]
    assert not np.array_equal(kernel, kernel.astype(np.float32).astype(np.float64))


@pytest.mark.parametrize("init, bound, std", [
    ("glorot_uniform", np.sqrt(6 / (300 + 200)), np.sqrt(6 / (300 + 200)) / np.sqrt(3)),
    ("he_uniform", np.sqrt(6 / 300), np.sqrt(6 / 300) / np.sqrt(3)),
    ("lecun_uniform", np.sqrt(3 / 300), np.sqrt(3 / 300) / np.sqrt(3)),
    ("pytorch_default", 1 / np.sqrt(300), 1 / np.sqrt(300) / np.sqrt(3)),
    ("glorot_normal", None, np.sqrt(2 / (300 + 200))),
    ("he_normal", None, np.sqrt(2 / 300)),
    ("lecun_normal", None, np.sqrt(1 / 300)),
])
def test_initializer_scales(init, bound, std):
    """Dense (300, 200): the docstring's limits and standard deviations, statistically."""
    net = Network([{"type": "dense", "units": 200, "kernel_initializer": init}]).build(
        (300,), seed=0, dtype="float64")
    w = net.parameters()["layers.0.kernel"]
    assert abs(w.mean()) < 0.02 * std
    assert w.std() == pytest.approx(std, rel=0.01)
    if bound is not None:
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.999 * bound
    assert np.array_equal(net.parameters()["layers.0.bias"], np.zeros(200))


@pytest.mark.parametrize("dtype", ["float16", "int32", "double"])
def test_bad_dtype(dtype):
    with pytest.raises(ConfigError, match="dtype"):
        Network(_small()).build((8, 8, 3), dtype=dtype)


def test_build_with_generator_is_reproducible():
    a = Network(_small()).build((8, 8, 3), seed=np.random.default_rng(42))
    b = Network(_small()).build((8, 8, 3), seed=np.random.default_rng(42))
    assert all(np.array_equal(a.parameters()[k], b.parameters()[k]) for k in a.parameters())


# --------------------------------------------------------------------------- e. state
def _trained_small(seed=0, steps=3):
    net = Network(_small(dropout=True)).build((8, 8, 3), seed=seed)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((6, 8, 8, 3)).astype(np.float32)
    y = rng.integers(0, 2, 6)
    opt = make_optimizer({"name": "adam", "lr": 0.01})
    for _ in range(steps):
        net.train_step(x, y, make_loss("categorical_crossentropy"), opt)
    return net, x


def test_state_dict_round_trip(tmp_path):
    net, x = _trained_small()
    state = net.state_dict()
    assert {"layers.1.running_mean", "layers.1.running_var", "layers.1.gamma", "layers.1.beta"} <= set(state)
    assert set(state) == set(net.parameters()) | set(net.buffers())
    # training moved the running statistics away from their initial values
    assert not np.allclose(state["layers.1.running_mean"], 0)
    assert not np.allclose(state["layers.1.running_var"], 1)
    # copies, not views
    state["layers.0.kernel"] += 1
    assert not np.array_equal(state["layers.0.kernel"], net.parameters()["layers.0.kernel"])
    state = net.state_dict()

    path = tmp_path / "net.npz"
    np.savez(path, **state)
    with np.load(path, allow_pickle=False) as f:
        loaded = {k: f[k] for k in f.files}
    other = Network(_small(dropout=True)).build((8, 8, 3), seed=99)
    assert not np.array_equal(other.predict(x), net.predict(x))
    other.load_state_dict(loaded)
    assert np.array_equal(other.predict(x), net.predict(x))
    for k, v in net.state_dict().items():
        assert np.array_equal(other.state_dict()[k], v), k
    # loading copies: changing the loaded dict later does not touch the network
    loaded["layers.0.kernel"] += 1
    assert np.array_equal(other.predict(x), net.predict(x))


def test_state_dict_wrong_key_raises():
    net, _ = _trained_small()
    state = net.state_dict()
    state["layers.9.kernel"] = state.pop("layers.0.kernel")
    with pytest.raises(CheckpointError, match=r"layers\.0\.kernel"):
        Network(_small(dropout=True)).build((8, 8, 3)).load_state_dict(state)


def test_state_dict_missing_running_stat_raises():
    net, _ = _trained_small()
    state = net.state_dict()
    del state["layers.1.running_var"]
    with pytest.raises(CheckpointError, match="running_var"):
        Network(_small(dropout=True)).build((8, 8, 3)).load_state_dict(state)


def test_state_dict_wrong_shape_raises():
    net, _ = _trained_small()
    state = net.state_dict()
    other = Network(_small(dropout=True)).build((8, 8, 3), seed=5)
    before = other.state_dict()
    state["layers.6.kernel"] = state["layers.6.kernel"].T
    with pytest.raises(CheckpointError, match=r"layers\.6\.kernel"):
        other.load_state_dict(state)
    # A network built for another input size does not fit either.
    with pytest.raises(CheckpointError):
        Network(_small(dropout=True)).build((10, 10, 3)).load_state_dict(net.state_dict())
    del before


# ------------------------------------------------------------------------ f. shape errors
def test_kernel_larger_than_input_fails_at_build_with_index():
    net = Network([
        {"type": "conv2d", "filters": 2, "kernel_size": 3},
        {"type": "max_pool2d", "pool_size": 2},
        {"type": "conv2d", "filters": 2, "kernel_size": 5},
        {"type": "flatten"},
        {"type": "dense", "units": 1},
    ])
    with pytest.raises(ShapeError) as info:
        net.build((8, 8, 1))  # 8 -> 6 -> 3: a 5x5 kernel does not fit
    err = info.value
    assert err.index == 2
    assert isinstance(err, CnnCliError)
    msg = str(err)
    assert msg.startswith("layers[2]: ")
    assert "5x5" in msg and "3x3" in msg


def test_dense_without_flatten_fails_at_build_with_index():
    net = Network([
        {"type": "conv2d", "filters": 2, "kernel_size": 3},
        {"type": "dense", "units": 1},
    ])
    with pytest.raises(ShapeError) as info:
        net.build((8, 8, 1))
    assert info.value.index == 1
    assert str(info.value).startswith("layers[1]: ")
    assert "flatten" in str(info.value)


def test_pool_larger_than_input_fails_with_index():
    with pytest.raises(ShapeError, match=r"^layers\[1\]: "):
        Network([{"type": "conv2d", "filters": 1, "kernel_size": 3},
                 {"type": "max_pool2d", "pool_size": 4}]).build((5, 5, 1))


@pytest.mark.parametrize("shape", [(0, 8, 1), (8, -1, 1), (), (8.0, 8, 1)])
def test_bad_input_shape(shape):
    with pytest.raises(ConfigError, match="input_shape"):
        Network(_small()).build(shape)


def test_bad_layer_spec_names_its_index():
    with pytest.raises(ConfigError, match=r"layers\[1\]\.kernel_size"):
        Network([{"type": "conv2d", "filters": 2, "kernel_size": 3},
                 {"type": "conv2d", "filters": 2, "kernel_size": 0}])
    with pytest.raises(ConfigError, match=r"did you mean 'conv2d'"):
        Network([{"type": "conv2"}])
    with pytest.raises(ConfigError):
        Network([])


# ---------------------------------------------------------------------------- g. overfit
OVERFIT_LR = {"sgd": 0.5, "momentum": 0.05, "nesterov": 0.05, "adagrad": 0.05, "adadelta": 1.0,
              "rmsprop": 0.005, "adam": 0.01}


@pytest.mark.parametrize("name", sorted(OVERFIT_LR))
def test_each_optimizer_overfits_32_examples(name):
    """Random labels on 32 random 8x8 images: memorized, loss < 5% of the start, 100% accuracy."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 8, 8, 1)).astype(np.float32)
    y = rng.permutation(np.arange(32) % 4)
    net = Network([
        {"type": "conv2d", "filters": 8, "kernel_size": 3, "activation": "tanh"},
        {"type": "max_pool2d", "pool_size": 2},
        {"type": "flatten"},
        {"type": "dense", "units": 4, "activation": "softmax"},
    ]).build((8, 8, 1), seed=0)
    loss = make_loss("categorical_crossentropy")
    opt = make_optimizer({"name": name, "lr": OVERFIT_LR[name]})
    start = net.loss_and_gradients(x, y, loss)[0]
    assert start > 1.0  # about ln 4 at the start
    for _ in range(400):
        value, _ = net.train_step(x, y, loss, opt)
        if value < 0.05 * start:
            break
    final = loss(net.predict(x), y)
    assert final < 0.05 * start, f"{name}: loss {start:.3f} -> {final:.3f}"
    assert np.array_equal(net.predict(x).argmax(axis=1), y)


# -------------------------------------------------------------------------- h. saturation
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_saturated_sigmoid_output_is_finite(dtype):
    net = Network([
        {"type": "conv2d", "filters": 2, "kernel_size": 3, "activation": "tanh"},
        {"type": "flatten"},
        {"type": "dense", "units": 1, "activation": "sigmoid"},
    ]).build((5, 5, 1), seed=0, dtype=dtype)
    net.layers[2].params["bias"][...] = 1e4
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 5, 5, 1))
    y = np.array([0, 1, 0, 1])
    loss = make_loss({"name": "binary_crossentropy", "reduction": "sum"})
    opt = make_optimizer({"name": "sgd", "lr": 1e-6})
    with warnings.catch_warnings(), np.errstate(over="raise", divide="raise", invalid="raise", under="ignore"):
        warnings.simplefilter("error")
        pred = net.forward(x)
        assert np.all(pred == 1.0)  # saturated in floating point
        value, out, dx = net.loss_and_gradients(x, y, loss, input_grad=True)
        grads = net.gradients()
        net.train_step(x, y, loss, opt)
    assert np.isfinite(value)
    # two wrong examples, each with a logit of about 1e4: loss about 2e4
    assert value == pytest.approx(2e4, rel=1e-2)
    assert np.all(np.isfinite(dx))
    for k, g in grads.items():
        assert np.all(np.isfinite(g)), k
    # dL/dz = yhat - y: 1 for the wrong examples, 0 for the right ones -> db = 2
    assert grads["layers.2.bias"][0] == pytest.approx(2.0)
    assert all(np.all(np.isfinite(p)) for p in net.parameters().values())


def test_saturated_softmax_output_is_finite():
    net = Network([{"type": "flatten"}, {"type": "dense", "units": 3, "activation": "softmax"}]).build(
        (2, 2, 1), seed=0, dtype="float64")
    net.layers[1].params["bias"][...] = [1e4, -1e4, 0.0]
    x = np.zeros((2, 2, 2, 1))
    y = np.array([0, 1])
    with warnings.catch_warnings(), np.errstate(over="raise", divide="raise", invalid="raise", under="ignore"):
        warnings.simplefilter("error")
        value, _ = net.loss_and_gradients(x, y, make_loss({"name": "categorical_crossentropy",
                                                            "reduction": "sum"}))
    assert value == pytest.approx(2e4)
    assert all(np.all(np.isfinite(g)) for g in net.gradients().values())


def test_train_step_never_updates_its_input():
    """ERRATA 11: inputs are not parameters; train_step leaves x bit-identical."""
    net = Network([
        {"type": "conv2d", "filters": 4, "kernel_size": 3, "activation": "tanh"},
        {"type": "max_pool2d", "pool_size": 2},
        {"type": "flatten"},
        {"type": "dense", "units": 1, "activation": "sigmoid"},
    ]).build((8, 8, 3), seed=0)
    rng = np.random.default_rng(0)
    x = rng.random((6, 8, 8, 3), dtype=np.float32)
    y = rng.integers(0, 2, 6).astype(np.float32)
    before = x.copy()
    loss, opt = make_loss("binary_crossentropy"), make_optimizer({"name": "sgd", "lr": 0.5})
    weights = net.layers[0].params["kernel"].copy()
    for _ in range(3):
        net.train_step(x, y, loss, opt)
    assert np.array_equal(x, before)
    assert not np.array_equal(net.layers[0].params["kernel"], weights)  # the parameters did move
