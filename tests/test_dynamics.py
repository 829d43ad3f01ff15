"""Training dynamics (``cnncli.nn.dynamics``, ``train.dynamics``, ``dynamics.jsonl``).

Known answers first: a deep sigmoid stack with a small fixed-scale initialization
loses its delta layer by layer toward the input, the same stack with he_normal + relu
does not; a relu layer with a large negative bias is all dead; tanh with huge weights is
saturated. Then the figures themselves: a fused step reports what its layers as written
report, SGD's update norm is exactly lr times the gradient's, and recording changes
nothing in the trajectory (bit for bit), resumes included.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

import cnncli
from cnncli import experiment, runs
from cnncli.nn import Network
from cnncli.nn.activations import make_activation
from cnncli.nn.dynamics import Probe, activation_statistics, norm
from cnncli.nn.losses import make_loss
from cnncli.training import DynamicsSchedule
from tests.helpers import TINY, assert_ok, assert_user_error, invoke

BCE = make_loss("binary_crossentropy")


def dense_stack(activation, kernel_initializer, bias_initializer="zeros", depth=8, width=64) -> Network:
    layers = [{"type": "flatten"}]
    layers += [{"type": "dense", "units": width, "activation": activation, "kernel_initializer": kernel_initializer,
                "bias_initializer": bias_initializer} for _ in range(depth)]
    layers += [{"type": "dense", "units": 1, "activation": "sigmoid"}]
    return Network(layers).build((4, 4, 2), seed=0, dtype="float64")


def probe_step(net, loss=BCE, seed=0, n=64):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *net.input_shape))
    y = rng.integers(0, 2, n).astype(np.float64)
    probe = Probe()
    net.loss_and_gradients(x, y, loss, probe=probe)
    return probe


# ------------------------------------------------------------------ known answers
def test_a_deep_sigmoid_stack_with_a_small_initialization_loses_its_delta_toward_the_input():
    probe = probe_step(dense_stack("sigmoid", {"name": "random_normal", "stddev": 0.05}))
    hidden = [probe.deltas[i] for i in range(1, 9)]  # the eight sigmoid layers, input side first
    # each layer multiplies the delta by about sqrt(64) * 0.05 * sigma' <= 0.1
    assert all(lower < 0.2 * upper for lower, upper in zip(hidden, hidden[1:])), hidden
    assert hidden[0] < 1e-6 * hidden[-1]


def test_the_same_stack_with_he_normal_and_relu_keeps_its_delta():
    probe = probe_step(dense_stack("relu", "he_normal"))
    hidden = [probe.deltas[i] for i in range(1, 9)]
    assert 0.3 < hidden[0] / hidden[-1] < 3, hidden


def test_a_relu_layer_with_a_large_negative_bias_reports_its_units_dead():
    net = dense_stack("relu", "he_normal", bias_initializer={"name": "constant", "value": -10.0}, depth=2)
    probe = probe_step(net)
    assert probe.activations[1]["dead"] == 1.0 and probe.activations[1]["mean"] == 0.0
    healthy = probe_step(dense_stack("relu", "he_normal", depth=2))
    assert healthy.activations[1]["dead"] == 0.0


def test_dead_counts_units_zero_for_every_example_and_position():
    relu = make_activation("relu")
    a = np.ones((4, 3, 3, 5))
    a[..., 1] = 0.0          # channel 1: zero everywhere: dead
    a[:, 0, 0, 2] = 0.0      # channel 2: zero at one position only: alive
    a[1:, :, :, 3] = 0.0     # channel 3: alive for one example: alive
    assert activation_statistics(relu, a)["dead"] == pytest.approx(1 / 5)


def test_tanh_with_huge_weights_saturates_and_with_small_ones_does_not():
    big = probe_step(dense_stack("tanh", {"name": "random_normal", "stddev": 3.0}, depth=3))
    small = probe_step(dense_stack("tanh", {"name": "random_normal", "stddev": 0.01}, depth=3))
    assert big.activations[2]["saturated"] > 0.8
    assert small.activations[2]["saturated"] == 0.0


def test_saturation_is_within_one_percent_of_either_bound():
    sigmoid, tanh = make_activation("sigmoid"), make_activation("tanh")
    assert activation_statistics(sigmoid, np.array([[0.0, 0.0099, 0.011, 0.5, 0.989, 0.995]]))["saturated"] == \
        pytest.approx(3 / 6)
    assert activation_statistics(tanh, np.array([[-1.0, -0.981, -0.979, 0.0, 0.98, 1.0]]))["saturated"] == \
        pytest.approx(4 / 6)
    # unbounded, or a distribution over classes: no saturation figure
    assert activation_statistics(make_activation("relu"), np.ones((2, 3)))["saturated"] is None
    assert activation_statistics(make_activation("softmax"), np.full((2, 4), 0.25))["saturated"] is None
    assert activation_statistics(tanh, np.zeros((2, 3)))["dead"] is None


# ------------------------------------------------------------------ the figures
CONV_NET = [
    {"type": "conv2d", "filters": 4, "kernel_size": 3, "activation": "tanh"},
    {"type": "max_pool2d", "pool_size": 2},                       # tiles: ConvMaxPool
    {"type": "conv2d", "filters": 5, "kernel_size": 3, "activation": "relu", "implementation": "reference"},
    {"type": "max_pool2d", "pool_size": 3, "stride": 2},          # overlaps: PoolAfterActivation
    {"type": "flatten"},
    {"type": "dense", "units": 6, "activation": "sigmoid"},
    {"type": "dense", "units": 3, "activation": "softmax"},
]


@pytest.mark.parametrize("loss_name", ["categorical_crossentropy", "mse"])
def test_fused_steps_report_what_their_layers_as_written_report(loss_name):
    loss = make_loss(loss_name)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 14, 14, 2))
    y = rng.integers(0, 3, 6) if loss.takes_class_indices else np.eye(3)[rng.integers(0, 3, 6)]
    results = []
    for fuse in (True, False):
        net = Network([dict(l) for l in CONV_NET]).build((14, 14, 2), seed=3, dtype="float64", fuse=fuse)
        probe = Probe()
        net.loss_and_gradients(x, y, loss, probe=probe)
        results.append((probe, [type(s).__name__ for s in net.steps]))
    (fused, fused_steps), (plain, plain_steps) = results
    assert "ConvMaxPool" in fused_steps and "PoolAfterActivation" in fused_steps
    assert set(plain_steps) == {"Single"}
    assert sorted(fused.deltas) == sorted(plain.deltas) == list(range(len(CONV_NET)))
    for i in plain.deltas:
        assert fused.deltas[i] == pytest.approx(plain.deltas[i], rel=1e-10), i
    assert sorted(fused.activations) == sorted(plain.activations) == [0, 2, 5, 6]
    for i, stats in plain.activations.items():
        for key, value in stats.items():
            assert fused.activations[i][key] == (pytest.approx(value, rel=1e-10, abs=1e-15)
                                                 if isinstance(value, float) else value), (i, key)


def test_the_delta_that_reaches_each_layer_is_the_gradient_of_the_loss_with_respect_to_its_output():
    """Against an independent computation: dL/da of layer i by central differences of
    the loss as a function of that layer's output (the layers above it run on a_i + h e)."""
    net = Network([{"type": "dense", "units": 3, "activation": "tanh"},
                   {"type": "dense", "units": 2, "activation": "sigmoid"},
                   {"type": "dense", "units": 2, "activation": "linear"}]).build((4,), seed=0, dtype="float64")
    loss = make_loss("mse")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((5, 4)), rng.standard_normal((5, 2))
    probe = Probe()
    net.loss_and_gradients(x, y, loss, probe=probe)
    outputs = net.layer_outputs(x)
    for i in range(3):
        a = outputs[i]
        grad = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            values = []
            for h in (1e-6, -1e-6):
                out = a.copy()
                out[idx] += h
                for layer in net.layers[i + 1:]:
                    out = layer.forward(out, False)
                values.append(loss(out, y))
            grad[idx] = (values[0] - values[1]) / 2e-6
        assert probe.deltas[i] == pytest.approx(np.linalg.norm(grad), rel=1e-6), i


def test_sgd_updates_move_the_weights_by_exactly_lr_times_the_gradient(tmp_path):
    cfg = {**TINY, "optimizer": {"name": "sgd", "lr": 0.05}, "train": {"epochs": 2, "batch_size": 32, "dynamics":
                                                                        {"every": "2 steps"}}}
    run = cnncli.train(cfg, runs_dir=tmp_path / "runs")
    rows = runs.read_dynamics(run.path)
    assert [r["step"] for r in rows] == list(range(2, 2 * 5 + 1, 2))  # 160 examples: 5 steps an epoch
    for row in rows:
        assert row["lr"] == 0.05
        for layer in row["layers"]:
            for name, p in layer.get("params", {}).items():
                assert p["update_norm"] == pytest.approx(0.05 * p["grad_norm"], rel=1e-5), (layer["layer"], name)
                if p["norm"] > 0:
                    assert p["update_ratio"] == pytest.approx(p["update_norm"] / p["norm"])


def test_by_default_each_epoch_records_once_at_its_last_full_batch(tmp_path):
    run = cnncli.train({**TINY, "data": {**TINY["data"], "num_samples": 210}}, runs_dir=tmp_path / "runs")
    rows = runs.read_dynamics(run.path)
    # 168 training examples in batches of 32: five full batches and one of 8
    assert [(r["epoch"], r["batch"], r["examples"]) for r in rows] == [(1, 5, 32), (2, 5, 32)]
    first = rows[0]["layers"]
    assert [layer["label"] for layer in first] == ["conv2d (relu)", "max_pool2d", "flatten", "dense (softmax)"]
    assert set(first[0]["params"]) == {"kernel", "bias"} and "activation" in first[0]
    assert "params" not in first[1] and "activation" not in first[1]
    assert all(layer["delta_norm"] > 0 for layer in first)


def test_recording_dynamics_changes_nothing_in_the_trajectory(tmp_path):
    cfg = {**TINY, "model": {"input_shape": [8, 8, 3], "layers": [l for l in CONV_NET[:2]] + [
        {"type": "flatten"}, {"type": "dropout", "rate": 0.2}, {"type": "dense", "units": 2, "activation": "softmax"}]}}
    finals = []
    for dynamics in (False, {"every": "1 steps"}):
        run = cnncli.train({**cfg, "train": {**cfg["train"], "dynamics": dynamics}}, runs_dir=tmp_path / str(bool(dynamics)))
        params, _, _ = runs.load_checkpoint(run.path / "checkpoints" / "last.npz")
        finals.append((params, runs.read_metrics(run.path), runs.read_dynamics(run.path)))
    (off, off_metrics, off_rows), (on, on_metrics, on_rows) = finals
    assert off_rows == [] and len(on_rows) == 10
    assert all(np.array_equal(off[k], on[k]) for k in off)
    strip = [{k: v for k, v in m.items() if k not in ("seconds", "images_per_second")} for m in off_metrics]
    assert strip == [{k: v for k, v in m.items() if k not in ("seconds", "images_per_second")} for m in on_metrics]


def test_a_resumed_run_records_the_same_dynamics_as_an_uninterrupted_one(tmp_path):
    from tests.test_faults import CrashAt

    cfg = {**TINY, "train": {"epochs": 3, "batch_size": 32, "checkpoint_every": "2 steps",
                             "dynamics": {"every": "3 steps"}}}
    whole = cnncli.train(cfg, runs_dir=tmp_path / "whole")
    with pytest.raises(RuntimeError):
        cnncli.train(cfg, runs_dir=tmp_path / "cut", callbacks=(CrashAt(2, 4),))
    cut = next((tmp_path / "cut").iterdir())
    before = runs.read_dynamics(cut)
    assert before and before[-1]["step"] == 9  # recorded at step 9; the checkpoint is at step 8
    with open(cut / "dynamics.jsonl", "a") as fh:
        fh.write('{"epoch": 2, "step": 10, "lay')  # a line cut short by a kill
    experiment.resume(cut)
    assert runs.read_dynamics(cut) == runs.read_dynamics(whole.path)
    assert [r["step"] for r in runs.read_dynamics(cut)] == [3, 6, 9, 12, 15]


# ------------------------------------------------------------------ configuration
def test_train_dynamics_settings_resolve_and_bad_ones_are_refused_in_one_line(tmp_path):
    from cnncli.config import load_config

    def resolved(value):
        return load_config({**TINY, "train": {**TINY["train"], "dynamics": value}})["train"]["dynamics"]

    assert resolved(True) == {"every": 1} and resolved(False) is False
    assert resolved({"every": "50 steps"}) == {"every": "50 steps"} and resolved({"every": "2 epochs"}) == {"every": 2}
    assert DynamicsSchedule.from_config({"every": "50 steps"}) == DynamicsSchedule(50, "steps")
    assert DynamicsSchedule.from_config(False) is None
    for bad, phrase in (({"every": "often"}, "train.dynamics.every"), ({"evry": 2}, "did you mean 'every'"),
                        ("yes", "train.dynamics"), ({"every": 0}, "train.dynamics.every")):
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], "dynamics": bad}}))
        assert_user_error(invoke("train", path, "--runs-dir", tmp_path / "runs"), phrase)
        assert not (tmp_path / "runs").exists()


def test_dynamics_jsonl_rows_are_plain_json(tmp_path):
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], "epochs": 1}}))
    assert_ok(invoke("train", cfg_path, "--runs-dir", tmp_path / "runs", "-q"))
    (run,) = (tmp_path / "runs").iterdir()
    lines = (run / "dynamics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["layers"][0]["params"]["kernel"]["norm"] > 0


def test_norm_accumulates_in_float64():
    a = np.full(10**6, 1e-3, dtype=np.float32)
    assert norm(a) == pytest.approx(1.0, rel=1e-6)
