"""The loss and the network's output must agree; ``from_logits`` for both cross-entropies.

Categorical cross-entropy on an output without softmax once reported a loss of 0.0000
while learning nothing (the predictions were clipped into [eps, 1]): such pairings are
refused with one line that says what to do, and ``from_logits: true`` makes the loss
apply the activation itself.
"""

from __future__ import annotations

import numpy as np
import pytest

import cnncli
from cnncli.config import load_config
from cnncli.errors import ConfigError
from cnncli.nn import Network, make_loss
from cnncli.nn.gradcheck import numerical_gradient, relative_error
from tests.helpers import TINY, assert_user_error, invoke


def tiny(last: dict, loss, **extra) -> dict:
    cfg = {**TINY, "model": {**TINY["model"], "layers": [*TINY["model"]["layers"][:-1], last]}, **extra}
    cfg["loss"] = loss
    return cfg


@pytest.mark.parametrize("last, loss, phrases", [
    ({"type": "dense", "units": 2}, "categorical_crossentropy",
     ["loss: categorical_crossentropy needs probabilities that sum to 1", "activation is linear",
      "add activation: softmax to the last layer, or set loss.from_logits: true"]),
    ({"type": "dense", "units": 2, "activation": "sigmoid"}, "kl_divergence",
     ["loss: kl_divergence needs probabilities that sum to 1", "activation is sigmoid"]),
    ({"type": "dense", "units": 1, "activation": "tanh"}, "binary_crossentropy",
     ["loss: binary_crossentropy needs outputs in [0, 1]", "activation is tanh (range -1 to 1)",
      "add activation: sigmoid"]),
    ({"type": "dense", "units": 1}, "binary_crossentropy", ["needs outputs in [0, 1]", "linear"]),
    ({"type": "dense", "units": 2, "activation": "softmax"}, {"name": "categorical_crossentropy", "from_logits": True},
     ["loss.from_logits: true", "already has the activation softmax; remove it, or set from_logits: false"]),
    ({"type": "dense", "units": 1, "activation": "softmax"}, "categorical_crossentropy",
     ["one output (a softmax over one unit is always 1)"]),
])
def test_a_loss_that_cannot_learn_from_the_output_is_refused(tmp_path, last, loss, phrases):
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny(last, loss)))
    assert_user_error(invoke("train", path, "--runs-dir", tmp_path / "runs"), "c.yaml", *phrases)
    assert not (tmp_path / "runs").exists()


def test_the_agreement_check_can_pass():
    """The same pairings the right way round are accepted (the check is not a blanket refusal)."""
    for last, loss in (({"type": "dense", "units": 2, "activation": "softmax"}, "categorical_crossentropy"),
                       ({"type": "dense", "units": 2}, {"name": "categorical_crossentropy", "from_logits": True}),
                       ({"type": "dense", "units": 2}, {"name": "kl_divergence", "from_logits": True}),
                       ({"type": "dense", "units": 1, "activation": "sigmoid"}, "binary_crossentropy"),
                       ({"type": "dense", "units": 1}, {"name": "binary_crossentropy", "from_logits": True}),
                       ({"type": "dense", "units": 2}, "mse")):
        assert load_config(tiny(last, loss))["loss"]["name"] == (loss if isinstance(loss, str) else loss["name"])


@pytest.mark.parametrize("name, units, act", [("binary_crossentropy", 1, "sigmoid"),
                                              ("categorical_crossentropy", 3, "softmax"),
                                              ("kl_divergence", 3, "softmax")])
def test_from_logits_equals_the_fused_activation_and_its_gradient_is_true(name, units, act):
    """A linear output with from_logits gives the loss, gradient and predictions of the
    same network ending in the activation; and the gradient is the central difference's."""
    rng = np.random.default_rng(0)
    layers = [{"type": "dense", "units": 4, "activation": "tanh"}, {"type": "dense", "units": units}]
    plain = Network(layers).build((5,), seed=1, dtype="float64")
    fused = Network([layers[0], {**layers[1], "activation": act}]).build((5,), seed=1, dtype="float64")
    x = rng.standard_normal((6, 5))
    y = rng.integers(0, 2, 6).astype(float) if units == 1 else rng.integers(0, units, 6)
    logits_loss = make_loss({"name": name, "from_logits": True, "reduction": "sum"})
    value, preds, dx = plain.loss_and_gradients(x, y, logits_loss, input_grad=True)
    value2, preds2, dx2 = fused.loss_and_gradients(x, y, make_loss({"name": name, "reduction": "sum"}),
                                                   input_grad=True)
    np.testing.assert_allclose([value, *preds.ravel(), *dx.ravel()], [value2, *preds2.ravel(), *dx2.ravel()],
                               rtol=1e-12)
    numeric = numerical_gradient(lambda: logits_loss(plain.forward(x), y), x)
    assert relative_error(dx, numeric) < 1e-8
    np.testing.assert_allclose(plain.predict(x, loss=logits_loss), preds, rtol=1e-12)


def test_a_run_with_from_logits_trains_like_softmax_and_predicts_probabilities(tmp_path):
    """The same run twice, ending in softmax and ending in logits with from_logits: the
    same losses and accuracies epoch by epoch (float32 rounding aside)."""
    cfg = tiny({"type": "dense", "units": 2}, {"name": "categorical_crossentropy", "from_logits": True})
    run = cnncli.train(cfg, runs_dir=tmp_path / "runs")
    softmax = cnncli.train(tiny({"type": "dense", "units": 2, "activation": "softmax"}, "categorical_crossentropy"),
                           runs_dir=tmp_path / "runs")
    for ours, theirs in zip(run.history, softmax.history, strict=True):
        np.testing.assert_allclose([ours.loss, ours.val_loss], [theirs.loss, theirs.val_loss], rtol=1e-4)
        assert (ours.accuracy, ours.val_accuracy) == (theirs.accuracy, theirs.val_accuracy)
    assert run.history[-1].loss < run.history[0].loss
    report = cnncli.evaluate_run(run.path)
    assert report["accuracy"] == pytest.approx(run.evaluation["accuracy"])
    from PIL import Image

    image = tmp_path / "red.png"
    Image.new("RGB", (8, 8), (200, 30, 30)).save(image)
    [pred] = cnncli.predict(run.path, [image])
    assert 0.5 <= pred["probability"] <= 1.0  # a softmax probability of the arg max, not a logit


def test_from_logits_is_checked_like_any_key():
    with pytest.raises(ConfigError, match="from_logits: expected true or false; got 'yes please'"):
        make_loss({"name": "binary_crossentropy", "from_logits": "yes please"})
    with pytest.raises(ConfigError, match="unknown key for loss 'mse'"):
        make_loss({"name": "mse", "from_logits": True})


@pytest.mark.parametrize("name", ["mse", "binary_crossentropy", "categorical_crossentropy", "huber"])
def test_sample_weights_weight_each_examples_loss_and_gradient(name):
    rng = np.random.default_rng(3)
    classes = 1 if name == "binary_crossentropy" else 3
    y_pred = rng.random((6, classes)) * 0.8 + 0.1
    y_pred = y_pred / y_pred.sum(axis=1, keepdims=True) if name == "categorical_crossentropy" else y_pred
    labels = rng.integers(0, max(classes, 2), 6)
    y = labels if name == "categorical_crossentropy" else (labels[:, None].astype(float) if classes == 1
                                                            else np.eye(3)[labels])
    w = np.array([1.0, 2.0, 0.5, 2.0, 1.0, 3.0])
    summed, loss = make_loss({"name": name, "reduction": "sum"}), make_loss(name)
    per_example = [summed.value_and_grad(y_pred[i:i + 1], y[i:i + 1])[0] for i in range(6)]  # each example's sum
    assert summed.value_and_grad(y_pred, y, sample_weight=w)[0] == pytest.approx(float(np.dot(w, per_example)),
                                                                                  rel=1e-12)
    value, grad = loss.value_and_grad(y_pred, y, sample_weight=w)
    assert value == pytest.approx(float(np.dot(w, per_example)) * loss.scale(y_pred), rel=1e-12)  # the mean
    numeric = numerical_gradient(lambda: loss.value_and_grad(y_pred, y, sample_weight=w)[0], y_pred)
    assert relative_error(grad, numeric) < 1e-7
    ones = loss.value_and_grad(y_pred, y, sample_weight=np.ones(6))
    np.testing.assert_allclose(ones[1], loss.value_and_grad(y_pred, y)[1], rtol=1e-15)


def test_class_weight_in_a_run(tmp_path):
    cfg = {**TINY, "loss": {"name": "categorical_crossentropy", "class_weight": {"1": 3.0}}}
    with pytest.raises(Exception) as err:
        cnncli.train(cfg, runs_dir=tmp_path / "runs")
    assert "loss.class_weight: no class '1'" in str(err.value) and not (tmp_path / "runs").exists()
    cfg["loss"]["class_weight"] = {1: 3.0}
    run = cnncli.train(cfg, runs_dir=tmp_path / "runs")
    import json

    assert json.loads((run.path / "data.json").read_text())["class_weights"] == [1.0, 3.0]
    plain = cnncli.train({**TINY, "loss": "categorical_crossentropy"}, runs_dir=tmp_path / "plain")
    assert run.history[0].loss != plain.history[0].loss  # the weights reach the training loss
    even = cnncli.train({**TINY, "loss": {"name": "categorical_crossentropy", "class_weight": {0: 1.0, 1: 1.0}}},
                        runs_dir=tmp_path / "even")
    assert [h.loss for h in even.history] == [h.loss for h in plain.history]
    with pytest.raises(ConfigError, match="loss.class_weight.1: expected a number > 0; got 0"):
        load_config({**TINY, "loss": {"name": "mse", "class_weight": {1: 0}}})
    from cnncli.data import class_weights

    np.testing.assert_allclose(class_weights("balanced", np.array([0, 0, 0, 1]), ["a", "b"]), [4 / 6, 2.0])
