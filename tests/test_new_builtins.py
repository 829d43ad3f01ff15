"""The built-ins added as one file each, with no edit elsewhere: the activations ``elu``,
``gelu`` (exact and tanh) and ``silu`` (alias ``swish``), the optimizer ``adamw`` and the
loss ``huber``.

Every value is compared with its formula written here per element with :mod:`math`
(``math.erf`` and ``math.erfc`` as the oracles of GELU's vectorized erf), every derivative
with central differences, each activation inside a network with a whole-network gradient
check, and everything with PyTorch where it is installed. AdamW is also compared with its
rule written here in plain NumPy, and with Adam when ``weight_decay`` is 0.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from engine_modes import serial_and_split
from tests.helpers import strict_floats
from cnncli.errors import ConfigError
from cnncli.nn import ACTIVATIONS, LOSSES, OPTIMIZERS, ActivationLayer, Network, make_activation, make_optimizer
from cnncli.nn.activations.elu import ELU
from cnncli.nn.activations.gelu import GELU, erf, erfc
from cnncli.nn.activations.silu import SiLU
from cnncli.nn.fusion import ConvMaxPool, PoolAfterActivation, Single
from cnncli.nn.gradcheck import check_network, numerical_gradient, relative_error
from cnncli.nn.losses import make_loss
from cnncli.nn.losses.huber import Huber
from cnncli.nn.optimizers.adam import Adam
from cnncli.nn.optimizers.adamw import AdamW

# Every test twice: serially and with the work split over the engine's threads.
engine_mode = serial_and_split()

SPECS = ["elu", {"name": "elu", "alpha": 0.5}, {"name": "elu", "alpha": 2.5}, "gelu",
         {"name": "gelu", "approximate": "tanh"}, "silu"]
SQRT_HALF = math.sqrt(0.5)
SQRT_2_OVER_PI = math.sqrt(2 / math.pi)


def spec_id(spec):
    return "-".join(str(v) for v in spec.values()) if isinstance(spec, dict) else spec


def keywords(spec):
    return {k: v for k, v in spec.items() if k != "name"} if isinstance(spec, dict) else {}


def name_of(spec):
    return spec["name"] if isinstance(spec, dict) else spec


def scaled_error(actual, expected):
    """max |actual - expected| / max(1, |expected|): relative for large values, absolute
    for small ones (where a formula written as 1 + erf or 1 + tanh has lost its digits)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape
    return float(np.max(np.abs(actual - expected) / np.maximum(1.0, np.abs(expected))))


# --------------------------------------------------------- the formulas, one value at a time
def direct(spec, z: float) -> float:
    """g(z) as each module's docstring and PyTorch's documentation write it."""
    name, kw = name_of(spec), keywords(spec)
    if name == "elu":
        return z if z > 0 else kw.get("alpha", 1.0) * math.expm1(z)
    if name == "gelu" and kw.get("approximate", "none") == "none":
        return 0.5 * z * (1 + math.erf(z / math.sqrt(2)))
    if name == "gelu":
        return 0.5 * z * (1 + math.tanh(SQRT_2_OVER_PI * (z + 0.044715 * z ** 3)))
    if name == "silu":
        return z / (1 + math.exp(-z))
    raise AssertionError(name)


def direct_derivative(spec, z: float) -> float:
    name, kw = name_of(spec), keywords(spec)
    if name == "elu":
        return 1.0 if z > 0 else kw.get("alpha", 1.0) * math.exp(z)
    if name == "gelu" and kw.get("approximate", "none") == "none":
        return 0.5 * (1 + math.erf(z / math.sqrt(2))) + z * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    if name == "gelu":
        t = math.tanh(SQRT_2_OVER_PI * (z + 0.044715 * z ** 3))
        return 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * SQRT_2_OVER_PI * (1 + 3 * 0.044715 * z * z)
    if name == "silu":
        s = 1 / (1 + math.exp(-z))
        return s * (1 + z * (1 - s))
    raise AssertionError(name)


def elementwise(fn, z):
    return np.array([fn(float(v)) for v in np.ravel(z)]).reshape(np.shape(z))


def test_registered_by_their_own_files():
    assert {"elu", "gelu", "silu", "swish"} <= set(ACTIVATIONS.names())
    assert ACTIVATIONS.get("elu") is ELU and ACTIVATIONS.get("gelu") is GELU and ACTIVATIONS.get("silu") is SiLU
    assert OPTIMIZERS.get("adamw") is AdamW and LOSSES.get("huber") is Huber
    for name in ("elu", "gelu", "silu", "swish", "adamw", "huber"):  # built-ins, not plugins
        registry = {"adamw": OPTIMIZERS, "huber": LOSSES}.get(name, ACTIVATIONS)
        assert registry.origin(name) is None


# ------------------------------------------------------------------------ activation values
@pytest.mark.parametrize("spec", SPECS, ids=spec_id)
def test_values_match_direct_formulas(spec, rng):
    act = make_activation(spec)
    z = np.concatenate([rng.uniform(-8, 8, 300), np.linspace(-20, 20, 81), [-1e-8, 1e-8]])
    # 1 + erf and 1 + tanh cancel for negative z: within 1e-15 absolutely, 1e-14 relatively
    np.testing.assert_allclose(act.forward(z), elementwise(lambda v: direct(spec, v), z), rtol=1e-14, atol=1e-15)


def test_gelu_keeps_relative_precision_where_it_is_tiny():
    """z Phi(z) with Phi(z) = erfc(-z/sqrt 2)/2 (math.erfc as the oracle), down to 1e-300;
    the direct 1 + erf form has no digit left there."""
    gelu = make_activation("gelu")
    z = -np.concatenate([np.linspace(0.01, 37.0, 1000), np.logspace(-300, 0, 50)])
    expected = elementwise(lambda v: 0.5 * v * math.erfc(-v * SQRT_HALF), z)
    assert np.all(expected < 0) and expected.min() > -0.2 and np.abs(expected).min() < 1e-290
    np.testing.assert_allclose(gelu.forward(z), expected, rtol=2e-14, atol=0)


def test_gelu_tanh_and_silu_keep_relative_precision_where_tiny():
    """(1 + tanh u)/2 = 1/(1 + e^{-2u}) and z sigmoid(z), written with math.exp. The tolerance
    is the condition of e^{-2u}: 2u (up to 700) times the rounding of u (1e-16 relative)."""
    z = -np.linspace(0.01, 19.0, 500)
    u = SQRT_2_OVER_PI * (z + 0.044715 * z ** 3)
    expected = elementwise(lambda v: v / (1 + math.exp(-2 * SQRT_2_OVER_PI * (v + 0.044715 * v ** 3))), z)
    np.testing.assert_allclose(make_activation({"name": "gelu", "approximate": "tanh"}).forward(z), expected,
                               rtol=1e-12, atol=0)
    assert np.min(np.abs(expected)) < 1e-200 and np.all(np.isfinite(u))
    z = -np.linspace(0.01, 700.0, 500)
    np.testing.assert_allclose(make_activation("silu").forward(z), elementwise(lambda v: v / (1 + math.exp(-v)), z),
                               rtol=1e-14, atol=0)


# ---------------------------------------------------------------------------------- erf
def ulp_error(actual, expected):
    spacing = np.spacing(np.abs(expected))
    return np.abs(actual - expected) / np.where(spacing == 0, np.spacing(0.0), spacing)


ERF_POINTS = np.concatenate([
    np.linspace(-30, 30, 60001),
    np.logspace(-320, 1.5, 3000), -np.logspace(-320, 1.5, 3000),
    # each approximation's interval ends and their neighbours
    [e * s for e in (0.84375, 1.25, 1 / 0.35, 6.0, 28.0) for s in (1, -1)],
    [np.nextafter(e, d) * s for e in (0.84375, 1.25, 1 / 0.35, 6.0, 28.0) for d in (0, 99) for s in (1, -1)],
    [0.0, -0.0, 0.25, np.nextafter(0.25, 0), 5e-324, -5e-324, 1e300, -1e300],
])


@pytest.mark.parametrize("fn, oracle, ulps", [(erf, math.erf, 1), (erfc, math.erfc, 4)], ids=["erf", "erfc"])
def test_erf_and_erfc_against_math_module(fn, oracle, ulps):
    """Within 1e-15 relative (1 and 4 ulp, NumPy's exp taking the rest) wherever the result
    is a normal float64, within one subnormal step of it below, signs and zeros included."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        actual = fn(ERF_POINTS)
    expected = elementwise(oracle, ERF_POINTS)
    normal = np.abs(expected) >= np.finfo(np.float64).tiny
    assert ulp_error(actual[normal], expected[normal]).max() <= ulps
    relative = np.abs(actual[normal] - expected[normal]) / np.abs(expected[normal])
    assert relative.max() <= 1e-15
    assert np.max(np.abs(actual[~normal] - expected[~normal])) <= 2 * np.spacing(0.0) * 2 ** 10
    assert np.array_equal(np.signbit(actual), np.signbit(expected))


def test_erf_special_values_dtypes_and_shapes():
    assert erf(np.array([np.inf, -np.inf])).tolist() == [1.0, -1.0]
    assert erfc(np.array([np.inf, -np.inf, 40.0, -40.0])).tolist() == [0.0, 2.0, 0.0, 2.0]
    assert np.isnan(erf(np.nan)) and np.isnan(erfc(np.nan))
    assert erf(np.float32(0.5)).dtype == np.float32 and erfc(np.ones(3, np.float32)).dtype == np.float32
    assert erf(np.array([0, 1])).dtype == np.float64 and erf(np.array([0, 1]))[1] == math.erf(1.0)
    assert erf(np.zeros((2, 0, 3))).shape == (2, 0, 3) and erfc(0.5).shape == ()
    grid = np.linspace(-5, 5, 40000).reshape(40, 25, 40)  # several blocks, not contiguous below
    np.testing.assert_array_equal(erfc(grid[:, ::2, :]), erfc(np.ascontiguousarray(grid[:, ::2, :])))
    np.testing.assert_array_equal(erf(grid).ravel(), erf(grid.ravel()))
    np.testing.assert_allclose(erf(grid) + erfc(grid), 1.0, rtol=0, atol=2e-16)


# ------------------------------------------------------------------------------- derivatives
def away_from_zero(rng, shape, scale=3.0, margin=0.05):
    z = rng.standard_normal(shape) * scale
    return z + np.where(z >= 0, margin, -margin)


@pytest.mark.parametrize("spec", SPECS, ids=spec_id)
def test_backward_matches_central_differences(spec, rng):
    """Central differences of sum(g(z) * da), from |z| < 0.05 (away from elu's kink) out
    to |z| = 60, where g' is exactly 0 or 1."""
    act = make_activation(spec)
    z = np.concatenate([away_from_zero(rng, 40), np.linspace(-60, -0.05, 40), np.linspace(0.05, 60, 40)])
    da = rng.standard_normal(z.shape)
    analytic = act.backward(act.forward(z), da, None if act.backward_from_output else z)
    numeric = numerical_gradient(lambda: float(np.sum(act.forward(z) * da)), z)
    assert relative_error(analytic, numeric) < 1e-8
    # and entry by entry, each from its own g(z +- h): rounding error eps |g(z)| / h at most
    h = 1e-6
    each = (act.forward(z + h) - act.forward(z - h)) / (2 * h) * da
    assert np.all(np.abs(analytic - each) <= 1e-6 * np.abs(each) + 1e-9 * np.maximum(1, np.abs(z)) * np.abs(da))


@pytest.mark.parametrize("spec", SPECS, ids=spec_id)
def test_derivative_matches_direct_formulas(spec, rng):
    act = make_activation(spec)
    z = np.concatenate([away_from_zero(rng, 300), np.linspace(-30, 30, 121)])
    # 1e-14 absolutely: the direct forms' 1 + erf, 1 + tanh and 1 - tanh^2 lose digits for negative z
    np.testing.assert_allclose(act.derivative(z), elementwise(lambda v: direct_derivative(spec, v), z),
                               rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0, 2.5])
def test_elu_backward_from_its_output(alpha, rng):
    """g'(z) = a + alpha below 0, read from the output alone (z is not kept); g'(0) = alpha as in PyTorch."""
    elu = make_activation({"name": "elu", "alpha": alpha})
    z = np.concatenate([rng.uniform(-30, 30, 200), [0.0, -0.0]])
    da = rng.standard_normal(z.shape)
    from_output = elu.backward(elu.forward(z), da)
    expected = da * np.where(z > 0, 1.0, alpha * np.exp(z))
    np.testing.assert_allclose(from_output, expected, rtol=1e-12, atol=alpha * 1e-15)
    np.testing.assert_array_equal(elu.derivative(np.array([0.0])), [alpha])


EXTREMES = np.array([-1e300, -1e30, -1e4, -800.0, -40.0, -1e-300, 0.0, 1e-300, 40.0, 800.0, 1e4, 1e30, 1e300])


@pytest.mark.parametrize("spec", SPECS, ids=spec_id)
def test_extreme_inputs_give_no_warning_no_nan_and_the_limits(spec):
    """Every finite input up to 1e300: no overflow, invalid operation or division (only
    underflow to 0, the intended limit, is let through); g(z) -> z and g' -> 1 above,
    g(z) -> 0 (-alpha for elu) and g' -> 0 below."""
    act = make_activation(spec)
    z = np.stack([EXTREMES, EXTREMES[::-1]])
    with strict_floats():
        a = act.forward(z)
        d = act.derivative(z)
        dz = act.backward(a, np.ones_like(a), None if act.backward_from_output else z)
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(d)) and np.all(np.isfinite(dz))
    np.testing.assert_array_equal(d, dz)
    big = EXTREMES >= 800  # (silu'(40) = 1 + 1.6e-16 is not 1 yet)
    np.testing.assert_array_equal(a[0][big], EXTREMES[big])
    np.testing.assert_array_equal(d[0][big], 1.0)
    low = EXTREMES <= -800
    np.testing.assert_array_equal(a[0][low], -keywords(spec).get("alpha", 1.0) if name_of(spec) == "elu" else 0.0)
    np.testing.assert_array_equal(d[0][low], 0.0)


@pytest.mark.parametrize("spec", SPECS, ids=spec_id)
def test_float32_stays_float32(spec, rng):
    act = make_activation(spec)
    z = (rng.standard_normal((3, 4)) * 3).astype(np.float32)
    a = act.forward(z)
    assert a.dtype == np.float32 and act.derivative(z).dtype == np.float32
    assert act.backward(a, np.ones_like(a), None if act.backward_from_output else z).dtype == np.float32
    np.testing.assert_allclose(a, act.forward(z.astype(np.float64)), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("spec", SPECS, ids=spec_id)
def test_declared_properties_hold(spec):
    """monotonic, output_range (its lowest value is attained), backward_from_output."""
    act = make_activation(spec)
    # fine (1e-6) where gelu and silu have their minimum, so the grid's minimum is within 1e-12 of it
    z = np.sort(np.concatenate([np.linspace(-40, 40, 80001), np.linspace(-1.5, -0.5, 1000001)]))
    a = act.forward(z)
    low, high = act.output_range  # elu's -alpha only approached: -alpha (1 - e^-40) at z = -40
    assert high == math.inf and a.min() >= low - 1e-15 and a.min() <= low + 1e-12
    assert act.monotonic == bool(np.all(np.diff(a) >= 0))
    assert act.backward_from_output == (name_of(spec) == "elu")
    assert isinstance(act.backward_flops, int) and act.backward_flops > 0


@pytest.mark.parametrize("spec", SPECS, ids=spec_id)
def test_config_round_trip_and_explain_text(spec):
    act = make_activation(spec)
    again = make_activation(act.config())
    assert type(again) is type(act) and again.config() == act.config()
    (forward, forward_tex), (derivative, derivative_tex) = act.formula(), act.derivative_formula()
    assert forward.startswith("a = ") and derivative.startswith("g'(z) = ") and forward_tex and derivative_tex
    alpha = keywords(spec).get("alpha")
    if alpha is not None:  # the keyword's value is written into the formulas
        assert f"{alpha:g}" in forward and f"{alpha:g}" in derivative and f"{alpha:g}" in forward_tex
    fwd, bwd, notes = act.equations("(N, 3)")
    assert notes == [] and fwd[0].text == forward and derivative in bwd[0].text


def test_gelu_forms_and_defaults():
    assert make_activation("gelu").config() == {"name": "gelu", "approximate": "none"}
    assert make_activation("elu").config() == {"name": "elu", "alpha": 1.0}
    assert "erf" in make_activation("gelu").formula()[0]
    assert "tanh" in make_activation({"name": "gelu", "approximate": "tanh"}).formula()[0]
    z = np.linspace(-4, 4, 81)
    exact = make_activation("gelu").forward(z)
    approx = make_activation({"name": "gelu", "approximate": "tanh"}).forward(z)
    assert 0 < np.max(np.abs(exact - approx)) < 1e-3  # two forms, close but not the same


# ------------------------------------------------------------------- swish and the layer type
def test_swish_is_silu(rng):
    assert ACTIVATIONS.get("swish") is ACTIVATIONS.get("silu") is SiLU
    swish = make_activation("swish")
    assert type(swish) is SiLU and swish.name == "silu" and swish.config() == {"name": "silu"}
    z = rng.standard_normal(20)
    np.testing.assert_array_equal(swish.forward(z), make_activation("silu").forward(z))
    layer = Network([{"type": "swish"}]).build((4,), dtype="float64").layers[0]
    assert isinstance(layer, ActivationLayer) and type(layer.activation) is SiLU
    assert layer.config() == {"type": "activation", "activation": "silu"}


@pytest.mark.parametrize("spec", SPECS, ids=spec_id)
def test_shortcut_layer_type(spec, rng):
    """``{type: elu, alpha: 0.5}`` is ``{type: activation, activation: {name: elu, alpha: 0.5}}``."""
    net = Network([{"type": name_of(spec), **keywords(spec)}]).build((3, 4), dtype="float64")
    layer = net.layers[0]
    assert isinstance(layer, ActivationLayer) and layer.activation.config() == make_activation(spec).config()
    x = rng.standard_normal((2, 3, 4))
    np.testing.assert_array_equal(net.forward(x), make_activation(spec).forward(x))
    again = Network(net.config()).build((3, 4), dtype="float64").layers[0]
    assert again.activation.config() == layer.activation.config()


# --------------------------------------------------------------------- inside a network
def gradcheck_network(spec, implementation="fast", fuse=True):
    """A conv with the activation, max pooling (fused with it where it is monotonic), a
    dense layer with it, the activation as a layer of its own, a linear output."""
    net = Network([
        {"type": "conv2d", "filters": 3, "kernel_size": 3, "activation": spec, "implementation": implementation},
        {"type": "max_pool2d", "pool_size": 2},
        {"type": "flatten"},
        {"type": "dense", "units": 3, "activation": spec},
        {"type": name_of(spec), **keywords(spec)},
        {"type": "dense", "units": 2},
    ]).build((6, 6, 2), seed=0, dtype="float64", fuse=fuse)
    rng = np.random.default_rng(1)
    for p in net.parameters().values():  # away from the zero biases
        p += 0.3 * rng.standard_normal(p.shape)
    return net


@pytest.mark.parametrize("spec", SPECS, ids=spec_id)
def test_whole_network_gradient_check(spec):
    net = gradcheck_network(spec)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((4, 6, 6, 2)), rng.standard_normal((4, 2))
    rows = check_network(net, make_loss({"name": "huber", "delta": 0.5}), x, y, max_entries=30, seed=0)
    assert [r["layer"] for r in rows] == ["input", "conv2d", "max_pool2d", "flatten", "dense", "activation", "dense"]
    for row in rows:
        assert row["error"] < 1e-7, row
        assert row["kinks"] <= 3, row  # elu's g'(0) kink only, if a step crosses it
    assert sum(r["entries"] for r in rows) > 100


@pytest.mark.parametrize("implementation", ["fast", "reference"])
@pytest.mark.parametrize("spec", SPECS, ids=spec_id)
def test_fused_pooling_only_for_monotonic_and_same_results(spec, implementation, rng):
    """elu runs after max pooling (fused steps); gelu and silu, not monotonic, may not.
    Either way the network computes what its layers, run one by one, compute."""
    net = gradcheck_network(spec, implementation)
    first = type(net.steps[0])
    if name_of(spec) == "elu":
        assert first is (ConvMaxPool if implementation == "fast" else PoolAfterActivation)
    else:
        assert first is Single and type(net.steps[1]) is Single
    plain = gradcheck_network(spec, implementation, fuse=False)  # the same parameters
    assert all(type(s) is Single for s in plain.steps)
    x, y = rng.standard_normal((5, 6, 6, 2)), rng.standard_normal((5, 2))
    loss = make_loss("mse")
    value, out, dx = net.loss_and_gradients(x, y, loss, input_grad=True)
    value_plain, out_plain, dx_plain = plain.loss_and_gradients(x, y, loss, input_grad=True)
    np.testing.assert_allclose(out, out_plain, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dx, dx_plain, rtol=1e-12, atol=1e-14)
    for key, g in net.gradients().items():
        np.testing.assert_allclose(g, plain.gradients()[key], rtol=1e-11, atol=1e-14)


# ---------------------------------------------------------------------------------- PyTorch
def _torch():
    return pytest.importorskip("torch")


def torch_activation(torch, spec):
    f, kw = torch.nn.functional, keywords(spec)
    return {
        "elu": lambda t: f.elu(t, alpha=kw.get("alpha", 1.0)),
        "gelu": lambda t: f.gelu(t, approximate=kw.get("approximate", "none")),
        "silu": f.silu,
    }[name_of(spec)]


@pytest.mark.torch
@pytest.mark.parametrize("spec", SPECS, ids=spec_id)
def test_activation_matches_torch(spec, rng):
    """Forward and backward equal PyTorch's float64 kernels to 1e-12 (relative for values
    above 1, absolute below), from -1e4 to 1e4."""
    torch = _torch()
    act = make_activation(spec)
    z = np.concatenate([np.linspace(-40, 40, 8001), rng.standard_normal(2000) * 3,
                        [-1e4, -800.0, -1e-300, 0.0, 1e-300, 800.0, 1e4]])
    da = rng.standard_normal(z.shape)
    zt = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    at = torch_activation(torch, spec)(zt)
    at.backward(torch.tensor(da))
    a = act.forward(z)
    dz = act.backward(a, da, None if act.backward_from_output else z)
    assert scaled_error(a, at.detach().numpy()) <= 1e-12
    assert scaled_error(dz, zt.grad.numpy()) <= 1e-12


ADAMW_SHAPES = {"conv": (2, 3, 2, 4), "bias": (4,), "dense": (5, 3), "scalar": ()}
ADAMW_STEPS = 25


def adamw_params(seed=0):
    rng = np.random.default_rng(seed)
    return {k: np.asarray(rng.standard_normal(s)) for k, s in ADAMW_SHAPES.items()}


def adamw_grads(steps=ADAMW_STEPS, seed=1):
    """Gradients whose global norm ranges over 0.03 .. 30 from step to step."""
    rng = np.random.default_rng(seed)
    return [{k: 10.0 ** rng.uniform(-1.5, 0.8) * np.asarray(rng.standard_normal(s)) for k, s in ADAMW_SHAPES.items()}
            for _ in range(steps)]


def copy(d):
    return {k: np.array(v, copy=True) for k, v in d.items()}


def params_error(actual, expected):
    return max(scaled_error(actual[k], expected[k]) for k in expected)


# (our spec, torch keywords, torch scheduler factory or None)
TORCH_ADAMW = {
    "defaults": ({"lr": 0.01}, {}, None),
    "decay-0.1": ({"lr": 0.01, "weight_decay": 0.1}, {"weight_decay": 0.1}, None),
    "custom": ({"lr": 0.02, "weight_decay": 0.1, "beta1": 0.8, "beta2": 0.99, "epsilon": 0.1},
               {"weight_decay": 0.1, "betas": (0.8, 0.99), "eps": 0.1}, None),
    "clip": ({"lr": 0.01, "weight_decay": 0.1, "clip_norm": 3.0}, {"weight_decay": 0.1}, None),
    "step-schedule": ({"lr": 0.05, "weight_decay": 0.1, "schedule": {"name": "step", "step_size": 5, "gamma": 0.5}},
                      {"weight_decay": 0.1}, lambda torch, o: torch.optim.lr_scheduler.StepLR(o, 5, gamma=0.5)),
    "cosine-schedule": ({"lr": 0.05, "weight_decay": 0.01, "schedule": {"name": "cosine", "t_max": ADAMW_STEPS,
                                                                        "min_lr": 0.001}},
                        {"weight_decay": 0.01},
                        lambda torch, o: torch.optim.lr_scheduler.CosineAnnealingLR(o, ADAMW_STEPS, eta_min=0.001)),
    "decay-schedule": ({"lr": 0.05, "weight_decay": 0.1, "schedule": {"name": "decay", "decay": 0.2}},
                       {"weight_decay": 0.1},
                       lambda torch, o: torch.optim.lr_scheduler.LambdaLR(o, lambda t: 1 / (1 + 0.2 * t))),
}


@pytest.mark.torch
@pytest.mark.parametrize("case", sorted(TORCH_ADAMW))
def test_adamw_matches_torch(case):
    torch = _torch()
    ours_spec, torch_kw, scheduler = TORCH_ADAMW[case]
    params = adamw_params(3)
    tparams = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    topt = torch.optim.AdamW(list(tparams.values()), lr=ours_spec["lr"], **torch_kw)
    tsched = scheduler(torch, topt) if scheduler else None
    opt = make_optimizer({"name": "adamw", **ours_spec})
    clip = ours_spec.get("clip_norm")
    clipped = []
    for grads in adamw_grads(seed=4):
        for k, p in tparams.items():
            p.grad = torch.tensor(grads[k], dtype=torch.float64)
        if clip is not None:
            clipped.append(float(torch.nn.utils.clip_grad_norm_(list(tparams.values()), max_norm=clip)) > clip)
        assert opt.current_lr() == pytest.approx(topt.param_groups[0]["lr"], rel=1e-14)
        topt.step()
        if tsched:
            tsched.step()
        opt.step(params, copy(grads))
        assert params_error(params, {k: p.detach().numpy() for k, p in tparams.items()}) <= 1e-10
    if clip is not None:
        assert any(clipped) and not all(clipped)


# ----------------------------------------------------------------- AdamW, without PyTorch
def adamw_reference(params, grads_seq, *, lr_at, weight_decay, beta1=0.9, beta2=0.999, epsilon=1e-8,
                    clip_norm=None):
    """The rule of adamw.py's docstring, after clipping g by its global norm."""
    params, m, v = copy(params), {}, {}
    history = []
    for t, grads in enumerate(grads_seq):
        eta = lr_at(t)
        norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
        scale = min(1.0, clip_norm / (norm + 1e-6)) if clip_norm is not None else 1.0
        for k, w in params.items():
            g = grads[k] * scale
            w = (1 - eta * weight_decay) * w
            m[k] = beta1 * m.get(k, 0.0) + (1 - beta1) * g
            v[k] = beta2 * v.get(k, 0.0) + (1 - beta2) * g ** 2
            m_hat, v_hat = m[k] / (1 - beta1 ** (t + 1)), v[k] / (1 - beta2 ** (t + 1))
            params[k] = w - eta * m_hat / (np.sqrt(v_hat) + epsilon)
        history.append(copy(params))
    return history


@pytest.mark.parametrize("spec", [
    {"lr": 0.01},
    {"lr": 0.02, "weight_decay": 0.1, "beta1": 0.8, "beta2": 0.99, "epsilon": 0.1},
    {"lr": 0.02, "weight_decay": 0.3, "clip_norm": 2.0},
    {"lr": 0.05, "weight_decay": 0.1, "schedule": {"name": "exponential", "gamma": 0.8, "decay_steps": 2}},
], ids=["defaults", "custom", "clip", "schedule"])
def test_adamw_matches_its_written_rule(spec):
    hyper = {k: spec[k] for k in ("beta1", "beta2", "epsilon", "clip_norm") if k in spec}
    lr_at = (lambda t: spec["lr"] * 0.8 ** (t / 2)) if "schedule" in spec else (lambda t: spec["lr"])
    params, grads = adamw_params(), adamw_grads()
    expected = adamw_reference(params, grads, lr_at=lr_at, weight_decay=spec.get("weight_decay", 0.01), **hyper)
    opt = make_optimizer({"name": "adamw", **spec})
    for t, g in enumerate(grads):
        opt.step(params, copy(g))
        assert params_error(params, expected[t]) <= 1e-12, t
    if "clip_norm" in spec:  # some steps clipped and some not; the norm is g's own, no decay in it
        norms = [math.sqrt(sum(float(np.sum(x * x)) for x in g.values())) for g in grads]
        assert min(norms) < spec["clip_norm"] < max(norms)
        assert opt.last_grad_norm == pytest.approx(norms[-1], rel=1e-12)


@pytest.mark.parametrize("extra", [{}, {"clip_norm": 1.5}, {"schedule": {"name": "decay", "decay": 0.3}}],
                         ids=["plain", "clip", "schedule"])
def test_adamw_without_weight_decay_is_adam_bit_for_bit(extra):
    a, b = make_optimizer({"name": "adamw", "lr": 0.01, "weight_decay": 0, **extra}), \
        make_optimizer({"name": "adam", "lr": 0.01, **extra})
    pa, pb = adamw_params(), adamw_params()
    for g in adamw_grads():
        a.step(pa, copy(g))
        b.step(pb, copy(g))
    assert all(np.array_equal(pa[k], pb[k]) for k in pa)
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb) and all(np.array_equal(sa[k], sb[k]) for k in sa)


def test_adamw_decay_is_decoupled_from_the_gradient():
    """With g = 0 the weights shrink by (1 - lr wd) per update and nothing else; with L2
    decay (adam + weight_decay) they would move by Adam's normalized step instead."""
    opt = make_optimizer({"name": "adamw", "lr": 0.1, "weight_decay": 0.5})
    w0 = adamw_params()
    params = copy(w0)
    zeros = {k: np.zeros_like(v) for k, v in params.items()}
    for _ in range(10):
        opt.step(params, copy(zeros))
    for k in params:
        np.testing.assert_allclose(params[k], w0[k] * (1 - 0.1 * 0.5) ** 10, rtol=1e-14)
    l2 = make_optimizer({"name": "adam", "lr": 0.1, "weight_decay": 0.5})
    l2_params = copy(w0)
    l2.step(l2_params, copy(zeros))
    assert not np.allclose(l2_params["dense"], w0["dense"] * (1 - 0.1 * 0.5))


def test_adamw_defaults_flops_and_explain():
    opt = make_optimizer("adamw")
    assert isinstance(opt, Adam) and opt.decoupled_weight_decay
    assert (opt.lr, opt.weight_decay, opt.beta1, opt.beta2, opt.epsilon) == (0.001, 0.01, 0.9, 0.999, 1e-8)
    assert opt.config() == {"name": "adamw", "lr": 0.001, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8,
                            "weight_decay": 0.01, "clip_norm": None, "schedule": {"name": "constant"}}
    assert type(make_optimizer(opt.config())) is AdamW
    # Adam's 12 and the decay's multiply; the L2 term (2) is not added, clipping (3) is
    assert opt.flops_per_parameter() == 13
    assert make_optimizer({"name": "adamw", "clip_norm": 1.0}).flops_per_parameter() == 16
    assert make_optimizer({"name": "adam", "weight_decay": 0.01}).flops_per_parameter() == 14
    clipped = make_optimizer({"name": "adamw", "lr": 0.002, "clip_norm": 1.0})
    texts = [e.text for e in clipped.explain(32, 1000).backward]
    assert texts[0].startswith("g <- g * min(1, 1 / (||g||_2")
    assert texts[1] == "W <- W - 0.002 * 0.01 W   (decoupled weight decay, before the Adam step)"
    assert texts[2:] == [text for text, _ in make_optimizer({"name": "adam", "lr": 0.002}).rule()]
    assert not any("L2" in t for t in texts)
    assert any("L2" in e.text for e in make_optimizer({"name": "adam", "weight_decay": 0.01}).explain(32, 1).backward)


def test_adamw_state_round_trip_continues_bit_for_bit():
    spec = {"name": "adamw", "lr": 0.01, "weight_decay": 0.1, "clip_norm": 3.0}
    grads = adamw_grads(10)
    a, pa = make_optimizer(dict(spec)), adamw_params()
    for g in grads[:5]:
        a.step(pa, copy(g))
    b, pb = make_optimizer(dict(spec)), copy(pa)
    b.load_state_dict(a.state_dict(), pb)
    for g in grads[5:]:
        a.step(pa, copy(g))
        b.step(pb, copy(g))
    assert all(np.array_equal(pa[k], pb[k]) for k in pa)


# ------------------------------------------------------------------------------------ Huber
def huber_direct(p, y, delta, reduction):
    per = []
    for d in (np.ravel(p) - np.ravel(y)).tolist():
        per.append(0.5 * d * d if abs(d) <= delta else delta * (abs(d) - 0.5 * delta))
    return sum(per) if reduction == "sum" else sum(per) / len(per)


def huber_data(rng, delta, shape=(6, 3)):
    """Predictions and targets with errors on both sides of delta, none within 1e-3 of it."""
    p = rng.standard_normal(shape) * 2 * delta
    y = rng.standard_normal(shape) * 2 * delta
    d = p - y
    near = np.abs(np.abs(d) - delta) < 1e-3
    y[near] -= 0.01 * np.sign(d[near])
    d = p - y
    assert np.any(np.abs(d) < delta) and np.any(np.abs(d) > delta)
    return p, y


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("delta", [0.3, 1.0, 2.5])
def test_huber_value_and_gradient(delta, reduction, rng):
    loss = make_loss({"name": "huber", "delta": delta, "reduction": reduction})
    p, y = huber_data(rng, delta)
    value, grad = loss.value_and_grad(p, y)
    assert value == pytest.approx(huber_direct(p, y, delta, reduction), rel=1e-14)
    numeric = numerical_gradient(lambda: loss(p, y), p)
    assert relative_error(grad, numeric) < 1e-8
    d = p - y
    scale = 1 / d.size if reduction == "mean" else 1.0
    np.testing.assert_allclose(grad, scale * np.where(np.abs(d) <= delta, d, delta * np.sign(d)), rtol=1e-15)


def test_huber_at_and_far_beyond_delta():
    loss = make_loss({"name": "huber", "delta": 0.5, "reduction": "sum"})
    y = np.zeros((1, 6))
    p = np.array([[0.5, -0.5, 0.25, 2.0, 1e200, -1e300]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="raise"):
            value, grad = loss.value_and_grad(p, y)
    np.testing.assert_array_equal(grad, [[0.5, -0.5, 0.25, 0.5, 0.5, -0.5]])
    assert value == pytest.approx(0.125 + 0.125 + 0.03125 + 0.875 + 0.5 * (1e200 - 0.25) + 0.5 * (1e300 - 0.25),
                                  rel=1e-15)
    small = make_loss({"name": "huber", "delta": 2.0})  # all within delta: half the mse
    p, y = np.array([[0.3, -1.2]]), np.array([[0.1, 0.4]])
    assert small(p, y) == pytest.approx(0.5 * make_loss("mse")(p, y), rel=1e-15)


def test_huber_config_formula_and_float32(rng):
    loss = make_loss("huber")
    assert loss.config() == {"name": "huber", "reduction": "mean", "delta": 1.0}
    custom = make_loss({"name": "huber", "delta": 0.25, "reduction": "sum"})
    assert make_loss(custom.config()).config() == custom.config() == {"name": "huber", "reduction": "sum",
                                                                       "delta": 0.25}
    e, e_tex, d, d_tex = custom.formula("", "")
    assert "0.25" in e and "0.125" in e and "clip(yhat - y, -0.25, 0.25)" in d and "0.25" in e_tex and d_tex
    p, y = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal((4, 3)).astype(np.float32)
    value, grad = loss.value_and_grad(p, y)
    assert grad.dtype == np.float32 and value == pytest.approx(huber_direct(p, y, 1.0, "mean"), rel=1e-6)


@pytest.mark.torch
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("delta", [0.3, 1.0, 2.5])
def test_huber_matches_torch(delta, reduction, rng):
    torch = _torch()
    p, y = huber_data(rng, delta, shape=(5, 4))
    value, grad = make_loss({"name": "huber", "delta": delta, "reduction": reduction}).value_and_grad(p, y)
    pt = torch.tensor(p, requires_grad=True)
    out = torch.nn.HuberLoss(reduction=reduction, delta=delta)(pt, torch.tensor(y))
    out.backward()
    assert value == pytest.approx(out.item(), rel=1e-12, abs=1e-14)
    np.testing.assert_allclose(grad, pt.grad.numpy(), rtol=1e-12, atol=1e-15)


# --------------------------------------------------------------------------- bad keywords
@pytest.mark.parametrize("make, spec, message", [
    (make_loss, {"name": "huber", "delta": 0}, "loss.delta: expected a number > 0; got 0"),
    (make_loss, {"name": "huber", "delta": -1.5}, "loss.delta: expected a number > 0; got -1.5"),
    (make_loss, {"name": "huber", "delta": "big"}, "loss.delta: expected a number > 0; got 'big'"),
    (make_loss, {"name": "huber", "detla": 1},
     "loss.detla: unknown key for loss 'huber' (did you mean 'delta'?); allowed keys: delta, name, reduction"),
    (make_activation, {"name": "gelu", "approximate": "fast"},
     "activation.approximate: expected one of none, tanh; got 'fast'"),
    (make_activation, {"name": "gelu", "approximate": "Tanh"},
     "activation.approximate: expected one of none, tanh; got 'Tanh' (did you mean 'tanh'?)"),
    (make_activation, {"name": "elu", "alpha": -1}, "activation.alpha: expected a number >= 0; got -1"),
    (make_activation, {"name": "elu", "alpha": True}, "activation.alpha: expected a number >= 0; got True"),
    (make_activation, {"name": "elu", "slope": 1},
     "activation.slope: unknown key for activation 'elu'; allowed keys: alpha, name"),
    (make_activation, {"name": "swish", "beta": 1},
     "activation.beta: unknown key for activation 'swish'; allowed keys: name"),
    (make_optimizer, {"name": "adamw", "weight_decay": -0.1},
     "optimizer.weight_decay: expected a number >= 0; got -0.1"),
    (make_optimizer, {"name": "adamw", "wd": 0.1},
     "optimizer.wd: unknown key for optimizer 'adamw'; allowed keys: beta1, beta2, clip_norm, epsilon, lr, name, "
     "schedule, weight_decay"),
])
def test_bad_keywords_are_one_line_config_errors(make, spec, message):
    with pytest.raises(ConfigError) as err:
        make(spec)
    assert str(err.value) == message and "\n" not in str(err.value)


@pytest.mark.parametrize("layer, fragments", [
    ({"type": "elu", "alpha": -1}, ["layers[0].alpha: expected a number >= 0; got -1"]),
    ({"type": "gelu", "approximate": "fast"}, ["layers[0].approximate: expected one of none, tanh"]),
    ({"type": "swish", "alpha": 1}, ["layers[0].alpha", "unknown key"]),
    ({"type": "dense", "units": 3, "activation": {"name": "elu", "alpha": -2}},
     ["layers[0].activation.alpha", "got -2"]),
])
def test_bad_keywords_in_a_network(layer, fragments):
    with pytest.raises(ConfigError) as err:
        Network([layer])
    assert "\n" not in str(err.value)
    for fragment in fragments:
        assert fragment in str(err.value), (fragment, str(err.value))


def test_the_memory_estimate_counts_the_z_that_gelu_and_silu_keep():
    """tanh back-propagates from its output; gelu and silu keep z as well: one more
    output's worth of values per example (conv and dense alike)."""
    from cnncli.resources import estimate_memory

    def values(act):
        net = Network([{"type": "conv2d", "filters": 4, "kernel_size": 3, "activation": act}, {"type": "flatten"},
                       {"type": "dense", "units": 5, "activation": act}]).build((6, 6, 2), allocate=False)
        return estimate_memory(net, 1, 0).activation_bytes // 4

    assert values("gelu") - values("tanh") == 4 * 4 * 4 + 5
    assert values("silu") == values("gelu") and values("elu") == values("tanh")


def test_components_shows_an_alias_as_another_name():
    from tests.helpers import invoke

    res = invoke("components", "activation")
    assert res.exit_code == 0
    swish = next(line for line in res.stdout.splitlines() if " swish " in line)
    assert "another name for silu" in swish
