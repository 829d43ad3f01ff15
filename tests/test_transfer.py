"""Starting from trained weights: ``trainable: false`` (frozen layers), ``--init-from``,
continuing a finished run with changed keys, and the warmup and reduce_on_plateau
schedules."""

from __future__ import annotations

import re

import numpy as np
import pytest
import yaml

import cnncli
from cnncli import runs
from cnncli.config import load_config
from cnncli.nn import Network, make_loss, make_optimizer
from cnncli.summary import summarize, to_markdown
from tests.helpers import TINY, assert_ok, assert_user_error, invoke

CONV = {"type": "conv2d", "filters": 4, "kernel_size": 3, "activation": "tanh"}


# ------------------------------------------------------------------ trainable: false
def test_a_frozen_conv_trains_exactly_like_a_dense_net_on_its_fixed_features():
    """Known answer: with the conv frozen, SGD on [conv, pool, flatten, dense] moves the
    dense layer exactly as SGD on [dense] alone moves it, fed the conv's features."""
    layers = [{**CONV, "trainable": False}, {"type": "max_pool2d", "pool_size": 2}, {"type": "flatten"},
              {"type": "dense", "units": 1, "activation": "sigmoid"}]
    net = Network(layers).build((8, 8, 2), seed=0, dtype="float64")
    head = Network([{"type": "dense", "units": 1, "activation": "sigmoid"}]).build((36,), seed=0, dtype="float64")
    head.load_state_dict({"layers.0.kernel": net.layers[3].params["kernel"], "layers.0.bias": net.layers[3].params["bias"]})
    conv_before = {k: v.copy() for k, v in net.layers[0].params.items()}
    loss = make_loss("binary_crossentropy")
    opt_net, opt_head = make_optimizer({"name": "sgd", "lr": 0.5}), make_optimizer({"name": "sgd", "lr": 0.5})
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = rng.standard_normal((16, 8, 8, 2))
        y = rng.integers(0, 2, 16).astype(np.float64)
        features = net.layer_outputs(x)[2]  # after flatten: (16, 36)
        net.train_step(x, y, loss, opt_net)
        head.train_step(features, y, loss, opt_head)
    assert all(np.array_equal(conv_before[k], net.layers[0].params[k]) for k in conv_before)
    np.testing.assert_allclose(net.layers[3].params["kernel"], head.layers[0].params["kernel"], rtol=0, atol=1e-14)
    # the frozen layer computed no parameter gradient, and the optimizer holds no state for it
    assert net.layers[0].grads == {} and set(net.gradients()) == {"layers.3.kernel", "layers.3.bias"}


def test_backward_stops_below_the_lowest_trainable_layer():
    layers = [{**CONV, "trainable": False}, {"type": "flatten"}, {"type": "dense", "units": 3, "activation": "relu",
                                                                   "trainable": False},
              {"type": "dense", "units": 2, "activation": "softmax"}]
    net = Network(layers).build((5, 5, 1), seed=0, dtype="float64")
    called = []
    for step in net.steps:
        original = step.backward
        step.backward = (lambda original, i: lambda dy, **kw: (called.append(i), original(dy, **kw))[1])(
            original, step.indices)
    net.loss_and_gradients(np.ones((3, 5, 5, 1)), np.array([0, 1, 0]), make_loss("categorical_crossentropy"))
    assert called == [(3,)]  # the frozen dense and everything below it are left alone
    assert not net.layers[3].needs_input_grad


def test_adam_with_weight_decay_keeps_no_state_for_frozen_layers_and_never_decays_them(tmp_path):
    cfg = {**TINY, "model": {**TINY["model"], "layers": [{**TINY["model"]["layers"][0], "trainable": False},
                                                          *TINY["model"]["layers"][1:]]},
           "optimizer": {"name": "adamw", "lr": 0.01, "weight_decay": 0.5}}
    run = cnncli.train(cfg, runs_dir=tmp_path)
    start = cnncli.build(load_config(cfg)).network  # the run's initial weights
    params, optim, _ = runs.load_checkpoint(run.path / "checkpoints" / "last.npz")
    assert np.array_equal(params["layers.0.kernel"], start.layers[0].params["kernel"])
    assert not np.array_equal(params["layers.3.kernel"], start.layers[3].params["kernel"])
    assert not any(key.startswith("layers.0.") or ".layers.0." in key for key in optim), sorted(optim)


def test_a_frozen_batch_norm_uses_and_keeps_its_running_statistics():
    layers = [{"type": "flatten"}, {"type": "batch_norm", "trainable": False},
              {"type": "dense", "units": 1, "activation": "sigmoid"}]
    net = Network(layers).build((2, 2, 1), seed=0, dtype="float64")
    bn = net.layers[1]
    bn.buffers["running_mean"][...] = 3.0
    bn.buffers["running_var"][...] = 4.0
    x = np.random.default_rng(0).standard_normal((6, 2, 2, 1))
    net.loss_and_gradients(x, np.ones(6), make_loss("binary_crossentropy"))
    assert np.all(bn.buffers["running_mean"] == 3.0) and np.all(bn.buffers["running_var"] == 4.0)
    np.testing.assert_allclose(net.layer_outputs(x, training=True)[1],
                               (x.reshape(6, 4) - 3.0) / np.sqrt(4.0 + bn.epsilon) * bn.params["gamma"]
                               + bn.params["beta"])


def test_summary_counts_trainable_and_non_trainable_parameters_and_marks_frozen_layers():
    cfg = {**TINY, "model": {**TINY["model"], "layers": [{**TINY["model"]["layers"][0], "trainable": False},
                                                          *TINY["model"]["layers"][1:]]}}
    values = load_config(cfg)
    assert values["model"]["layers"][0]["trainable"] is False and "trainable" not in values["model"]["layers"][3]
    net = Network(values["model"]["layers"]).build((8, 8, 3), seed=0)
    s = summarize(net)
    assert (s.params, s.non_trainable, s.trainable) == (242, 112, 130)
    assert "trainable 130, non-trainable 112 (frozen)" in to_markdown(s)
    assert "conv2d (relu), frozen" in to_markdown(s)


def test_trainable_must_be_a_boolean_and_something_must_train(tmp_path):
    for layers, phrase in (([{**CONV, "trainable": "no"}, {"type": "flatten"}, {"type": "dense", "units": 2,
                                                                                 "activation": "softmax"}],
                            ("model.layers[0].trainable", "true or false")),
                           ([{**CONV, "trainable": False}, {"type": "flatten"},
                             {"type": "dense", "units": 2, "activation": "softmax", "trainable": False}],
                            ("model.layers", "nothing would train"))):
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump({**TINY, "model": {"input_shape": [8, 8, 3], "layers": layers}}))
        assert_user_error(invoke("train", path, "--runs-dir", tmp_path / "runs"), *phrase)
        assert not (tmp_path / "runs").exists()
    res = invoke("components", "layer")
    assert_ok(res)
    assert "trainable" in res.stdout


def test_gradcheck_proves_a_frozen_layers_gradients_too(tmp_path):
    path = tmp_path / "frozen.yaml"
    path.write_text(yaml.safe_dump({**TINY, "model": {**TINY["model"], "layers": [
        {**TINY["model"]["layers"][0], "trainable": False}, *TINY["model"]["layers"][1:]]}}))
    res = invoke("gradcheck", path, "--batch", "2")
    assert_ok(res)
    assert "layers[0]" in res.stdout or "conv2d" in res.stdout


# ------------------------------------------------------------------ continuing a run
def _final(run_dir):
    params, optim, meta = runs.load_checkpoint(run_dir / "checkpoints" / "last.npz")
    return params, optim, meta


def _metrics(run_dir):
    return [{k: v for k, v in m.items() if k not in ("seconds", "images_per_second")}
            for m in runs.read_metrics(run_dir)]


def test_a_completed_run_continued_to_more_epochs_is_bit_identical_to_one_trained_that_long(tmp_path):
    base = {**TINY, "model": {**TINY["model"], "layers": [TINY["model"]["layers"][0], TINY["model"]["layers"][1],
                                                           {"type": "flatten"}, {"type": "dropout", "rate": 0.3},
                                                           TINY["model"]["layers"][3]]}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(base))
    assert_ok(invoke("train", path, "--runs-dir", tmp_path / "short", "-q"))
    (short,) = (tmp_path / "short").iterdir()
    res = invoke("train", "--resume", short, "--set", "train.epochs=4", "-q")
    assert_ok(res)
    assert "note: continuing to epoch 4 (train.epochs 2 -> 4)" in res.stderr
    long = cnncli.train({**base, "train": {**base["train"], "epochs": 4}}, runs_dir=tmp_path / "long").path
    (a, oa, _), (b, ob, _) = _final(short), _final(long)
    assert all(np.array_equal(a[k], b[k]) for k in a) and all(np.array_equal(oa[k], ob[k]) for k in oa)
    assert _metrics(short) == _metrics(long) and [m["epoch"] for m in _metrics(short)] == [1, 2, 3, 4]
    assert runs.read_dynamics(short) == runs.read_dynamics(long)
    recorded = yaml.safe_load((short / "config.yaml").read_text())
    assert recorded["train"]["epochs"] == 4
    assert recorded["history"] == [{"epoch": 2, "step": 10, "set": {"train.epochs": {"from": 2, "to": 4}}}]
    assert runs.read_status(short)["status"] == "completed"


def test_a_resume_with_a_lower_rate_says_it_is_a_new_trajectory_and_records_it(tmp_path):
    run = cnncli.train({**TINY, "optimizer": {"name": "sgd", "lr": 0.1}}, runs_dir=tmp_path).path
    res = invoke("train", "--resume", run, "--set", "train.epochs=3", "--set", "optimizer.lr=0.01", "-q")
    assert_ok(res)
    notes = [line for line in res.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "new trajectory" in notes[0] and "optimizer.lr 0.1 -> 0.01" in notes[0]
    rows = runs.read_metrics(run)
    assert [r["lr"] for r in rows] == [0.1, 0.1, 0.01]
    history = yaml.safe_load((run / "config.yaml").read_text())["history"]
    assert history[0]["set"]["optimizer.lr"] == {"from": 0.1, "to": 0.01}


def test_a_resume_refuses_keys_that_change_the_network_or_the_data_and_a_run_with_nothing_left(tmp_path):
    run = cnncli.train(TINY, runs_dir=tmp_path).path
    before = (run / "config.yaml").read_text(), (run / "metrics.jsonl").read_text()
    for key, value in (("model.layers[0].filters", "8"), ("seed", "3"), ("data.noise", "0.2"),
                       ("train.batch_size", "16")):
        assert_user_error(invoke("train", "--resume", run, "--set", "train.epochs=4", "--set", f"{key}={value}"),
                          key, "a resume cannot change it")
    assert_user_error(invoke("train", "--resume", run), "completed its 2 epochs", "train.epochs=4")
    assert_user_error(invoke("train", "--resume", run, "--set", "train.epochs=2"), "completed its 2 epochs")
    assert_user_error(invoke("train", "--resume", run, "--name", "x"), "--name")
    assert ((run / "config.yaml").read_text(), (run / "metrics.jsonl").read_text()) == before


# ------------------------------------------------------------------ --init-from
def test_init_from_loads_matching_layers_and_leaves_a_new_output_layer_initialized(tmp_path):
    source = cnncli.train(TINY, runs_dir=tmp_path / "source").path
    three = {**TINY, "data": {**TINY["data"], "num_classes": 3},
             "model": {**TINY["model"], "layers": [{**TINY["model"]["layers"][0], "trainable": False},
                                                   *TINY["model"]["layers"][1:3],
                                                   {"type": "dense", "units": 3, "activation": "softmax"}]}}
    path = tmp_path / "three.yaml"
    path.write_text(yaml.safe_dump(three))
    res = invoke("train", path, "--init-from", f"{source}:last", "--runs-dir", tmp_path / "runs")
    assert_ok(res)
    out = res.stdout
    assert "weights from" in out and "(last, epoch 2)" in out
    assert re.search(r"0 .*conv2d \(relu\).*loaded.*kernel 3x3x3x4, bias 4", out)
    assert re.search(r"3 .*dense \(softmax\).*initialized.*shapes differ: kernel \(64, 3\) for", out) or \
        re.search(r"3 .*dense \(softmax\).*initialized", out)
    (run,) = [p for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")]
    params, _, _ = runs.load_checkpoint(run / "checkpoints" / "last.npz")
    theirs, _, _ = runs.load_checkpoint(source / "checkpoints" / "last.npz")
    assert np.array_equal(params["layers.0.kernel"], theirs["layers.0.kernel"])  # loaded, then frozen
    recorded = yaml.safe_load((run / "config.yaml").read_text())["init_from"]
    assert recorded == {"path": str(source.resolve()), "checkpoint": "last", "epoch": 2, "loaded": [0], "kept": [3]}
    # a resume of the new run starts from its own checkpoint, not the source again
    assert_ok(invoke("train", "--resume", run, "--set", "train.epochs=3", "-q"))


def test_init_from_a_checkpoint_file_and_what_is_refused(tmp_path):
    source = cnncli.train(TINY, runs_dir=tmp_path / "source").path
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    assert_ok(invoke("train", path, "--init-from", source / "checkpoints" / "best.npz", "--runs-dir",
                     tmp_path / "ok", "-q"))
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**TINY, "model": {"input_shape": [8, 8, 3], "layers": [
        {"type": "flatten"}, {"type": "dense", "units": 2, "activation": "softmax"}]}}))
    damaged = tmp_path / "damaged.npz"
    data = dict(np.load(source / "checkpoints" / "best.npz", allow_pickle=False))
    data["param/layers.0.kernel"] = data["param/layers.0.kernel"] + 1
    np.savez(damaged, **data)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a checkpoint")
    cases = [(other, source, ("no layer matches",)), (path, tmp_path / "missing", ("missing", "no such run folder")),
             (path, tmp_path, ("not a run folder",)), (path, damaged, ("damaged.npz",)),
             (path, notes, ("notes.txt", "checkpoint .npz")), (path, f"{source}:middle", ("no such run folder",))]
    for config, init, phrases in cases:
        assert_user_error(invoke("train", config, "--init-from", init, "--runs-dir", tmp_path / "runs"), *phrases)
    assert not (tmp_path / "runs").exists()


def test_the_summary_command_prints_the_trainable_split_in_its_caption(tmp_path):
    path = tmp_path / "frozen.yaml"
    path.write_text(yaml.safe_dump({**TINY, "model": {**TINY["model"], "layers": [
        {**TINY["model"]["layers"][0], "trainable": False}, *TINY["model"]["layers"][1:]]}}))
    res = invoke("summary", path)
    assert_ok(res)
    text = " ".join(res.stdout.split())
    assert "trainable 130, non-trainable 112 (frozen); activations" in text and "{" not in text
    plain = invoke("summary", tmp_path / "frozen.yaml", "--format", "json")
    assert '"non_trainable": 112' in plain.stdout


# ------------------------------------------------------------------ schedules
def test_warmup_rises_linearly_then_hands_over_to_its_schedule():
    from cnncli.nn.schedules import make_schedule

    plain = make_schedule({"name": "warmup", "steps": 4})
    assert [plain(0.1, t) for t in range(6)] == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1])
    cosine = make_schedule({"name": "warmup", "steps": 2, "then": {"name": "cosine", "t_max": 4}})
    inner = make_schedule({"name": "cosine", "t_max": 4})
    assert [cosine(1.0, t) for t in range(8)] == pytest.approx([0.5, 1.0] + [inner(1.0, t) for t in range(6)])
    assert cosine.config() == {"name": "warmup", "steps": 2, "then": {"name": "cosine", "t_max": 4, "min_lr": 0.0}}
    torch = pytest.importorskip("torch")
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=0.1)
    sched = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / 4, end_factor=1.0, total_iters=3)
    theirs = []
    for _ in range(6):
        theirs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert [plain(0.1, t) for t in range(6)] == pytest.approx(theirs, rel=1e-12)


def test_reduce_on_plateau_follows_keras_rule():
    from cnncli.nn.schedules import make_schedule

    s = make_schedule({"name": "reduce_on_plateau", "factor": 0.5, "patience": 2, "min_lr": 0.02, "min_delta": 0.01})
    rates = []
    for loss in (1.0, 0.9, 0.895, 0.89, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8):
        rates.append(s(0.1, 0))
        s.epoch_end({"val_loss": loss, "loss": 5.0})
    # 0.895 and 0.89 improve by less than min_delta: two bad epochs, halved; then 0.8 is
    # better; four more bad epochs halve twice, the second time down to min_lr
    assert rates == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025, 0.02])
    restored = make_schedule({"name": "reduce_on_plateau", "factor": 0.5, "patience": 2, "min_lr": 0.02,
                              "min_delta": 0.01})
    restored.load_state_dict(s.state_dict())
    assert restored.state_dict() == s.state_dict() and restored(0.1, 0) == s(0.1, 0)
    acc = make_schedule({"name": "reduce_on_plateau", "monitor": "val_accuracy", "patience": 1})
    acc.epoch_end({"val_accuracy": None, "accuracy": 0.5})  # no validation split: the training figure
    acc.epoch_end({"val_accuracy": None, "accuracy": 0.4})
    assert acc(1.0, 0) == pytest.approx(0.1)


def test_reduce_on_plateau_is_resumed_exactly(tmp_path):
    from tests.test_faults import CrashAt

    cfg = {**TINY, "optimizer": {"name": "sgd", "lr": 0.5, "schedule": {"name": "reduce_on_plateau", "patience": 1,
                                                                       "factor": 0.5, "monitor": "val_accuracy"}},
           "train": {"epochs": 5, "batch_size": 32}}
    whole = cnncli.train(cfg, runs_dir=tmp_path / "whole").path
    with pytest.raises(RuntimeError):
        cnncli.train(cfg, runs_dir=tmp_path / "cut", callbacks=(CrashAt(4, 2),))
    (cut,) = (tmp_path / "cut").iterdir()
    from cnncli import experiment

    experiment.resume(cut)
    assert _metrics(cut) == _metrics(whole)
    assert len({m["lr"] for m in _metrics(whole)}) > 1  # the schedule did reduce the rate


def test_a_warmup_longer_than_the_run_is_said_once_and_still_trains(tmp_path):
    path = tmp_path / "warm.yaml"
    path.write_text(yaml.safe_dump({**TINY, "optimizer": {"name": "adam", "lr": 0.01,
                                                          "schedule": {"name": "warmup", "steps": 500}}}))
    res = invoke("train", path, "--runs-dir", tmp_path / "runs", "-q")
    assert_ok(res)
    notes = [line for line in res.stderr.splitlines() if "warmup" in line]
    assert notes == ["note: the warmup (500 updates) is longer than the run (10 updates): the rate never reaches "
                     "its base value"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**TINY, "optimizer": {"name": "adam", "schedule": {"name": "warmup", "steps": 0}}}))
    assert_user_error(invoke("train", bad, "--runs-dir", tmp_path / "x"), "optimizer.schedule.steps")


def test_init_from_a_pattern_that_names_one_run(tmp_path, monkeypatch):
    """runs/*-tiny:best reaches cnncli as typed (the shell matches no file with ':best' in
    its name): one match is the run, several are refused."""
    monkeypatch.chdir(tmp_path)
    first = cnncli.train(TINY, runs_dir="runs").path
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    res = invoke("train", path, "--init-from", "runs/*-tiny:best", "--runs-dir", "new", "-q")
    assert_ok(res)
    (run,) = [p for p in (tmp_path / "new").iterdir() if not p.name.startswith(".")]
    assert yaml.safe_load((run / "config.yaml").read_text())["init_from"]["path"] == str(first.resolve())
    cnncli.train({**TINY, "name": "tiny2"}, runs_dir="runs")
    assert_user_error(invoke("train", path, "--init-from", "runs/*:best", "--runs-dir", "other"),
                      "matches 2 paths", "name one")
