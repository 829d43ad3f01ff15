"""Experiments end to end: reproducible runs, learning, early stopping, the Run object, failures.

Runs are written under ``tmp_path`` only. The end-to-end test on the real Caltech-101
images is marked ``slow`` and skips where ``../shared/datasets`` does not have them.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import cnncli
from cnncli import runs as runs_mod
from cnncli.experiment import Run, evaluate_run
from cnncli.training import Callback, EpochMetrics

REPO = Path(__file__).resolve().parents[1]
CALTECH = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "caltech101-motorbikes-airplanes"
TIMING = {"seconds", "images_per_second"}

TINY = {
    "name": "tiny",
    "seed": 3,
    "data": {"source": "synthetic", "num_samples": 200, "num_classes": 2, "noise": 0.05},
    "model": {
        "input_shape": [8, 8, 3],
        "layers": [
            {"type": "conv2d", "filters": 4, "kernel_size": 3, "padding": "same", "activation": "relu"},
            {"type": "batch_norm"},
            {"type": "max_pool2d", "pool_size": 2},
            {"type": "flatten"},
            {"type": "dropout", "rate": 0.3},
            {"type": "dense", "units": 2, "activation": "softmax"},
        ],
    },
    "optimizer": {"name": "adam", "lr": 0.01},
    "train": {"epochs": 3, "batch_size": 32, "shuffle": True},
}


def tiny(**train) -> dict:
    cfg = copy.deepcopy(TINY)
    cfg["train"].update(train)
    return cfg


def metrics_without_timing(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in runs_mod.read_metrics(run_dir)]


def checkpoint_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files if k != "meta"}


# -------------------------------------------------------------------- reproducibility
def test_same_config_and_seed_give_the_same_run(tmp_path):
    a = cnncli.train(tiny(), runs_dir=tmp_path / "a")
    b = cnncli.train(tiny(), runs_dir=tmp_path / "b")
    rows_a, rows_b = metrics_without_timing(a.path), metrics_without_timing(b.path)
    assert len(rows_a) == 3 and rows_a == rows_b
    for name in ("last.npz", "best.npz"):
        arr_a = checkpoint_arrays(a.path / "checkpoints" / name)
        arr_b = checkpoint_arrays(b.path / "checkpoints" / name)
        assert set(arr_a) == set(arr_b) and any(k.startswith("optim/") for k in arr_a)
        for key in arr_a:
            assert arr_a[key].dtype == arr_b[key].dtype and arr_a[key].tobytes() == arr_b[key].tobytes(), key
    meta_a = runs_mod.load_checkpoint(a.path / "checkpoints" / "last.npz")[2]
    meta_b = runs_mod.load_checkpoint(b.path / "checkpoints" / "last.npz")[2]
    for key in ("epoch", "step", "shuffle_rng", "layer_rngs", "checksum"):
        assert meta_a.get(key) == meta_b.get(key), key
    ev_a = json.loads((a.path / "eval.json").read_text())
    ev_b = json.loads((b.path / "eval.json").read_text())
    assert ev_a == ev_b
    assert (a.path / "config.yaml").read_text() == (b.path / "config.yaml").read_text()


def test_another_seed_gives_another_run(tmp_path):
    a = cnncli.train(tiny(epochs=1), runs_dir=tmp_path)
    other = tiny(epochs=1)
    other["seed"] = 4
    b = cnncli.train(other, runs_dir=tmp_path)
    assert a.path != b.path
    assert metrics_without_timing(a.path) != metrics_without_timing(b.path)
    ka = checkpoint_arrays(a.path / "checkpoints" / "last.npz")["param/layers.0.kernel"]
    kb = checkpoint_arrays(b.path / "checkpoints" / "last.npz")["param/layers.0.kernel"]
    assert not np.array_equal(ka, kb)


# ----------------------------------------------------------------------------- learning
def test_quickstart_learns(tmp_path):
    run = cnncli.train(REPO / "configs" / "quickstart.yaml", runs_dir=tmp_path)
    assert run.status == "completed"
    assert run.best.val_accuracy > 0.6  # 3 classes: chance is 1/3
    assert run.evaluation["accuracy"] > 0.6
    assert run.history[-1].loss < run.history[0].loss


@pytest.mark.slow
@pytest.mark.skipif(not (CALTECH / "Motorbikes").is_dir(), reason=f"{CALTECH} is not there")
def test_paper_network_on_caltech_end_to_end(tmp_path):
    runs = tmp_path / "runs"
    added = CliRunner().invoke(app_(), ["data", "add", "caltech101", str(CALTECH)])  # offline: the shared copy
    assert added.exit_code == 0, added.stdout
    res = CliRunner().invoke(app_(), [
        "train", str(REPO / "configs" / "paper.yaml"), "--runs-dir", str(runs), "--quiet",
        "--set", "optimizer.name=adam", "--set", "optimizer.lr=0.001",
        "--set", "loss.reduction=mean", "--set", "train.epochs=3"])
    assert res.exit_code == 0, (res.stdout, res.stderr, res.exc_info)
    (run,) = [p for p in runs.iterdir() if not p.name.startswith(".")]
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "completed" and status["epochs_completed"] == 3
    data = json.loads((run / "data.json").read_text())
    assert data["class_names"] == ["Motorbikes", "airplanes"]
    assert data["train"] + data["validation"] == 1598 and data["skipped"] == []
    ev = json.loads((run / "eval.json").read_text())
    assert ev["data"] == "validation" and ev["examples"] == 320
    assert ev["accuracy"] >= 0.90, ev
    assert min(ev["recall"]) >= 0.8
    # The run answers questions about images it has.
    images = [str(p) for cls in ("Motorbikes", "airplanes") for p in sorted((CALTECH / cls).iterdir())[:10]]
    answers = cnncli.predict(run, images)
    correct = sum(a["class"] == Path(a["image"]).parent.name for a in answers)
    assert correct >= 16, answers


def app_():
    from cnncli.cli import app

    return app


# ------------------------------------------------------------------------ early stopping
def test_early_stopping_stops_and_restores_the_best(tmp_path):
    # min_delta 100: no epoch after the first can count as an improvement.
    cfg = tiny(epochs=10, early_stopping={"monitor": "val_loss", "patience": 1, "min_delta": 100,
                                          "restore_best": True})
    run = cnncli.train(cfg, runs_dir=tmp_path)
    assert run.result.stopped_early
    assert [m.epoch for m in run.history] == [1, 2]  # well before the limit of 10
    assert run.best.epoch == 1 and run.result.best_epoch == 1
    status = json.loads((run.path / "status.json").read_text())
    assert status["status"] == "completed" and status["stopped_early"] is True
    assert status["best_epoch"] == 1 and status["epochs_completed"] == 2
    assert runs_mod.load_checkpoint(run.path / "checkpoints" / "best.npz")[2]["epoch"] == 1
    assert runs_mod.load_checkpoint(run.path / "checkpoints" / "last.npz")[2]["epoch"] == 2
    best = checkpoint_arrays(run.path / "checkpoints" / "best.npz")
    last = checkpoint_arrays(run.path / "checkpoints" / "last.npz")
    assert not np.array_equal(best["param/layers.0.kernel"], last["param/layers.0.kernel"])
    # The run's own evaluation used the restored (best) weights, not the last ones.
    trained_eval = json.loads((run.path / "eval.json").read_text())
    assert trained_eval["checkpoint"] == "best"
    of_best = evaluate_run(run.path, checkpoint="best")
    of_last = evaluate_run(run.path, checkpoint="last")
    assert trained_eval["loss"] == pytest.approx(of_best["loss"], rel=1e-6)
    assert trained_eval["confusion_matrix"] == of_best["confusion_matrix"]
    assert abs(of_best["loss"] - of_last["loss"]) > 1e-6
    assert trained_eval["loss"] == pytest.approx(run.history[0].val_loss, rel=1e-6)


def test_early_stopping_without_restore_keeps_the_final_weights(tmp_path):
    cfg = tiny(epochs=10, early_stopping={"patience": 1, "min_delta": 100, "restore_best": False})
    run = cnncli.train(cfg, runs_dir=tmp_path)
    assert len(run.history) == 2
    trained_eval = json.loads((run.path / "eval.json").read_text())
    assert trained_eval["checkpoint"] != "best"
    assert trained_eval["loss"] == pytest.approx(evaluate_run(run.path, checkpoint="last")["loss"], rel=1e-6)


def test_without_early_stopping_every_epoch_runs(tmp_path):
    run = cnncli.train(tiny(epochs=3), runs_dir=tmp_path)
    assert not run.result.stopped_early and len(run.history) == 3


# ----------------------------------------------------------------------------- the Run
def test_train_returns_a_run(tmp_path):
    run = cnncli.train(tiny(epochs=2), runs_dir=tmp_path / "runs", name="api test")
    assert isinstance(run, Run)
    assert run.path.is_dir() and run.path.parent == tmp_path / "runs"
    assert run.path.name.endswith("-api-test")
    assert run.status == "completed"
    assert [m.epoch for m in run.history] == [1, 2]
    assert all(isinstance(m, EpochMetrics) for m in run.history)
    assert isinstance(run.best, EpochMetrics) and run.best.epoch == run.result.best_epoch
    assert run.best.val_loss == min(m.val_loss for m in run.history)
    assert run.config["train"]["epochs"] == 2
    assert run.evaluation["examples"] == 40
    rows = runs_mod.read_metrics(run.path)
    assert [r["val_loss"] for r in rows] == [m.val_loss for m in run.history]


def test_train_from_a_file_with_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny()))
    run = cnncli.train(path, overrides=["train.epochs=1", "model.layers[0].filters=3"], runs_dir=tmp_path / "r")
    saved = yaml.safe_load((run.path / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 1 and saved["model"]["layers"][0]["filters"] == 3
    assert len(run.history) == 1


def test_two_runs_in_the_same_second_get_their_own_folders(tmp_path):
    made = [runs_mod.create_run_dir(tmp_path, "same") for _ in range(3)]
    assert len(set(made)) == 3
    assert all(p.is_dir() and (p / "checkpoints").is_dir() for p in made)


def test_latest_run_and_resolve(tmp_path):
    run = cnncli.train(tiny(epochs=1), runs_dir=tmp_path)
    assert runs_mod.latest_run(tmp_path) == run.path
    assert runs_mod.resolve_run_dir(None, tmp_path) == run.path
    (tmp_path / "99999999-999999-not-a-run").mkdir()  # no config.yaml and status.json: ignored
    assert runs_mod.latest_run(tmp_path) == run.path


# ------------------------------------------------------------------------------ failures
class Boom(Callback):
    """Raises ``error`` at the second batch of epoch ``at_epoch``."""

    def __init__(self, error: BaseException, at_epoch: int = 2):
        self.error = error
        self.at_epoch = at_epoch

    def on_batch_end(self, epoch, batch, loss, accuracy, images_per_second):
        if epoch == self.at_epoch and batch == 2:
            raise self.error


def only_run(runs_dir: Path) -> Path:
    (run,) = [p for p in runs_dir.iterdir() if not p.name.startswith(".")]
    return run


def test_a_failing_run_says_failed_with_the_reason(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        cnncli.train(tiny(), runs_dir=tmp_path, callbacks=(Boom(RuntimeError("boom")),))
    run = only_run(tmp_path)
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "failed"
    assert "RuntimeError" in status["reason"] and "boom" in status["reason"]
    assert status["epochs_completed"] == 1
    # What was done is kept: the first epoch's metrics and checkpoint.
    assert [r["epoch"] for r in runs_mod.read_metrics(run)] == [1]
    assert runs_mod.load_checkpoint(run / "checkpoints" / "last.npz")[2]["epoch"] == 1


def test_a_failing_engine_step_says_failed(tmp_path, monkeypatch):
    from cnncli.nn.network import Network

    calls = {"n": 0}
    original = Network.loss_and_gradients

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise FloatingPointError("engine exploded")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Network, "loss_and_gradients", flaky)  # train_step goes through it too
    with pytest.raises(FloatingPointError):
        cnncli.train(tiny(), runs_dir=tmp_path)
    status = json.loads((only_run(tmp_path) / "status.json").read_text())
    assert status["status"] == "failed" and "engine exploded" in status["reason"]


def test_an_interrupted_run_says_interrupted(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        cnncli.train(tiny(), runs_dir=tmp_path, callbacks=(Boom(KeyboardInterrupt(), at_epoch=2),))
    run = only_run(tmp_path)
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "interrupted" and status["reason"]
    assert [r["epoch"] for r in runs_mod.read_metrics(run)] == [1]


def test_a_config_error_creates_no_run_folder(tmp_path):
    cfg = tiny()
    cfg["train"]["epochs"] = 0
    from cnncli.errors import ConfigError

    with pytest.raises(ConfigError, match="train.epochs"):
        cnncli.train(cfg, runs_dir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_a_data_error_creates_no_run_folder(tmp_path):
    from cnncli.errors import DataError

    np.savez(tmp_path / "d.npz", x=np.zeros((20, 8, 8, 3), np.uint8), y=np.arange(20) % 7)
    cfg = tiny()
    cfg["data"] = {"source": "npz", "path": str(tmp_path / "d.npz")}
    with pytest.raises(DataError, match="7 classes"):
        cnncli.train(cfg, runs_dir=tmp_path / "runs")
    assert [p for p in (tmp_path / "runs").glob("*") if not p.name.startswith(".")] == []


def test_a_failure_after_the_last_epoch_still_says_failed(tmp_path, monkeypatch):
    import cnncli.experiment as experiment

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(experiment, "write_curves", broken)
    with pytest.raises(OSError):
        cnncli.train(tiny(epochs=1), runs_dir=tmp_path)
    status = json.loads((only_run(tmp_path) / "status.json").read_text())
    assert status["status"] == "failed" and "disk full" in status["reason"]


# ----------------------------------------------------------------- evaluation reports
def test_confusion_matrix_and_scores():
    from cnncli.metrics import confusion_matrix, per_class_scores

    m = confusion_matrix(np.array([0, 0, 1, 1, 1, 2]), np.array([0, 1, 1, 1, 0, 2]), 3)
    assert m.tolist() == [[1, 1, 0], [1, 2, 0], [0, 0, 1]]
    s = per_class_scores(m)
    assert s["precision"] == pytest.approx([0.5, 2 / 3, 1.0])
    assert s["recall"] == pytest.approx([0.5, 2 / 3, 1.0])
    assert s["support"] == [2, 3, 1]
    # A class never predicted and never present: 0, not NaN.
    s = per_class_scores(confusion_matrix(np.array([0, 1]), np.array([0, 1]), 3))
    assert s["precision"][2] == 0 and s["f1"][2] == 0
    # A network may have more outputs than the data has classes.
    assert confusion_matrix(np.array([0, 1]), np.array([2, 1]), 2).tolist() == [[0, 0, 1], [0, 1, 0], [0, 0, 0]]


def test_more_outputs_than_classes_trains_and_evaluates(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 256, (60, 4, 4, 3), dtype=np.uint8), y=np.arange(60) % 2)
    predicted_beyond = 0
    for seed in range(1, 6):
        cfg = {"seed": seed, "data": {"source": "npz", "path": str(tmp_path / "d.npz")},
               "model": {"input_shape": [4, 4, 3],
                         "layers": [{"type": "flatten"}, {"type": "dense", "units": 3, "activation": "softmax"}]},
               "optimizer": {"name": "sgd", "lr": 1e-7}, "train": {"epochs": 1}}
        run = cnncli.train(cfg, runs_dir=tmp_path / "runs")
        assert run.status == "completed"
        m = np.array(run.evaluation["confusion_matrix"])
        assert m.sum() == 12 and np.trace(m) / 12 == pytest.approx(run.evaluation["accuracy"])
        predicted_beyond += int(m.shape[1] > 2 and m[:, 2:].sum() > 0)
    assert predicted_beyond > 0  # the case this test is about did occur


def test_one_optimizer_update_per_mini_batch(tmp_path):
    """ERRATA 6: t counts mini-batches, so after E epochs step = E * ceil(n / batch_size)."""
    cfg = {**TINY, "train": {"epochs": 3, "batch_size": 24, "validation_split": 0.25}}
    run = cnncli.train(cfg, runs_dir=tmp_path, handle_signals=False)
    rows = runs_mod.read_metrics(run.path)
    n_train = 200 - 50  # 25% of 200 held out, stratified over 2 balanced classes
    per_epoch = -(-n_train // 24)
    assert [r["step"] for r in rows] == [per_epoch * e for e in (1, 2, 3)]
