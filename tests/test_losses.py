"""Losses (Table 1): values, gradients (from probabilities and from logits), reductions,
saturation, label checks, and PyTorch references."""

import numpy as np
import pytest

from cnncli.errors import ConfigError, DataError
from cnncli.nn.activations import make_activation
from cnncli.nn.gradcheck import numerical_gradient, relative_error
from cnncli.nn.losses import LOSSES, make_loss

REDUCTIONS = ["mean", "sum"]
TOL = 1e-6


def np_sigmoid(z):
    return 1 / (1 + np.exp(-z))


def np_softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def onehot(labels, classes):
    out = np.zeros((len(labels), classes))
    out[np.arange(len(labels)), labels] = 1.0
    return out


# --- direct formulas (Table 1, ERRATA 4), written independently of the engine ---------
def direct_value(name, p, y, reduction, half=False):
    n = p.shape[0]
    if name == "mse":
        per = (p - y) ** 2 * (0.5 if half else 1.0)
        return per.sum() if reduction == "sum" else per.mean()
    if name == "mae":
        per = np.abs(p - y)
        return per.sum() if reduction == "sum" else per.mean()
    if name == "binary_crossentropy":
        per = -(y * np.log(p) + (1 - y) * np.log(1 - p))
        return per.sum() if reduction == "sum" else per.mean()
    if name == "categorical_crossentropy":
        total = -np.sum(y * np.log(p))
        return total if reduction == "sum" else total / n
    if name == "kl_divergence":
        total = 0.0
        for yi, pi in zip(y.ravel(), p.ravel()):
            if yi > 0:
                total += yi * (np.log(yi) - np.log(pi))
        return total if reduction == "sum" else total / n
    raise AssertionError(name)


def make_data(name, rng, shape=(5, 4)):
    """(predicted probabilities or values, targets, logits or None), well inside the domain."""
    if name in ("mse", "mae"):
        p = rng.standard_normal(shape)
        y = rng.standard_normal(shape)
        y += np.where(y >= p, 0.05, -0.05)  # |p - y| > 0.05: mae away from its kink
        return p, y, None
    if name == "binary_crossentropy":
        z = rng.uniform(-3, 3, shape)
        return np_sigmoid(z), rng.integers(0, 2, shape).astype(float), z
    z = rng.standard_normal(shape) * 1.5
    if name == "categorical_crossentropy":
        return np_softmax(z), onehot(rng.integers(0, shape[1], shape[0]), shape[1]), z
    y = rng.uniform(0, 1, shape) * (rng.random(shape) > 0.3)  # soft targets with zeros
    y[:, 0] += 0.1  # no all-zero row
    return np_softmax(z), y / y.sum(axis=1, keepdims=True), z


CASES = [("mse", {}), ("mse", {"half": True}), ("mae", {}), ("binary_crossentropy", {}),
         ("categorical_crossentropy", {}), ("kl_divergence", {})]
CASE_IDS = ["mse", "mse-half", "mae", "bce", "cce", "kl"]


def test_registry_has_table_1():
    assert set(LOSSES.names()) >= {"mse", "mae", "binary_crossentropy", "categorical_crossentropy",
                                   "kl_divergence"}


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name, extra", CASES, ids=CASE_IDS)
def test_value_matches_direct_formula(name, extra, reduction, rng):
    loss = make_loss({"name": name, "reduction": reduction, **extra})
    p, y, _ = make_data(name, rng)
    value = loss(p, y)
    assert isinstance(value, float)
    np.testing.assert_allclose(value, direct_value(name, p, y, reduction, **extra), rtol=1e-13)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name, extra", CASES, ids=CASE_IDS)
def test_gradient_from_probabilities_matches_central_differences(name, extra, reduction, rng):
    loss = make_loss({"name": name, "reduction": reduction, **extra})
    p, y, _ = make_data(name, rng)
    _, grad = loss.value_and_grad(p, y)
    assert grad.shape == p.shape
    numeric = numerical_gradient(lambda: loss(p, y), p)
    assert relative_error(grad, numeric) < TOL


FUSED = [("binary_crossentropy", "sigmoid"), ("categorical_crossentropy", "softmax"),
         ("kl_divergence", "softmax")]


def test_fused_activations_are_declared():
    table1 = {"mse": None, "mae": None, "binary_crossentropy": "sigmoid", "categorical_crossentropy": "softmax",
              "kl_divergence": "softmax"}
    assert {n: LOSSES.get(n).fused_activation for n in table1} == table1


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name, act_name", FUSED, ids=["bce", "cce", "kl"])
def test_from_logits_value_and_central_differences(name, act_name, reduction, rng):
    loss = make_loss({"name": name, "reduction": reduction})
    p, y, z = make_data(name, rng)
    value, grad = loss.value_and_grad(z, y, from_logits=True)
    np.testing.assert_allclose(value, direct_value(name, p, y, reduction), rtol=1e-12)
    numeric = numerical_gradient(lambda: loss(z, y, from_logits=True), z)
    assert relative_error(grad, numeric) < TOL


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name, act_name", FUSED, ids=["bce", "cce", "kl"])
def test_fused_gradient_is_the_chain_rule(name, act_name, reduction, rng):
    """dE/dz from logits == g'(z)^T dE/dyhat from probabilities."""
    loss = make_loss({"name": name, "reduction": reduction})
    act = make_activation(act_name)
    _, y, z = make_data(name, rng)
    a = act.forward(z)
    _, grad_p = loss.value_and_grad(a, y)
    _, grad_z = loss.value_and_grad(z, y, from_logits=True)
    np.testing.assert_allclose(grad_z, act.backward(a, grad_p), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_fused_gradient_is_sigmoid_minus_target(reduction, rng):
    """ERRATA 5: dE/dz = yhat - y (the paper's Eq. 46 has the opposite sign)."""
    z = rng.uniform(-4, 4, (6, 3))
    y = rng.integers(0, 2, z.shape).astype(float)
    _, grad = make_loss({"name": "binary_crossentropy", "reduction": reduction}).value_and_grad(
        z, y, from_logits=True)
    scale = 1.0 if reduction == "sum" else 1.0 / z.size
    np.testing.assert_allclose(grad, (np_sigmoid(z) - y) * scale, rtol=1e-13, atol=1e-16)
    # a gradient step on z lowers the loss (the paper's sign would raise it)
    loss = make_loss({"name": "binary_crossentropy", "reduction": reduction})
    assert loss(z - 0.01 * grad / np.abs(grad).max(), y, from_logits=True) < loss(z, y, from_logits=True)


def test_bce_probability_gradient_sign():
    """ERRATA 5: dE/dyhat = (yhat - y) / (yhat (1 - yhat))."""
    p = np.array([0.2, 0.7, 0.9])
    y = np.array([1.0, 0.0, 1.0])
    _, grad = make_loss({"name": "binary_crossentropy", "reduction": "sum"}).value_and_grad(p, y)
    np.testing.assert_allclose(grad, (p - y) / (p * (1 - p)), rtol=1e-14)


@pytest.mark.parametrize("name", ["categorical_crossentropy", "kl_divergence"])
def test_soft_targets_from_logits(name, rng):
    """For targets not summing to 1, dE/dz = yhat * sum(y) - y (central differences)."""
    loss = make_loss({"name": name, "reduction": "sum"})
    z = rng.standard_normal((4, 3))
    y = rng.uniform(0.1, 1.0, (4, 3))
    _, grad = loss.value_and_grad(z, y, from_logits=True)
    np.testing.assert_allclose(grad, np_softmax(z) * y.sum(axis=1, keepdims=True) - y, rtol=1e-12, atol=1e-15)
    assert relative_error(grad, numerical_gradient(lambda: loss(z, y, from_logits=True), z)) < TOL


@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", ["categorical_crossentropy", "kl_divergence"])
def test_integer_labels_agree_with_one_hot(name, reduction, from_logits, rng):
    loss = make_loss({"name": name, "reduction": reduction})
    z = rng.standard_normal((6, 4))
    x = z if from_logits else np_softmax(z)
    labels = rng.integers(0, 4, 6)
    v1, g1 = loss.value_and_grad(x, labels, from_logits=from_logits)
    v2, g2 = loss.value_and_grad(x, onehot(labels, 4), from_logits=from_logits)
    v3, g3 = loss.value_and_grad(x, labels.astype(float), from_logits=from_logits)  # 2.0 is a label too
    assert v1 == pytest.approx(v2, rel=1e-14) and v1 == pytest.approx(v3, rel=1e-14)
    np.testing.assert_array_equal(g1, g2)
    np.testing.assert_array_equal(g1, g3)
    expected = -np.log(np_softmax(z)[np.arange(6), labels]).sum()
    assert v1 == pytest.approx(expected / (6 if reduction == "mean" else 1), rel=1e-12)


def test_bce_accepts_flat_targets_for_a_column_output(rng):
    loss = make_loss("binary_crossentropy")
    z = rng.standard_normal((5, 1))
    y = rng.integers(0, 2, 5)
    v1, g1 = loss.value_and_grad(z, y, from_logits=True)
    v2, g2 = loss.value_and_grad(z, y.reshape(5, 1).astype(float), from_logits=True)
    assert v1 == v2 and g1.shape == (5, 1)
    np.testing.assert_array_equal(g1, g2)


@pytest.mark.parametrize("name, extra", CASES, ids=CASE_IDS)
def test_sum_versus_mean(name, extra, rng):
    p, y, _ = make_data(name, rng, shape=(6, 3))
    vm, gm = make_loss({"name": name, "reduction": "mean", **extra}).value_and_grad(p, y)
    vs, gs = make_loss({"name": name, "reduction": "sum", **extra}).value_and_grad(p, y)
    factor = p.shape[0] if name in ("categorical_crossentropy", "kl_divergence") else p.size
    assert vs == pytest.approx(vm * factor, rel=1e-13)
    np.testing.assert_allclose(gs, gm * factor, rtol=1e-13)


def test_mse_half_is_half(rng):
    p, y, _ = make_data("mse", rng)
    full = make_loss("mse").value_and_grad(p, y)
    half = make_loss({"name": "mse", "half": True}).value_and_grad(p, y)
    assert half[0] == pytest.approx(full[0] / 2, rel=1e-15)
    np.testing.assert_allclose(half[1], full[1] / 2, rtol=1e-15)
    np.testing.assert_allclose(full[1], 2 * (p - y) / p.size, rtol=1e-14)


def test_mae_gradient_is_sign_and_zero_at_zero():
    p = np.array([1.0, 2.0, 3.0])
    y = np.array([0.0, 2.0, 4.0])
    _, g = make_loss({"name": "mae", "reduction": "sum"}).value_and_grad(p, y)
    np.testing.assert_array_equal(g, [1.0, 0.0, -1.0])


# --- saturation ------------------------------------------------------------------
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_from_logits_saturated(reduction):
    z = np.array([1e4, -1e4, 1e4, -1e4, 1e300, -1e300])
    y = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 0.0])
    with np.errstate(over="raise", divide="raise", invalid="raise", under="ignore"):
        value, grad = make_loss({"name": "binary_crossentropy", "reduction": reduction}).value_and_grad(
            z, y, from_logits=True)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    scale = 1.0 if reduction == "sum" else 1 / 6
    assert value == pytest.approx(2e4 * scale, rel=1e-15)  # two confidently wrong, 1e4 nats each
    np.testing.assert_array_equal(grad, np.array([0.0, 0.0, 1.0, -1.0, 0.0, 0.0]) * scale)


@pytest.mark.parametrize("name", ["categorical_crossentropy", "kl_divergence"])
def test_class_losses_from_logits_saturated(name):
    z = np.array([[1e4, 0.0, -1e4], [1e4, 0.0, -1e4]])
    labels = np.array([0, 2])
    with np.errstate(over="raise", divide="raise", invalid="raise", under="ignore"):
        value, grad = make_loss({"name": name, "reduction": "sum"}).value_and_grad(z, labels, from_logits=True)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    assert value == pytest.approx(2e4, rel=1e-15)  # 0 for the right one, 2e4 for the wrong one
    np.testing.assert_array_equal(grad, [[0.0, 0.0, 0.0], [1.0, 0.0, -1.0]])


@pytest.mark.parametrize("name", ["binary_crossentropy", "categorical_crossentropy", "kl_divergence"])
def test_probabilities_of_exactly_zero_and_one_are_clipped(name):
    if name == "binary_crossentropy":
        p, y = np.array([0.0, 1.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0, 1.0])
    else:
        p, y = np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([1, 0])
    with np.errstate(over="raise", divide="raise", invalid="raise", under="ignore"):
        value, grad = make_loss(name).value_and_grad(p, y)
    assert np.isfinite(value) and value > 10  # a confidently wrong prediction costs -ln(eps) ~ 36
    assert np.all(np.isfinite(grad))


# --- bad inputs ------------------------------------------------------------------
@pytest.mark.parametrize("name", ["categorical_crossentropy", "kl_divergence"])
@pytest.mark.parametrize("labels, bad", [([0, 3], 3), ([-1, 0], -1), ([7, 1], 7)])
def test_labels_out_of_range(name, labels, bad):
    with pytest.raises(DataError) as err:
        make_loss(name)(np.full((2, 3), 1 / 3), np.array(labels))
    assert str(err.value) == f"{name}: label {bad} is out of range for 3 classes (expected 0..2)"


@pytest.mark.parametrize("name", ["categorical_crossentropy", "kl_divergence"])
def test_non_integer_labels(name):
    with pytest.raises(DataError) as err:
        make_loss(name)(np.full((2, 3), 1 / 3), np.array([0.5, 1.0]))
    assert str(err.value) == f"{name}: integer labels expected; got non-integer values"


@pytest.mark.parametrize("name", ["mse", "mae", "binary_crossentropy", "categorical_crossentropy"])
def test_mismatched_target_shape(name):
    with pytest.raises(DataError) as err:
        make_loss(name)(np.full((4, 3), 0.5), np.zeros((4, 2)))
    assert str(err.value).startswith(f"{name}: targets of shape (4, 2) do not match predictions of shape (4, 3)")


@pytest.mark.parametrize("name", ["mse", "mae"])
def test_from_logits_without_fused_activation_is_refused(name):
    with pytest.raises(ValueError, match="no fused output activation"):
        make_loss(name).value_and_grad(np.zeros(3), np.zeros(3), from_logits=True)


@pytest.mark.parametrize("spec, message", [
    ({"name": "mse", "reduction": "avg"}, "loss.reduction: expected one of mean, sum; got 'avg'"),
    ({"name": "mse", "half": 1}, "loss.half: expected true or false; got 1"),
    ("crossentropy", None),
])
def test_bad_loss_config(spec, message):
    with pytest.raises(ConfigError) as err:
        make_loss(spec)
    if message is not None:
        assert str(err.value) == message
    else:
        assert "unknown loss 'crossentropy'" in str(err.value) and "did you mean" in str(err.value)


@pytest.mark.parametrize("name, extra", CASES, ids=CASE_IDS)
def test_config_round_trip(name, extra):
    loss = make_loss({"name": name, "reduction": "sum", **extra})
    again = make_loss(loss.config())
    assert type(again) is type(loss) and again.config() == loss.config()


# --- PyTorch references ------------------------------------------------------------
def _torch():
    return pytest.importorskip("torch")


def _torch_value_grad(fn, x):
    torch = _torch()
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    out = fn(xt)
    out.backward()
    return out.item(), xt.grad.numpy()


def _check_against(loss, x, y, fn, from_logits=False):
    value, grad = loss.value_and_grad(x, y, from_logits=from_logits)
    tv, tg = _torch_value_grad(fn, x)
    assert value == pytest.approx(tv, rel=1e-10, abs=1e-12)
    np.testing.assert_allclose(grad, tg, rtol=1e-10, atol=1e-13)


@pytest.mark.torch
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_regression_losses_match_torch(reduction, rng):
    torch = _torch()
    p, y, _ = make_data("mse", rng)
    yt = torch.tensor(y)
    mse = torch.nn.MSELoss(reduction=reduction)
    _check_against(make_loss({"name": "mse", "reduction": reduction}), p, y, lambda t: mse(t, yt))
    _check_against(make_loss({"name": "mse", "reduction": reduction, "half": True}), p, y,
                   lambda t: 0.5 * mse(t, yt))
    l1 = torch.nn.L1Loss(reduction=reduction)
    _check_against(make_loss({"name": "mae", "reduction": reduction}), p, y, lambda t: l1(t, yt))


@pytest.mark.torch
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_matches_torch(reduction, rng):
    torch = _torch()
    p, y, z = make_data("binary_crossentropy", rng)
    y[0, 0] = 0.3  # a soft target too
    yt = torch.tensor(y)
    loss = make_loss({"name": "binary_crossentropy", "reduction": reduction})
    _check_against(loss, p, y, lambda t: torch.nn.BCELoss(reduction=reduction)(t, yt))
    _check_against(loss, z, y, lambda t: torch.nn.BCEWithLogitsLoss(reduction=reduction)(t, yt),
                   from_logits=True)


@pytest.mark.torch
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cce_matches_torch(reduction, rng):
    torch = _torch()
    z = rng.standard_normal((6, 4)) * 2
    labels = rng.integers(0, 4, 6)
    lt = torch.tensor(labels)
    loss = make_loss({"name": "categorical_crossentropy", "reduction": reduction})
    ce = torch.nn.CrossEntropyLoss(reduction=reduction)
    _check_against(loss, z, labels, lambda t: ce(t, lt), from_logits=True)
    soft = rng.dirichlet(np.ones(4), 6)
    _check_against(loss, z, soft, lambda t: ce(t, torch.tensor(soft)), from_logits=True)
    nll = torch.nn.NLLLoss(reduction=reduction)
    _check_against(loss, np_softmax(z), labels, lambda t: nll(torch.log(t), lt))


@pytest.mark.torch
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_kl_matches_torch(reduction, rng):
    torch = _torch()
    p, y, z = make_data("kl_divergence", rng)
    yt = torch.tensor(y)
    kl = torch.nn.KLDivLoss(reduction="batchmean" if reduction == "mean" else "sum")
    loss = make_loss({"name": "kl_divergence", "reduction": reduction})
    _check_against(loss, z, y, lambda t: kl(torch.log_softmax(t, dim=-1), yt), from_logits=True)
    _check_against(loss, p, y, lambda t: kl(torch.log(t), yt))
