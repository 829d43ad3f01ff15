"""One meaning for each word (issue 17): "best" is the monitored metric's best epoch
everywhere, epochs are numbered from 1 everywhere, and every evaluation names its split.
Each test failed on the code before its fix."""

from __future__ import annotations

import json

import numpy as np

import cnncli
from cnncli import runs
from tests.helpers import TINY, assert_ok, assert_user_error, invoke


def rewrite_metrics(run, figures):
    """Give a finished run the (val_loss, val_accuracy) of each epoch in ``figures``."""
    rows = runs.read_metrics(run)[:len(figures)]
    with open(run / "metrics.jsonl", "w") as fh:
        for row, (val_loss, val_accuracy) in zip(rows, figures):
            fh.write(json.dumps({**row, "val_loss": val_loss, "val_accuracy": val_accuracy}) + "\n")


def test_runs_and_compare_show_the_monitored_best_epoch_not_each_columns_own_best(tmp_path):
    first = cnncli.train({**TINY, "train": {"epochs": 3, "batch_size": 32}}, runs_dir=tmp_path, name="a").path
    second = cnncli.train({**TINY, "train": {"epochs": 3, "batch_size": 32}}, runs_dir=tmp_path, name="b").path
    # Epoch 2 has the lowest val_loss (what training monitors); epoch 3 the highest accuracy.
    figures = [(0.50, 0.90), (0.40, 0.88), (0.45, 0.95)]
    for run in (first, second):
        rewrite_metrics(run, figures)
        status = runs.read_status(run)
        runs.write_status(run, "completed", **{**status, "best_epoch": 2, "monitor": "val_loss"})
    # A run still going has no best_epoch in its status: read off its metrics by the same rule.
    runs.write_status(second, "running", epochs_completed=3, step=21)
    assert runs.best_epoch(first) == ("val_loss", runs.read_metrics(first)[1])
    assert runs.best_epoch(second)[1]["epoch"] == 2
    res = invoke("runs", tmp_path)
    assert_ok(res)
    for line in (l for l in res.stdout.splitlines() if first.name in l or second.name in l):
        assert "2 (val_loss)" in line and "0.8800" in line and "0.4000" in line, line
        assert "0.9500" not in line, line
    assert "best epoch (by)" in " ".join(res.stdout.split())
    compared = invoke("compare", first, second)
    assert_ok(compared)
    assert "0.9500" not in compared.stdout and "2 (val_loss)" in compared.stdout


def test_status_numbers_epochs_as_the_terminal_does():
    assert runs.epoch_fields(2, 5) == {"epochs_completed": 2, "current_epoch": 3, "batch": 5}
    assert runs.epoch_fields(2, 0) == {"epochs_completed": 2, "batch": 0}
    assert runs.epochs_completed({"epoch": 4}) == 4  # a folder written before the name
    assert runs.epochs_completed({"epochs_completed": 3}) == 3


def npz_run(tmp_path, *, test_split: bool):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "train.npz", x=rng.random((60, 8, 8, 3)), y=rng.integers(0, 2, 60))
    data = {"source": "npz", "path": str(tmp_path / "train.npz")}
    if test_split:
        np.savez(tmp_path / "test.npz", x=rng.random((24, 8, 8, 3)), y=rng.integers(0, 2, 24))
        data["test_path"] = str(tmp_path / "test.npz")
    return cnncli.train({**TINY, "data": data}, runs_dir=tmp_path / "runs").path


def test_eval_scores_the_test_split_by_default_and_any_split_on_request(tmp_path):
    run = npz_run(tmp_path, test_split=True)
    res = invoke("eval", run)
    assert_ok(res)
    assert "on the test split: 24 examples" in res.stdout
    assert json.loads((run / "eval-best.json").read_text())["data"] == "test"
    res = invoke("eval", run, "--split", "validation")
    assert_ok(res)
    assert "on the validation split: 12 examples" in res.stdout
    assert "optimistic" in res.stdout  # the split that chose the best checkpoint says so
    assert json.loads((run / "eval-best-validation.json").read_text())["data"] == "validation"
    res = invoke("eval", run, "--split", "train")
    assert_ok(res)
    assert "on the train split: 48 examples" in res.stdout
    assert (run / "eval-best-train.json").is_file()


def test_eval_split_is_checked(tmp_path):
    run = npz_run(tmp_path, test_split=False)
    res = invoke("eval", run)
    assert_ok(res)
    assert "on the validation split" in res.stdout
    assert_user_error(invoke("eval", run, "--split", "test"), "no test split", "--split validation")
    assert_user_error(invoke("eval", run, "--split", "holdout"), "--split", "test, validation, train")
    assert_user_error(invoke("eval", run, "--split", "validation", "--data-path", tmp_path / "train.npz"),
                      "not both")


def test_a_running_runs_best_epoch_is_the_one_training_chose_min_delta_included(tmp_path):
    """While a run trains, its status says the best epoch so far as fit chose it: with a
    min_delta no later epoch beats the first, however its val_loss falls."""
    from cnncli.training import Callback

    seen = []

    class Look(Callback):  # runs after the run writer, which writes the epoch's status first
        def on_epoch_end(self, metrics, improved, state):
            run = next(p for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith("."))
            seen.append(runs.best_epoch(run))

    cfg = {**TINY, "train": {"epochs": 4, "batch_size": 32,
                             "early_stopping": {"monitor": "val_loss", "patience": 10, "min_delta": 100.0}}}
    run = cnncli.train(cfg, runs_dir=tmp_path, callbacks=(Look(),)).path
    rows = runs.read_metrics(run)
    assert min(rows, key=lambda r: r["val_loss"])["epoch"] != 1  # the metrics alone would name another epoch
    assert [(monitor, row["epoch"]) for monitor, row in seen] == [("val_loss", 1)] * 4
    assert runs.read_status(run)["best_epoch"] == 1
