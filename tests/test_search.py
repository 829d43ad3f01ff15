"""Sampled sweeps (``search: tpe | cmaes | qmc``): Optuna's study in ``study.db``, pruned
trials, resume after a kill, and the sweep file's bad input."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import assert_ok, assert_user_error, invoke, only_sweep, sweep_so_far, wait_for

optuna = pytest.importorskip("optuna")

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["train.epochs=4", "data.num_samples=300"]


def sweep_file(tmp_path: Path, **extra) -> Path:
    spec = {"base": str(ROOT / "configs" / "quickstart.yaml"), "name": "tpe", "search": "tpe", "n_trials": 6,
            "overrides": QUICK, "grid": {"optimizer.name": ["sgd", "adam"]},
            "random": {"optimizer.lr": {"low": 0.0003, "high": 0.3, "log": True}}, **extra}
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def study_states(folder: Path) -> dict[int, str]:
    with sqlite3.connect(folder / "study.db") as db:
        return dict(db.execute("select number, state from trials"))


def test_a_tpe_search_with_the_median_pruner_prunes_and_keeps_the_study(tmp_path):
    path = sweep_file(tmp_path, pruner={"name": "median", "n_startup_trials": 2, "n_warmup_steps": 1})
    res = invoke("sweep", path, "--runs-dir", tmp_path / "runs")
    assert_ok(res)
    folder = only_sweep(tmp_path / "runs")
    records = json.loads((folder / "trials.json").read_text())
    states = study_states(folder)
    assert len(records) == 6 and {r["status"] for r in records.values()} == {"completed", "pruned"}
    for number, record in records.items():
        assert states[int(number)] == {"completed": "COMPLETE", "pruned": "PRUNED"}[record["status"]]
        run = folder / record["path"]
        status = json.loads((run / "status.json").read_text())
        assert status["status"] == record["status"]
        assert (run / "checkpoints" / "last.npz").is_file()  # a pruned trial keeps what it finished
        if record["status"] == "pruned":
            assert record["metrics"]["epochs"] < 4 and status["epochs_completed"] == record["metrics"]["epochs"]
    # the leaderboard shows pruned trials and the epoch they reached
    assert "pruned" in res.stdout and "pruned" in (folder / "leaderboard.md").read_text()
    # the sampled values are in sweep.yaml and results.csv
    spec = yaml.safe_load((folder / "sweep.yaml").read_text())
    assert len(spec["trials"]) == 6 and all("optimizer.lr" in t["overrides"] for t in spec["trials"])
    lrs = [t["overrides"]["optimizer.lr"] for t in spec["trials"]]
    assert all(0.0003 <= lr <= 0.3 for lr in lrs) and len(set(lrs)) == 6


def test_dry_run_prints_the_space_and_runs_nothing(tmp_path):
    res = invoke("sweep", sweep_file(tmp_path, pruner="hyperband"), "--dry-run", "--runs-dir", tmp_path / "runs")
    assert_ok(res)
    assert "optimizer.name: one of [\"sgd\", \"adam\"]" in res.stdout
    assert "optimizer.lr: float in [0.0003, 0.3], log scale" in res.stdout
    assert "search tpe: 6 trials, sampled; pruner hyperband" in res.stdout
    grid = invoke("sweep", ROOT / "configs" / "quickstart.yaml", "--grid", "optimizer.lr=0.1,0.01", "--grid",
                  "train.batch_size=16,32,64", "--dry-run")
    assert_ok(grid)
    assert "search grid: 6 trials" in grid.stdout
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("extra, phrases", [
    ({"search": "bayes"}, ("search", "expected one of grid, random, tpe, cmaes, qmc")),
    ({"n_trials": None}, ("n_trials", "a positive int")),
    ({"pruner": "medain"}, ("pruner.name", "did you mean 'median'")),
    ({"pruner": {"name": "median", "patience": 3}}, ("pruner.patience", "unknown key")),
    ({"random": {"optimizer.lr": {"low": 0.1, "high": 0.1}}}, ("random.optimizer.lr", "low < high")),
    ({"random": {"optimizer.lr": {"low": 0.0, "high": 0.1, "log": True}}}, ("random.optimizer.lr.low", "> 0")),
    ({"search": "grid", "n_trials": 4, "random": {}}, ("search", "tpe, cmaes or qmc for n_trials and pruner")),
])
def test_bad_search_settings_are_refused_in_one_line_before_anything_runs(tmp_path, extra, phrases):
    assert_user_error(invoke("sweep", sweep_file(tmp_path, **extra), "--runs-dir", tmp_path / "runs"), *phrases)
    assert not (tmp_path / "runs").exists()


def test_a_key_given_twice_to_grid_is_refused(tmp_path):
    res = invoke("sweep", ROOT / "configs" / "quickstart.yaml", "--grid", "optimizer.lr=0.1", "--grid",
                 "optimizer.lr=0.2", "--runs-dir", tmp_path / "runs")
    assert_user_error(res, "--grid optimizer.lr", "given twice")
    assert not (tmp_path / "runs").exists()


def test_resume_refuses_a_study_of_another_sweep_and_a_corrupt_database(tmp_path):
    path = sweep_file(tmp_path, n_trials=1)
    assert_ok(invoke("sweep", path, "--runs-dir", tmp_path / "a"))
    assert_ok(invoke("sweep", path, "--runs-dir", tmp_path / "b"))
    a, b = only_sweep(tmp_path / "a"), only_sweep(tmp_path / "b")
    (a / "study.db").write_bytes((b / "study.db").read_bytes())
    assert_user_error(invoke("sweep", "--resume", a), "study.db", "another sweep")
    (a / "study.db").write_bytes(b"this is not a database" * 100)
    assert_user_error(invoke("sweep", "--resume", a), "study.db", "not a readable study database")


@pytest.mark.slow
def test_a_killed_search_resumes_from_its_study_in_two_worker_processes(tmp_path):
    """SIGKILL to the whole sweep (driver and workers) after its first finished trial;
    the resume keeps the finished trials, runs the interrupted ones' values again and
    finishes n_trials."""
    path = sweep_file(tmp_path, n_trials=6, pruner={"name": "median", "n_startup_trials": 2})
    runs_dir = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "cnncli.cli", "sweep", str(path), "--jobs", "2", "--runs-dir",
                             str(runs_dir)], cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    def a_trial_finished():  # the sweep's own record says so
        so_far = sweep_so_far(runs_dir)
        return so_far is not None and any(r["status"] in ("completed", "pruned") for r in so_far[1].values())

    try:
        wait_for(a_trial_finished, 120, "a finished trial", proc)
    finally:
        with contextlib.suppress(ProcessLookupError):  # gone already, when wait_for saw the sweep exit
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    folder = only_sweep(runs_dir)
    before = json.loads((folder / "trials.json").read_text())
    finished = {k: v for k, v in before.items() if v["status"] in ("completed", "pruned")}
    assert finished and any(v["status"] == "running" for v in before.values())
    res = invoke("sweep", "--resume", folder, "--jobs", "2")
    assert res.exit_code == 0, (res.stdout, res.stderr, (folder / "trials.json").read_text())
    after = json.loads((folder / "trials.json").read_text())
    for k, v in finished.items():
        assert after[k] == v  # finished trials kept as they were
    done = [v for v in after.values() if v["status"] in ("completed", "pruned", "failed")]
    assert len(done) == 6
    requeued = [k for k, v in after.items() if v["status"] == "requeued"]
    assert requeued and "was running when the sweep stopped" in res.stdout
    states = study_states(folder)
    assert sorted(s for s in states.values() if s != "FAIL") == sorted(
        {"completed": "COMPLETE", "pruned": "PRUNED"}[v["status"]] for v in done)
    spec = yaml.safe_load((folder / "sweep.yaml").read_text())
    values = [json.dumps(t["overrides"], sort_keys=True) for t in spec["trials"]]
    for k in requeued:  # an interrupted trial's values ran again as a later trial (unless it was
        if len(json.loads(values[int(k)])) == 2:  # killed while its values were being drawn)
            assert values.count(values[int(k)]) >= 2


@pytest.mark.slow
def test_a_pruned_search_on_dask_workers(tmp_path):
    distributed = pytest.importorskip("distributed")
    path = sweep_file(tmp_path, n_trials=4, pruner={"name": "median", "n_startup_trials": 1})
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=":0") as cluster:
        done = subprocess.run([sys.executable, "-m", "cnncli.cli", "sweep", str(path), "--executor", "dask",
                               "--address", cluster.scheduler_address, "--runs-dir", str(tmp_path / "runs")],
                              cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    folder = only_sweep(tmp_path / "runs")
    records = json.loads((folder / "trials.json").read_text())
    assert len(records) == 4 and all(r["status"] in ("completed", "pruned") for r in records.values())
    for r in records.values():  # came back from the workers, pruned ones too
        assert (folder / r["path"] / "metrics.jsonl").is_file()


def test_a_grid_only_space_is_sampled_and_said_once(tmp_path):
    path = sweep_file(tmp_path, n_trials=2, random={}, grid={"optimizer.name": ["sgd", "adam"],
                                                           "optimizer.lr": [0.01, 0.001]})
    res = invoke("sweep", path, "--runs-dir", tmp_path / "runs")
    assert_ok(res)
    notes = [line for line in res.stderr.splitlines() if line.startswith("note:")]
    assert notes == ["note: every key of the space is a list: tpe samples 2 combinations among them (search: grid "
                     "would run each combination once)"]
    assert len(json.loads((only_sweep(tmp_path / "runs") / "trials.json").read_text())) == 2
