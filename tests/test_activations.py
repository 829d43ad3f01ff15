"""Activations (Table 2): gradients, values, ranges, stability, the relu'(0) choice."""

import numpy as np
import pytest

from cnncli.errors import ConfigError
from cnncli.nn.activations import ACTIVATIONS, make_activation
from cnncli.nn.activations.leaky_relu import LeakyReLU
from cnncli.nn.functional import log_sigmoid, sigmoid
from cnncli.nn.gradcheck import numerical_gradient, relative_error
from tests.helpers import strict_floats

SPECS = ["sigmoid", "tanh", "relu", "leaky_relu", {"name": "leaky_relu", "negative_slope": 0.25},
         "softplus", "softmax", "linear"]


def spec_id(s):
    return f"{s['name']}-{s['negative_slope']}" if isinstance(s, dict) else s


def direct(name, z, slope=0.01):
    """g(z) written straight from Table 2, for moderate z."""
    if name == "sigmoid":
        return 1 / (1 + np.exp(-z))
    if name == "tanh":
        return (np.exp(z) - np.exp(-z)) / (np.exp(z) + np.exp(-z))
    if name == "relu":
        return np.where(z > 0, z, 0.0)
    if name == "leaky_relu":
        return np.where(z > 0, z, slope * z)
    if name == "softplus":
        return np.log(1 + np.exp(z))
    if name == "softmax":
        e = np.exp(z)
        return e / e.sum(axis=-1, keepdims=True)
    if name == "linear":
        return z
    raise AssertionError(name)


def direct_derivative(name, z, slope=0.01):
    """g'(z) from the paper's derivative column (relu'(0) = 0, leaky'(0) = slope)."""
    s = 1 / (1 + np.exp(-z))
    return {
        "sigmoid": s * (1 - s),
        "tanh": 1 - np.tanh(z) ** 2,
        "relu": (z > 0).astype(float),
        "leaky_relu": np.where(z > 0, 1.0, slope),
        "softplus": s,
        "linear": np.ones_like(z),
    }[name]


def slope_of(spec):
    return spec["negative_slope"] if isinstance(spec, dict) else 0.01


def away_from_zero(rng, shape, margin=0.05):
    z = rng.standard_normal(shape) * 2
    return z + np.where(z >= 0, margin, -margin)


#: What an unknown name lists: every registered activation (new built-ins join by existing).
ALL_ACTIVATIONS = ", ".join(ACTIVATIONS.names())


def test_registry_has_table_2():
    assert set(ACTIVATIONS.names()) >= {"sigmoid", "tanh", "relu", "leaky_relu", "softplus", "softmax", "linear"}
    assert all(ACTIVATIONS.origin(name) is None for name in ACTIVATIONS.names())  # no test's plugin left behind


@pytest.mark.parametrize("spec", SPECS, ids=spec_id)
def test_backward_matches_central_differences(spec, rng):
    act = make_activation(spec)
    z = away_from_zero(rng, (4, 5))
    da = rng.standard_normal(z.shape)  # random: for softmax this checks the full J^T da
    analytic = act.backward(act.forward(z), da)
    numeric = numerical_gradient(lambda: float(np.sum(act.forward(z) * da)), z)
    assert relative_error(analytic, numeric) < 1e-8


def test_softmax_backward_is_the_full_jacobian_product(rng):
    act = make_activation("softmax")
    z = rng.standard_normal((3, 4))
    da = rng.standard_normal((3, 4))
    a = act.forward(z)
    expected = np.stack([(np.diag(a[n]) - np.outer(a[n], a[n])) @ da[n] for n in range(3)])  # Eq. 21
    np.testing.assert_allclose(act.backward(a, da), expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("spec", SPECS, ids=spec_id)
def test_values_match_direct_formulas(spec, rng):
    act = make_activation(spec)
    z = rng.uniform(-6, 6, (5, 4))
    np.testing.assert_allclose(act.forward(z), direct(act.name, z, slope_of(spec)), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("spec", [s for s in SPECS if s != "softmax"], ids=spec_id)
def test_derivative_matches_direct_formulas(spec, rng):
    act = make_activation(spec)
    z = away_from_zero(rng, (6, 3))
    np.testing.assert_allclose(act.derivative(z), direct_derivative(act.name, z, slope_of(spec)),
                               rtol=1e-12, atol=1e-15)


def test_softmax_derivative_is_the_jacobian_diagonal(rng):
    z = rng.standard_normal((3, 4))
    a = direct("softmax", z)
    np.testing.assert_allclose(make_activation("softmax").derivative(z), a * (1 - a), rtol=1e-13)


def test_ranges(rng):
    z = np.concatenate([rng.uniform(-30, 30, 200), np.linspace(-5, 5, 41)])
    s = make_activation("sigmoid").forward(z)
    assert np.all((s > 0) & (s < 1))
    t = make_activation("tanh").forward(np.clip(z, -15, 15))
    assert np.all((t > -1) & (t < 1))
    assert np.all(make_activation("relu").forward(z) >= 0)
    sp = make_activation("softplus").forward(z)
    assert np.all(sp > 0)  # ERRATA 3: (0, inf), not (-inf, inf)
    leaky = make_activation("leaky_relu").forward(z)
    assert np.all(leaky[z < 0] < 0)  # ERRATA 3: (-inf, inf), not [0, inf)
    np.testing.assert_array_equal(leaky[z > 0], z[z > 0])
    sm = make_activation("softmax").forward(rng.standard_normal((6, 5)) * 10)
    assert np.all((sm > 0) & (sm < 1))
    np.testing.assert_allclose(sm.sum(axis=-1), 1.0, rtol=1e-14)


def test_relu_derivative_at_zero_is_zero():
    """Documented choice (PyTorch/Keras); the paper's Eq. 15 says 1 (ERRATA 3)."""
    relu = make_activation("relu")
    z = np.array([0.0, -0.0])
    assert np.all(relu.backward(relu.forward(z), np.ones(2)) == 0)
    assert np.all(relu.derivative(z) == 0)
    leaky = LeakyReLU(negative_slope=0.1)
    np.testing.assert_array_equal(leaky.derivative(np.array([0.0])), [0.1])


def test_leaky_relu_default_slope_is_0_01(rng):
    act = make_activation("leaky_relu")
    assert act.negative_slope == 0.01
    z = -rng.uniform(0.1, 5, 10)
    np.testing.assert_allclose(act.forward(z), 0.01 * z, rtol=1e-15)
    np.testing.assert_allclose(act.backward(act.forward(z), np.ones(10)), 0.01, rtol=1e-15)
    zero_slope = LeakyReLU(negative_slope=0.0)
    np.testing.assert_array_equal(zero_slope.backward(zero_slope.forward(z), np.ones(10)), 0.0)


EXTREMES = np.array([-1e300, -1e4, -800.0, -40.0, -1e-300, 0.0, 1e-300, 40.0, 800.0, 1e4, 1e300])


@pytest.mark.parametrize("spec", SPECS, ids=spec_id)
def test_extreme_inputs_give_no_warning_and_no_nan(spec):
    """Finite inputs up to 1e300: no overflow, division or invalid operation.

    Underflow (e^-1e4 rounding to 0) is the intended result of the ``exp(-|z|)`` trick,
    so it is not trapped; every other floating-point error raises.
    """
    act = make_activation(spec)
    z = np.stack([EXTREMES, EXTREMES[::-1]])
    with strict_floats():
        a = act.forward(z)
        dz = act.backward(a, np.ones_like(a))
        d = act.derivative(z)
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(dz)) and np.all(np.isfinite(d))


def test_extreme_values_are_the_limits():
    with np.errstate(over="raise", divide="raise", invalid="raise", under="ignore"):
        s = sigmoid(np.array([-1e300, -1e4, 1e4, 1e300]))
        np.testing.assert_array_equal(s, [0.0, 0.0, 1.0, 1.0])
        np.testing.assert_array_equal(log_sigmoid(np.array([-1e4, 1e4])), [-1e4, 0.0])
        sp = make_activation("softplus")
        np.testing.assert_array_equal(sp.forward(np.array([1e4, 1e300, -1e4])), [1e4, 1e300, 0.0])
        np.testing.assert_array_equal(sp.backward(sp.forward(np.array([1e4, -1e4])), np.ones(2)), [1.0, 0.0])
        sm = make_activation("softmax")
        np.testing.assert_array_equal(sm.forward(np.array([[1e4, 0.0, -1e4], [1e300, -1e300, 0.0]])),
                                      [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
        np.testing.assert_array_equal(make_activation("tanh").forward(np.array([-1e300, 1e300])), [-1.0, 1.0])


def test_softplus_gradient_keeps_precision_for_negative_inputs():
    z = np.array([-30.0, -100.0, -700.0])
    sp = make_activation("softplus")
    np.testing.assert_allclose(sp.backward(sp.forward(z), np.ones(3)), np.exp(z) / (1 + np.exp(z)), rtol=1e-12)


def test_float32_stays_float32(rng):
    z = rng.standard_normal((3, 4)).astype(np.float32)
    for spec in SPECS:
        act = make_activation(spec)
        a = act.forward(z)
        assert a.dtype == np.float32, spec
        assert act.backward(a, np.ones_like(a)).dtype == np.float32, spec


@pytest.mark.parametrize("spec", SPECS, ids=spec_id)
def test_config_round_trip(spec):
    act = make_activation(spec)
    again = make_activation(act.config())
    assert type(again) is type(act) and again.config() == act.config()


@pytest.mark.parametrize("spec, message", [
    ("tanhh", "activation: unknown activation 'tanhh' (did you mean 'tanh'?); expected one of: "
              + ALL_ACTIVATIONS),
    ({"name": "leaky_relu", "negative_slope": -1},
     "activation.negative_slope: expected a number >= 0 and < 1; got -1"),
    ({"name": "leaky_relu", "negative_slope": 1.0},
     "activation.negative_slope: expected a number >= 0 and < 1; got 1.0"),
    ({"name": "relu", "alpha": 1}, "activation.alpha: unknown key for activation 'relu'; allowed keys: name"),
])
def test_bad_activation_messages(spec, message):
    with pytest.raises(ConfigError) as err:
        make_activation(spec)
    assert str(err.value) == message


def test_activation_spec_of_wrong_type():
    with pytest.raises(ConfigError) as err:
        make_activation(3)
    assert str(err.value).startswith("activation: expected ") and str(err.value).endswith("; got 3")


def test_leaky_relu_direct_constructor_message():
    with pytest.raises(ConfigError) as err:
        LeakyReLU(negative_slope=-1)
    assert str(err.value) == "negative_slope: expected a number >= 0 and < 1; got -1"
