"""MLflow tracking (cnncli.tracking), against a real local store.

Every test that logs shares one SQLite store in a temporary folder (creating its tables
takes seconds), each in its own experiment, and reads back with ``MlflowClient``: the
resolved config as params, every epoch's metrics at ``step=epoch``, the artifacts, the
status; a failed run is FAILED and keeps its folder; an interrupted run resumes in the
same MLflow run; a sweep's trials nest under its parent. Refusals come before any run
folder exists: without MLflow (its import made to fail), and for a server on a closed
port of 127.0.0.1. A store that fails mid-run warns once and the run completes.
"""

from __future__ import annotations

import copy
import json
import signal
import socket
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from typer.testing import CliRunner

import cnncli
from cnncli import experiment, runs, tracking
from cnncli.cli import app
from cnncli.config import load_config
from cnncli.errors import ConfigError
from cnncli.training import Callback
from tests import helpers
from tests.test_faults import CrashAt

# Tiny and fast: 96 training examples in batches of 16 (6 steps an epoch), 3 epochs.
TINY = {**helpers.TINY, "seed": 3, "data": {"source": "synthetic", "num_samples": 120, "num_classes": 2, "noise": 0.05},
        "model": {"input_shape": [8, 8, 3], "layers": [{**helpers.TINY["model"]["layers"][0], "filters": 4},
                                                       *helpers.TINY["model"]["layers"][1:]]},
        "optimizer": {"name": "sgd", "lr": 0.01}, "train": {"epochs": 3, "batch_size": 16}}
EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for the file (its tables are created once) and a client on it."""
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder}/mlflow.db"
    with tracking._mlflow_calls():  # creates the tables, quietly
        client = MlflowClient(tracking_uri=uri)
    return SimpleNamespace(uri=uri, folder=folder, client=client)


def tracked(store, experiment_name: str, **mlflow) -> dict:
    cfg = copy.deepcopy(TINY)
    cfg["tracking"] = {"mlflow": {"uri": store.uri, "experiment": experiment_name, **mlflow}}
    return cfg


def mlflow_run(store, run_dir: Path):
    return store.client.get_run(tracking.read_record(run_dir)["run_id"])


def steps(store, run_id: str, metric: str) -> list[int]:
    return [m.step for m in store.client.get_metric_history(run_id, metric)]


def artifacts(store, run_id: str, path: str | None = None) -> set[str]:
    return {a.path for a in store.client.list_artifacts(run_id, path)}


def closed_port() -> int:
    """A port of 127.0.0.1 where nothing listens (bound once by the system, then let go)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def only_run(runs_dir: Path) -> Path:
    found = [p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(found) == 1, found
    return found[0]


class InterruptAt(Callback):
    """SIGINT in this process after batch ``batch`` of epoch ``epoch`` (what Ctrl-C does)."""

    def __init__(self, epoch: int, batch: int):
        self.at = (epoch, batch)

    def on_batch_end(self, epoch, batch, loss, accuracy, images_per_second):
        if (epoch, batch) == self.at:
            signal.raise_signal(signal.SIGINT)


# ---------------------------------------------------------------------- keys and config
def test_config_keys_become_keys_mlflow_accepts():
    assert tracking.param_key("model.layers[0].filters") == "model.layers.0.filters"
    assert tracking.param_key("loss.class_weight.cats/dogs:big") == "loss.class_weight.cats_dogs_big"
    assert tracking.param_key(".hidden..key.") == "hidden.key"
    long = "train." + "x" * 300
    assert len(tracking.param_key(long)) == 250 and tracking.param_key(long) != tracking.param_key(long + "y")
    assert len(tracking.param_value("v" * 7000)) == 6000
    assert tracking.param_value([8, 8, 3]) == "[8, 8, 3]" and tracking.param_value(None) == "null"
    params = tracking.params_of({"a[0].b": 1, "a.0.b": 2, "tracking.mlflow.uri": "x"})
    assert len(params) == 2 and "tracking.mlflow.uri" not in params  # kept apart; where it logs is left out
    validation = pytest.importorskip("mlflow.utils.validation")
    for key in [*params, tracking.param_key(long), "model.layers.0.filters", "hidden.key"]:
        validation._validate_param_name(key)


def test_the_tracking_section_resolves_its_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("CNNCLI_MLFLOW_URI", raising=False)
    assert "tracking" not in load_config(copy.deepcopy(TINY)).values
    on = load_config(copy.deepcopy(TINY), ["tracking.mlflow.enabled=true"]).values["tracking"]["mlflow"]
    assert on == {"enabled": True, "uri": f"sqlite:///{tmp_path}/mlflow.db", "experiment": "tiny",
                  "artifact_location": None, "log_checkpoints": False, "parent_run_id": None}
    monkeypatch.setenv("CNNCLI_MLFLOW_URI", "sqlite:///elsewhere/m.db")
    cfg = {**copy.deepcopy(TINY), "tracking": {"mlflow": {"experiment": "mine", "log_checkpoints": True}}}
    on = load_config(cfg, ["tracking.mlflow.enabled=true"]).values["tracking"]["mlflow"]  # --track keeps the keys
    assert (on["uri"], on["experiment"], on["log_checkpoints"]) == (f"sqlite:///{tmp_path}/elsewhere/m.db", "mine",
                                                                   True)
    off = load_config({**copy.deepcopy(TINY), "tracking": {"mlflow": False}}).values["tracking"]["mlflow"]
    assert tracking.settings_of({"mlflow": off}) is None
    with pytest.raises(ConfigError, match=r"tracking\.mlflow\.experimnt: unknown key"):
        load_config({**copy.deepcopy(TINY), "tracking": {"mlflow": {"experimnt": "x"}}})


# ---------------------------------------------------------------------- refusals
def test_without_mlflow_a_tracked_config_is_refused_before_anything_runs(tmp_path, monkeypatch):
    for name in ("mlflow", "mlflow.tracking"):  # importing MLflow now fails, as where it is not installed
        monkeypatch.setitem(sys.modules, name, None)
    cfg = {**copy.deepcopy(TINY), "tracking": {"mlflow": {"uri": f"sqlite:///{tmp_path}/m.db"}}}
    with pytest.raises(ConfigError, match=r"not installed: pip install 'cnncli\[mlflow\]'"):
        cnncli.train(cfg, runs_dir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    monkeypatch.setenv("CNNCLI_MLFLOW_URI", f"sqlite:///{tmp_path}/m.db")
    res = CliRunner().invoke(app, ["train", str(path), "--track", "mlflow", "--runs-dir", str(tmp_path / "runs")])
    assert res.exit_code == 2, res.output
    assert res.stderr.splitlines() == [res.stderr.strip()] and "pip install 'cnncli[mlflow]'" in res.stderr
    assert not any((tmp_path / "runs").iterdir()) if (tmp_path / "runs").exists() else True


def test_an_unreachable_server_is_refused_in_one_line_before_anything_runs(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    uri = f"http://127.0.0.1:{closed_port()}"
    cfg = {**copy.deepcopy(TINY), "tracking": {"mlflow": {"uri": uri}}}
    with pytest.raises(ConfigError, match="cannot reach the MLflow server at " + uri):
        cnncli.train(cfg, runs_dir=tmp_path / "runs")
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    monkeypatch.setenv("CNNCLI_MLFLOW_URI", uri)
    res = CliRunner().invoke(app, ["train", str(path), "--track", "mlflow", "--runs-dir", str(tmp_path / "runs")])
    assert res.exit_code == 2, res.output
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: tracking.mlflow.uri: cannot reach"), lines
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_store_whose_folder_cannot_be_made_is_refused(tmp_path):
    pytest.importorskip("mlflow")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cfg = {**copy.deepcopy(TINY), "tracking": {"mlflow": {"uri": f"sqlite:///{blocker}/m.db"}}}
    with pytest.raises(ConfigError, match=r"tracking\.mlflow\.uri: the MLflow store .* cannot be created"):
        cnncli.train(cfg, runs_dir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


# ---------------------------------------------------------------------- runs in MLflow
@pytest.mark.slow
def test_a_run_is_logged_params_metrics_artifacts_and_status(tmp_path, store):
    run = cnncli.train(tracked(store, "completed"), runs_dir=tmp_path / "runs", handle_signals=False)
    logged = mlflow_run(store, run.path)
    assert logged.info.status == "FINISHED" and logged.info.run_name == run.path.name
    values = yaml.safe_load((run.path / "config.yaml").read_text())
    assert logged.data.params == tracking.params_of(experiment.flat_values(values))
    assert logged.data.params["model.layers.0.filters"] == "4" and logged.data.params["optimizer.lr"] == "0.01"
    assert logged.data.tags["cnncli.status"] == "completed"
    assert logged.data.tags["cnncli.run_dir"] == str(run.path.resolve())
    assert logged.data.tags["cnncli.version"] == cnncli.__version__
    for name in EPOCH_METRICS:
        assert steps(store, logged.info.run_id, name) == [1, 2, 3], name
    rows = runs.read_metrics(run.path)
    assert [m.value for m in store.client.get_metric_history(logged.info.run_id, "val_loss")] == \
        [r["val_loss"] for r in rows]
    assert logged.data.metrics["eval_accuracy"] == json.loads((run.path / "eval.json").read_text())["accuracy"]
    got = artifacts(store, logged.info.run_id)
    assert {"summary.md", "curves.png", "eval.json", "config.yaml", "dynamics.jsonl"} <= got
    assert "checkpoints" not in got  # only with log_checkpoints: true
    assert tracking.read_record(run.path)["epochs_logged"] == 3


@pytest.mark.slow
def test_a_failed_run_is_failed_in_mlflow_and_keeps_its_folder(tmp_path, store):
    with pytest.raises(RuntimeError, match="the machine went away"):
        cnncli.train(tracked(store, "failed"), runs_dir=tmp_path / "runs", callbacks=(CrashAt(2, 3),),
                     handle_signals=False)
    folder = only_run(tmp_path / "runs")
    assert runs.read_status(folder)["status"] == "failed"
    assert (folder / "checkpoints" / "last.npz").is_file() and (folder / "metrics.jsonl").is_file()
    logged = mlflow_run(store, folder)
    assert logged.info.status == "FAILED" and logged.data.tags["cnncli.status"] == "failed"
    assert steps(store, logged.info.run_id, "loss") == [1]
    assert "status.json" in artifacts(store, logged.info.run_id)


@pytest.mark.slow
def test_an_interrupted_run_resumes_in_the_same_mlflow_run(tmp_path, store):
    run = cnncli.train(tracked(store, "resumed"), runs_dir=tmp_path / "runs", callbacks=(InterruptAt(2, 2),))
    assert run.status == "interrupted"
    first = mlflow_run(store, run.path)
    assert first.info.status == "KILLED" and first.data.tags["cnncli.status"] == "interrupted"
    assert steps(store, first.info.run_id, "loss") == [1]
    resumed = experiment.resume(run.path, handle_signals=False)
    assert resumed.status == "completed"
    again = mlflow_run(store, run.path)
    assert again.info.run_id == first.info.run_id
    assert again.info.status == "FINISHED" and again.data.tags["cnncli.status"] == "completed"
    assert steps(store, again.info.run_id, "loss") == [1, 2, 3]  # every epoch once
    experiment_id = store.client.get_experiment_by_name("resumed").experiment_id
    assert len(store.client.search_runs([experiment_id])) == 1


@pytest.mark.slow
def test_a_sweep_is_a_parent_run_with_its_trials_nested(tmp_path, store):
    """What cnncli.sweep does: the parent in the sweep's process, each trial's config
    carrying the parent's id into the process that trains it."""
    folder = tmp_path / "sweeps" / "lr"
    folder.mkdir(parents=True)
    base = load_config(tracked(store, "sweep", log_checkpoints=True)).values
    spec = {"base": "tiny.yaml", "name": "lr", "grid": {"optimizer.lr": [0.01, 0.1]}, "metric": "val_accuracy",
            "trials": [{"index": 0, "overrides": {"optimizer.lr": 0.01}},
                       {"index": 1, "overrides": {"optimizer.lr": 0.1}}], "base_config": TINY}
    parent = tracking.start_parent(folder, spec, base["tracking"])
    for i, lr in enumerate((0.01, 0.1)):
        values = load_config(base, [f"optimizer.lr={lr}"]).values
        values["name"] = f"trial-{i:03d}"
        cnncli.train(tracking.trial_tracking(values, parent), runs_dir=folder, name=values["name"],
                     exact_name=True, handle_signals=False)
    (folder / "leaderboard.md").write_text("# Sweep lr\n")
    assert tracking.start_parent(folder, spec, base["tracking"]) == parent  # a resumed sweep: the same run
    tracking.finish_parent(folder, parent, base["tracking"], "completed", metrics={"best_val_accuracy": 0.5})
    experiment_id = store.client.get_experiment_by_name("sweep").experiment_id
    children = store.client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted(c.info.run_name for c in children) == ["trial-000", "trial-001"]
    assert {c.info.status for c in children} == {"FINISHED"}
    assert sorted(c.data.params["optimizer.lr"] for c in children) == ["0.01", "0.1"]
    assert artifacts(store, children[0].info.run_id, "checkpoints") == {"checkpoints/best.npz",
                                                                        "checkpoints/last.npz"}
    top = store.client.get_run(parent)
    assert top.info.status == "FINISHED" and top.info.run_name == "lr"
    assert top.data.params["grid.optimizer.lr"] == "[0.01, 0.1]" and top.data.params["trials"] == "2"
    assert top.data.metrics["best_val_accuracy"] == 0.5 and "leaderboard.md" in artifacts(store, parent)


@pytest.mark.slow
def test_a_store_that_fails_mid_run_warns_once_and_the_run_completes(tmp_path, store, monkeypatch):
    from mlflow.tracking import MlflowClient

    real = MlflowClient.log_batch

    def failing_from_epoch_2(self, run_id, metrics=(), params=(), tags=(), *args, **kwargs):
        if any(m.step >= 2 for m in metrics or ()):
            raise ConnectionError("the tracking server went away")
        return real(self, run_id, metrics, params, tags, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", failing_from_epoch_2)
    path = tmp_path / "tiny.yaml"
    cfg = tracked(store, "failing")
    path.write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(app, ["train", str(path), "--track", "mlflow", "--runs-dir", str(tmp_path / "runs"),
                                   "-q"])
    assert res.exit_code == 0, res.output
    warnings = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "logging epoch 2 failed" in warnings[0] and "server went away" in warnings[0]
    folder = only_run(tmp_path / "runs")
    assert runs.read_status(folder)["status"] == "completed"
    assert [r["epoch"] for r in runs.read_metrics(folder)] == [1, 2, 3]
    assert {"eval.json", "curves.png", "summary.md"} <= {p.name for p in folder.iterdir()}
    record = tracking.read_record(folder)
    assert record["epochs_logged"] == 1 and "server went away" in record["stopped"]
    logged = store.client.get_run(record["run_id"])
    assert steps(store, logged.info.run_id, "loss") == [1]
    assert logged.info.status == "RUNNING"  # tracking stopped trying: MLflow never heard the end


@pytest.mark.slow
def test_a_sampled_sweep_is_a_parent_run_with_each_trial_nested_pruned_ones_killed(store, tmp_path):
    """A tpe sweep with a pruner, two worker processes, whose base config tracks: one
    parent run; one nested run per trial (found by mlflow.parentRunId), FINISHED or,
    for a pruned trial, KILLED."""
    pytest.importorskip("optuna")
    base = tmp_path / "base.yaml"
    cfg = tracked(store, "nested-sweep")
    cfg["train"] = {"epochs": 3, "batch_size": 16}
    base.write_text(yaml.safe_dump(cfg))
    spec = tmp_path / "search.yaml"
    spec.write_text(yaml.safe_dump({"base": str(base), "name": "nested", "search": "tpe", "n_trials": 5,
                                    "pruner": {"name": "median", "n_startup_trials": 1},
                                    "random": {"optimizer.lr": {"low": 0.0001, "high": 1.0, "log": True}}}))
    res = CliRunner().invoke(app, ["sweep", str(spec), "--jobs", "2", "--runs-dir", str(tmp_path / "runs")])
    assert res.exit_code == 0, res.stdout + res.stderr
    (folder,) = (tmp_path / "runs" / "sweeps").iterdir()
    records = json.loads((folder / "trials.json").read_text())
    experiment = store.client.get_experiment_by_name("nested-sweep")
    found = store.client.search_runs([experiment.experiment_id])
    parents = [r for r in found if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in found if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 5 and {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    by_name = {c.info.run_name: c for c in children}
    for record in records.values():
        expected = {"completed": "FINISHED", "pruned": "KILLED"}[record["status"]]
        assert by_name[record["path"]].info.status == expected, record


def test_abandon_ends_a_thrown_away_runs_mlflow_run_as_killed(store, tmp_path):
    """A sweep trial that was running when its sweep died runs again under a new number;
    its old MLflow run must not stay RUNNING."""
    with pytest.raises(RuntimeError):
        cnncli.train(tracked(store, "abandoned"), runs_dir=tmp_path / "runs", callbacks=(CrashAt(2, 1),),
                     handle_signals=False)
    folder = only_run(tmp_path / "runs")
    run_id = tracking.read_record(folder)["run_id"]
    store.client.update_run(run_id, status="RUNNING")  # as a SIGKILL leaves it
    tracking.abandon(folder)
    assert store.client.get_run(run_id).info.status == "KILLED"
    tracking.abandon(tmp_path)  # a folder that logged nothing: nothing happens


def test_train_report_true_adds_the_page_to_the_mlflow_run_and_a_failure_only_warns(store, tmp_path, monkeypatch):
    cfg = tracked(store, "with-report")
    cfg["train"] = {**cfg["train"], "report": True}
    path = tmp_path / "reported.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(app, ["train", str(path), "--runs-dir", str(tmp_path / "runs"), "-q"])
    assert res.exit_code == 0, res.stdout + res.stderr
    run_dir = only_run(tmp_path / "runs")
    assert "report.html" in artifacts(store, tracking.read_record(run_dir)["run_id"])
    warnings = []

    def refuse(*args, **kwargs):
        raise RuntimeError("the store went away")

    from mlflow.tracking import MlflowClient

    monkeypatch.setattr(MlflowClient, "log_artifact", refuse)
    tracking.log_files(run_dir, [run_dir / "report.html"], on_warning=warnings.append)
    assert len(warnings) == 1 and "adding report.html failed (RuntimeError: the store went away)" in warnings[0]
    assert warnings[0].endswith("the run folder has them")
