"""Sweeps: expansion, validation up front, parallel trials, failures, resume, Dask, runs/compare.

Every sweep here writes under ``tmp_path`` (``--runs-dir``), never into the repository's
``runs/``. The trials are the quick start shrunk to almost nothing (8x8 images, a few
hundred examples, one or two epochs), so a trial takes well under a second.

Where a test waits for another process (the sweep to kill, the Dask workers) it polls
files with a deadline; nothing sleeps and hopes.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cnncli import runs as runs_mod
from cnncli import sweep as sweeps
from cnncli.cli import app
from cnncli.errors import ConfigError
from tests.helpers import only_sweep, read_trials, sweep_so_far, wait_for

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.yaml"
EXAMPLE_SWEEP = REPO / "sweeps" / "optimizers.yaml"
TINY = ["--set", "data.num_samples=240", "--set", "model.input_shape=[8,8,3]", "--set", "train.epochs=2"]
SWEEP_FOLDER = re.compile(r"^\d{8}-\d{6}-[A-Za-z0-9_.-]+$")
RESULT_FIELDS = ["trial", "final_val_accuracy", "best_val_accuracy", "final_val_loss", "best_val_loss",
                 "final_accuracy", "best_accuracy", "final_loss", "best_loss", "epochs", "status", "seconds",
                 "run", "reason"]


def cli(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def says(output: str, phrase: str) -> bool:
    """``phrase`` is in ``output``, however rich wrapped the lines (whitespace ignored)."""
    return "".join(phrase.split()) in "".join(output.split())


def read_results(folder: Path) -> list[dict]:
    with open(folder / "results.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def assert_complete_run(folder: Path, epochs: int) -> None:
    for name in ("config.yaml", "metrics.jsonl", "metrics.csv", "status.json", "env.json", "data.json",
                 "checkpoints/best.npz", "checkpoints/last.npz"):
        assert (folder / name).is_file(), f"{folder.name}: no {name}"
    assert json.loads((folder / "status.json").read_text())["status"] == "completed"
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert [r["epoch"] for r in rows] == list(range(1, epochs + 1))
    assert yaml.safe_load((folder / "config.yaml").read_text())["name"] == folder.name


def best_target(folder: Path) -> Path:
    link = folder / "best"
    if link.is_symlink():
        return (folder / os.readlink(link)).resolve()
    return (folder / link.read_text().strip()).resolve()


def write_sweep_file(path: Path, body: dict) -> Path:
    path.write_text(yaml.safe_dump({"base": str(QUICKSTART), **body}, sort_keys=False))
    return path


# ------------------------------------------------------------------------ 1. expansion
def test_parse_grid_option_reads_yaml_values():
    key, values = sweeps.parse_grid_option("optimizer.lr=0.1,1e-3, 3")
    assert key == "optimizer.lr"
    assert values == [0.1, 0.001, 3]
    assert [type(v) for v in values] == [float, float, int]  # 1e-3 is a float, as with --set
    assert sweeps.parse_grid_option("optimizer.name=sgd,momentum,adam") == ("optimizer.name",
                                                                            ["sgd", "momentum", "adam"])
    assert sweeps.parse_grid_option("model.input_shape=[8,8,3],[16,16,3]") == ("model.input_shape",
                                                                               [[8, 8, 3], [16, 16, 3]])
    assert sweeps.parse_grid_option("train.shuffle=true,false")[1] == [True, False]
    for bad in ("optimizer.lr", "optimizer.lr=", "optimizer.lr=[0.1"):
        with pytest.raises(ConfigError):
            sweeps.parse_grid_option(bad)


def test_grid_is_the_cartesian_product_and_every_trial_config_carries_its_values():
    spec = sweeps.make_spec(str(QUICKSTART), grid_options=["optimizer.name=sgd,momentum,adam",
                                                           "optimizer.lr=0.1,0.01,1e-3"])
    assert len(spec.trials) == 9
    assert {(t["optimizer.name"], t["optimizer.lr"]) for t in spec.trials} == {
        (n, lr) for n in ("sgd", "momentum", "adam") for lr in (0.1, 0.01, 0.001)}
    assert spec.metric == "val_accuracy" and spec.mode == "max"
    configs = sweeps.trial_configs(spec)
    assert [c["name"] for c in configs] == [f"trial-{i:03d}" for i in range(9)]
    for trial, config in zip(spec.trials, configs):
        assert config["optimizer"]["name"] == trial["optimizer.name"]
        assert config["optimizer"]["lr"] == trial["optimizer.lr"]
        assert isinstance(config["optimizer"]["lr"], float)


def test_random_draws_per_grid_point_seeded_in_range(tmp_path):
    body = {"grid": {"optimizer.name": ["sgd", "adam", "momentum"]},
            "random": {"n_trials": 40, "optimizer.lr": {"low": 1e-4, "high": 1e-1, "log": True},
                       "train.batch_size": [16, 32, 64],
                       "data.noise": {"low": 0.0, "high": 0.5},
                       "train.epochs": {"low": 1, "high": 4, "int": True}},
            "seed": 7}
    spec = sweeps.make_spec(str(write_sweep_file(tmp_path / "s.yaml", body)))
    assert len(spec.trials) == 3 * 40
    for name in ("sgd", "adam", "momentum"):
        assert sum(t["optimizer.name"] == name for t in spec.trials) == 40
    lrs = [t["optimizer.lr"] for t in spec.trials]
    assert all(1e-4 <= v <= 1e-1 for v in lrs)
    # log-uniform: about half below the geometric middle 10**-2.5 (a uniform draw puts ~3% there)
    assert 0.3 < sum(v < 10 ** -2.5 for v in lrs) / len(lrs) < 0.7
    assert all(t["train.batch_size"] in (16, 32, 64) for t in spec.trials)
    assert {t["train.batch_size"] for t in spec.trials} == {16, 32, 64}
    assert all(0.0 <= t["data.noise"] <= 0.5 for t in spec.trials)
    assert {t["train.epochs"] for t in spec.trials} <= {1, 2, 3, 4}
    assert all(isinstance(t["train.epochs"], int) for t in spec.trials)

    again = sweeps.make_spec(str(tmp_path / "s.yaml"))
    assert again.trials == spec.trials  # the same seed draws the same values
    other = sweeps.make_spec(str(tmp_path / "s.yaml"), seed=8)
    assert [t["optimizer.lr"] for t in other.trials] != lrs
    assert len(other.trials) == len(spec.trials)


def test_example_sweep_file_expands_and_validates():
    spec = sweeps.make_spec(str(EXAMPLE_SWEEP))
    assert Path(spec.base).resolve() == QUICKSTART
    assert spec.metric == "val_accuracy" and spec.mode == "max"
    assert "train.epochs=3" in spec.overrides
    assert len(spec.trials) == 6
    assert sorted(t["optimizer.name"] for t in spec.trials) == ["adam", "adam", "momentum", "momentum", "sgd", "sgd"]
    assert all(1e-4 <= t["optimizer.lr"] <= 1e-1 for t in spec.trials)
    configs = sweeps.trial_configs(spec)
    assert all(c["train"]["epochs"] == 3 for c in configs)
    assert [c["optimizer"]["lr"] for c in configs] == [t["optimizer.lr"] for t in spec.trials]


def test_threads_per_worker_never_oversubscribes():
    cores = os.cpu_count() or 1
    for jobs in range(1, cores + 1):
        threads = sweeps.threads_per_worker(jobs)
        assert threads >= 1 and jobs * threads <= cores
    assert sweeps.threads_per_worker(1) == cores
    assert sweeps.threads_per_worker(cores * 4) == 1


def test_leaderboard_ranks_by_metric_and_mode_with_failures_last(tmp_path):
    def record(i, acc, loss, status="completed"):
        metrics = {} if acc is None else {"epochs": 2, "best_val_accuracy": acc, "final_val_accuracy": acc,
                                          "best_val_loss": loss, "final_val_loss": loss}
        return {"index": i, "status": status, "path": f"trial-{i:03d}", "metrics": metrics, "seconds": 1.0,
                "reason": "boom" if status == "failed" else None}

    records = {0: record(0, 0.5, 0.9), 1: record(1, None, None, "failed"), 2: record(2, 0.8, 0.4),
               3: record(3, 0.6, 0.2)}
    for metric, mode, order in (("val_accuracy", "max", [2, 3, 0, 1]), ("val_loss", "min", [3, 2, 0, 1])):
        spec = sweeps.SweepSpec(base=str(QUICKSTART), name="x", overrides=[], grid={"optimizer.lr": [1, 2, 3, 4]},
                                random={}, metric=metric, mode=mode,
                                trials=[{"optimizer.lr": v} for v in (1, 2, 3, 4)])
        folder = tmp_path / metric
        folder.mkdir()
        for i in (0, 2, 3):
            (folder / f"trial-{i:03d}").mkdir()
        sw = sweeps.Sweep(folder, spec, dict(records))
        sw.save()
        assert sw.ranked() == order
        assert best_target(folder) == (folder / f"trial-{order[0]:03d}").resolve()
        table = [line for line in (folder / "leaderboard.md").read_text().splitlines() if line.startswith("| ")]
        assert [line.split("|")[2].strip() for line in table[1:]] == [f"trial-{i:03d}" for i in order]
        assert "- trial-001: boom" in (folder / "leaderboard.md").read_text()
        assert [r["status"] for r in read_results(folder)] == ["completed", "failed", "completed", "completed"]


# ----------------------------------------------------------------- 2. validation up front
def test_invalid_trial_is_named_before_anything_runs(tmp_path):
    runs_dir = tmp_path / "runs"
    result = cli("sweep", QUICKSTART, "--grid", "model.layers[0].filters=4,0", "--runs-dir", runs_dir)
    assert result.exit_code == 2, result.output
    assert "trial 1" in result.stderr and "model.layers[0].filters" in result.stderr
    assert "trial 0" not in result.stderr
    assert "Traceback" not in result.output
    assert not (runs_dir / "sweeps").exists()


def test_invalid_last_trial_stops_the_whole_sweep(tmp_path):
    runs_dir = tmp_path / "runs"
    result = cli("sweep", QUICKSTART, "--grid", "optimizer.name=sgd,adam", "--grid", "train.batch_size=8,-1",
                 *TINY, "--runs-dir", runs_dir)
    assert result.exit_code == 2, result.output
    assert "trial 1" in result.stderr and "train.batch_size" in result.stderr
    assert not (runs_dir / "sweeps").exists()


@pytest.mark.parametrize("body, key", [
    ({"gird": {"optimizer.lr": [0.1, 0.01]}}, "gird"),
    ({"grid": {"optimizer.lr": [0.1]}, "metirc": "val_loss"}, "metirc"),
    ({"random": {"n_trials": 2, "optimizer.lr": {"low": 1e-4, "hihg": 1e-1}}}, "hihg"),
    ({"random": {"n_trials": 0, "optimizer.lr": [0.1]}}, "random.n_trials"),
    ({"random": {"n_trials": 2, "optimizer.lr": {"low": 0.0, "high": 1e-1, "log": True}}}, "random.optimizer.lr"),
    ({"grid": {"optimizer.lr": []}}, "grid.optimizer.lr"),
    ({"grid": {"optimizer.lr": [0.1]}, "metric": "f1"}, "metric"),
    ({"grid": {"optimizer.lr": [0.1]}, "mode": "maximum"}, "mode"),
    ({"grid": {"optimzer.lr": [0.1]}}, "optimzer"),
])
def test_bad_sweep_file_names_the_key(tmp_path, body, key):
    path = write_sweep_file(tmp_path / "bad.yaml", body)
    result = cli("sweep", path, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2, result.output
    assert key in result.stderr, result.stderr
    assert result.stderr.startswith("error: ")
    if key != "optimzer":  # the sweep file's own keys name the sweep file (a trial's keys name the trial)
        assert says(result.stderr, f"{path}: ")
    else:
        assert "trial 0" in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs" / "sweeps").exists()


# ----------------------------------------------------------------- 3. a parallel sweep
@pytest.fixture(scope="module")
def parallel_sweep(tmp_path_factory):
    """A 2x2 grid run with --jobs 2: (sweep folder, runs dir, CLI result, BLAS env after)."""
    runs_dir = tmp_path_factory.mktemp("parallel") / "runs"
    before = os.environ.get("OPENBLAS_NUM_THREADS")
    result = cli("sweep", QUICKSTART, "--grid", "optimizer.name=sgd,adam", "--grid", "optimizer.lr=0.01,0.001",
                 *TINY, "--jobs", "2", "--name", "opt-grid", "--runs-dir", runs_dir)
    after = os.environ.get("OPENBLAS_NUM_THREADS")
    return only_sweep(runs_dir), runs_dir, result, (before, after)


def test_parallel_sweep_writes_results_leaderboard_and_best(parallel_sweep):
    folder, runs_dir, result, (env_before, env_after) = parallel_sweep
    assert result.exit_code == 0, result.output
    assert SWEEP_FOLDER.match(folder.name) and folder.name.endswith("-opt-grid")
    assert env_before == env_after  # the BLAS limit is for the workers, not left in this process

    spec = yaml.safe_load((folder / "sweep.yaml").read_text())
    assert len(spec["trials"]) == 4 and spec["metric"] == "val_accuracy" and spec["mode"] == "max"

    rows = read_results(folder)
    assert list(rows[0]) == ["trial", "optimizer.name", "optimizer.lr", *RESULT_FIELDS[1:]]
    assert [int(r["trial"]) for r in rows] == [0, 1, 2, 3]
    assert [(r["optimizer.name"], float(r["optimizer.lr"])) for r in rows] == [
        ("sgd", 0.01), ("sgd", 0.001), ("adam", 0.01), ("adam", 0.001)]
    for r in rows:
        assert r["status"] == "completed" and r["reason"] == ""
        assert r["run"] == f"trial-{int(r['trial']):03d}"
        assert int(r["epochs"]) == 2 and float(r["seconds"]) > 0
        assert 0.0 <= float(r["best_val_accuracy"]) <= 1.0
        assert float(r["best_val_accuracy"]) >= float(r["final_val_accuracy"])
        assert float(r["best_val_loss"]) <= float(r["final_val_loss"])
        run = folder / r["run"]
        assert_complete_run(run, epochs=2)
        history = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        assert float(r["best_val_accuracy"]) == pytest.approx(max(h["val_accuracy"] for h in history))
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert config["optimizer"]["name"] == r["optimizer.name"]
        assert config["optimizer"]["lr"] == float(r["optimizer.lr"])
        assert config["model"]["input_shape"] == [8, 8, 3] and config["data"]["num_samples"] == 240
        # each worker had cores // jobs threads, BLAS's and the engine's: no oversubscription
        env = json.loads((run / "env.json").read_text())
        assert env["env"]["OPENBLAS_NUM_THREADS"] == str(sweeps.threads_per_worker(2))
        assert env["engine_threads"] == sweeps.threads_per_worker(2)

    best_score = max(float(r["best_val_accuracy"]) for r in rows)
    target = best_target(folder)
    assert target.parent == folder.resolve()
    best_row = next(r for r in rows if r["run"] == target.name)
    assert float(best_row["best_val_accuracy"]) == best_score
    assert says(result.stdout, f"best: {folder / target.name}")

    board = [line for line in (folder / "leaderboard.md").read_text().splitlines() if line.startswith("| ")]
    header = [c.strip() for c in board[0].strip("|").split("|")]
    assert header[:4] == ["rank", "trial", "optimizer.name", "optimizer.lr"]
    col = header.index("best val_accuracy")
    body = [[c.strip() for c in line.strip("|").split("|")] for line in board[1:]]
    assert len(body) == 4
    assert [int(b[0]) for b in body] == [1, 2, 3, 4]
    scores = [float(b[col]) for b in body]
    assert scores == sorted(scores, reverse=True)
    assert body[0][1] == target.name


# ------------------------------------------------------------------ 4. failing trials
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_non_finite_trial_is_recorded_and_the_sweep_goes_on(tmp_path):
    runs_dir = tmp_path / "runs"
    result = cli("sweep", QUICKSTART, "--grid", "optimizer.lr=0.01,1e30", "--set", "optimizer.name=sgd", *TINY,
                 "--runs-dir", runs_dir)
    assert result.exit_code == 1, result.output
    assert "trial-001" in result.stderr and "failed" in result.stderr
    folder = only_sweep(runs_dir)
    rows = read_results(folder)
    assert [(r["trial"], r["status"]) for r in rows] == [("0", "completed"), ("1", "failed")]
    assert float(rows[1]["optimizer.lr"]) == 1e30
    assert "not finite" in rows[1]["reason"] and "NonFiniteError" in rows[1]["reason"]
    assert rows[0]["reason"] == ""
    assert_complete_run(folder / "trial-000", epochs=2)
    assert json.loads((folder / "trial-001" / "status.json").read_text())["status"] == "failed"
    assert best_target(folder) == (folder / "trial-000").resolve()
    board = (folder / "leaderboard.md").read_text()
    assert "Failed trials:" in board and "- trial-001: NonFiniteError" in board

    # resume reruns the failed trial only, keeps one row per trial, and still says it failed
    kept = (folder / "trial-000" / "metrics.jsonl").stat().st_mtime_ns
    (folder / "trial-001" / "stale").write_text("from the first attempt")
    again = cli("sweep", "--resume", folder)
    assert again.exit_code == 1, again.output
    assert says(again.stdout, "(1 already completed)")
    assert (folder / "trial-000" / "metrics.jsonl").stat().st_mtime_ns == kept
    assert not (folder / "trial-001" / "stale").exists()
    assert [(r["trial"], r["status"]) for r in read_results(folder)] == [("0", "completed"), ("1", "failed")]
    assert len(list((runs_dir / "sweeps").iterdir())) == 1


def test_a_trial_that_raises_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    import cnncli.experiment

    real_train = cnncli.experiment.train

    def flaky_train(values, **kwargs):
        if values["optimizer"]["lr"] == 0.02:
            raise RuntimeError("simulated crash in trial")
        return real_train(values, **kwargs)

    monkeypatch.setattr(cnncli.experiment, "train", flaky_train)
    runs_dir = tmp_path / "runs"
    result = cli("sweep", QUICKSTART, "--grid", "optimizer.lr=0.01,0.02,0.03", *TINY, "--jobs", "1",
                 "--runs-dir", runs_dir)
    assert result.exit_code == 1, result.output
    rows = read_results(only_sweep(runs_dir))
    assert [r["status"] for r in rows] == ["completed", "failed", "completed"]
    assert rows[1]["reason"] == "RuntimeError: simulated crash in trial"


# ------------------------------------------------------------------ 5. kill and resume
@pytest.mark.slow
def test_killed_sweep_resumes_without_rerunning_completed_trials(tmp_path):
    runs_dir = tmp_path / "runs"
    log = tmp_path / "sweep.log"
    epochs = 8
    # A relative config path from the repository; the resume below runs from elsewhere.
    cmd = [sys.executable, "-m", "cnncli.cli", "sweep", "configs/quickstart.yaml",
           "--grid", "optimizer.lr=0.01,0.02,0.03", "--set", "data.num_samples=600",
           "--set", "model.input_shape=[8,8,3]", "--set", f"train.epochs={epochs}",
           "--jobs", "1", "--name", "killme", "--runs-dir", str(runs_dir)]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    try:
        def mid_sweep():
            if (so_far := sweep_so_far(runs_dir)) is None:
                return None
            folder, trials = so_far
            done = [k for k, t in trials.items() if t["status"] == "completed"]
            running = [k for k, t in trials.items() if t["status"] == "running"]
            # a running trial that has finished at least one epoch: killed mid-training
            if done and running and (folder / f"trial-{int(running[0]):03d}" / "metrics.jsonl").is_file():
                return folder
            return None

        folder = wait_for(mid_sweep, 90, "one trial completed and another mid-training", proc, log)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL

    trials = read_trials(folder)  # what the sweep had recorded when it was killed
    completed = sorted(int(k) for k, t in trials.items() if t["status"] == "completed")
    running = sorted(int(k) for k, t in trials.items() if t["status"] == "running")
    assert completed and running, trials
    stamps = {}
    for i in completed:
        run = folder / f"trial-{i:03d}"
        (run / "kept").write_text("completed before the kill")
        stamps[i] = ((run / "metrics.jsonl").stat().st_mtime_ns, (run / "metrics.jsonl").read_text(),
                     (run / "checkpoints" / "best.npz").stat().st_mtime_ns)
    for i in running:
        if (folder / f"trial-{i:03d}").is_dir():
            (folder / f"trial-{i:03d}" / "stale").write_text("half a trial")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    resumed = subprocess.run([sys.executable, "-m", "cnncli.cli", "sweep", "--resume", str(folder)],
                             cwd=elsewhere, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert says(resumed.stdout, f"({len(completed)} already completed)")

    rows = read_results(folder)
    assert [int(r["trial"]) for r in rows] == [0, 1, 2]  # every trial exactly once
    assert all(r["status"] == "completed" for r in rows), rows
    for i in completed:  # not rerun
        run = folder / f"trial-{i:03d}"
        assert (run / "kept").is_file()
        assert ((run / "metrics.jsonl").stat().st_mtime_ns, (run / "metrics.jsonl").read_text(),
                (run / "checkpoints" / "best.npz").stat().st_mtime_ns) == stamps[i]
    for i in running:  # rerun from nothing
        run = folder / f"trial-{i:03d}"
        assert not (run / "stale").exists()
        assert_complete_run(run, epochs=epochs)
    for i in range(3):
        assert_complete_run(folder / f"trial-{i:03d}", epochs=epochs)
    assert set(read_trials(folder)) == {"0", "1", "2"}
    assert [p.name for p in (runs_dir / "sweeps").iterdir()] == [folder.name]
    best_score = max(float(r["best_val_accuracy"]) for r in rows)
    assert float(next(r for r in rows if r["run"] == best_target(folder).name)["best_val_accuracy"]) == best_score

    # resuming a finished sweep runs nothing and changes no row
    before = (folder / "results.csv").read_text()
    again = subprocess.run([sys.executable, "-m", "cnncli.cli", "sweep", "--resume", str(folder)],
                           cwd=elsewhere, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert says(again.stdout, "(3 already completed)")
    assert (folder / "results.csv").read_text() == before


@pytest.mark.slow
def test_a_dead_worker_fails_its_trials_and_the_sweep_goes_on(tmp_path):
    """A worker process killed from outside (the OOM killer, say) breaks its process pool;
    the trials in flight are recorded as failed and the rest run in a fresh pool."""
    psutil = pytest.importorskip("psutil")
    runs_dir = tmp_path / "runs"
    log = tmp_path / "sweep.log"
    cmd = [sys.executable, "-m", "cnncli.cli", "sweep", str(QUICKSTART), "--grid", "optimizer.lr=0.01,0.02,0.03,0.04",
           "--set", "data.num_samples=600", "--set", "model.input_shape=[8,8,3]", "--set", "train.epochs=10",
           "--jobs", "2", "--runs-dir", str(runs_dir)]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    try:
        def busy_workers():
            try:
                workers = [c for c in psutil.Process(proc.pid).children()
                           if "spawn_main" in " ".join(c.cmdline())]
            except psutil.Error:
                return None
            epochs_done = list((runs_dir / "sweeps").glob("*/trial-00[01]/metrics.jsonl"))
            return workers if len(workers) == 2 and epochs_done else None

        workers = wait_for(busy_workers, 90, "two workers, one trial past its first epoch", proc, log)
        workers[0].send_signal(signal.SIGKILL)
        assert proc.wait(timeout=120) == 1, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    folder = only_sweep(runs_dir)
    rows = read_results(folder)
    assert [int(r["trial"]) for r in rows] == [0, 1, 2, 3]
    failed = [r for r in rows if r["status"] == "failed"]
    assert 1 <= len(failed) <= 2, rows  # the trials in flight when the worker died; the rest ran
    assert all("worker failed" in r["reason"] for r in failed)
    assert all(r["status"] in ("completed", "failed") for r in rows)
    assert rows[-1]["status"] == "completed"  # trials after the breakage ran in a new pool
    assert "Traceback" not in log.read_text()

    resumed = subprocess.run([sys.executable, "-m", "cnncli.cli", "sweep", "--resume", str(folder), "--jobs", "2"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert [r["status"] for r in read_results(folder)] == ["completed"] * 4


# ------------------------------------------------------------------------------ 6. Dask
@pytest.mark.slow
def test_dask_executor_on_a_local_cluster(tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    runs_dir = tmp_path / "runs"
    base = [sys.executable, "-m", "cnncli.cli", "sweep"]
    # two worker processes; the dashboard on a free port (":0"), so parallel test runs do not clash
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
        address = cluster.scheduler_address
        done = subprocess.run(base + [str(QUICKSTART), "--grid", "optimizer.lr=0.01,0.001", *TINY,
                                      "--executor", "dask", "--address", address, "--runs-dir", str(runs_dir)],
                              cwd=tmp_path, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr
        assert says(done.stdout, f"dask at {address}")
        folder = only_sweep(runs_dir)
        rows = read_results(folder)
        assert [(int(r["trial"]), r["status"]) for r in rows] == [(0, "completed"), (1, "completed")]
        for r in rows:
            assert_complete_run(folder / r["run"], epochs=2)  # came back from the workers
            assert float(r["seconds"]) > 0
        best_score = max(float(r["best_val_accuracy"]) for r in rows)
        assert float(next(r for r in rows if r["run"] == best_target(folder).name)["best_val_accuracy"]) == best_score
        assert "trial-000" in (folder / "leaderboard.md").read_text()

        # the trials ran on the cluster's workers, not in the sweep process
        def trial_keys(dask_worker):
            return sorted({str(entry[0]) for entry in dask_worker.state.log if "cnncli-trial-" in str(entry[0])})

        ran = [k for keys in client.run(trial_keys).values() for k in keys]
        assert sorted({k.split("-")[2] for k in ran}) == ["0", "1"]

        # resume on the cluster: the failed trial reruns, the completed one does not
        trials = read_trials(folder)
        trials["1"].update(status="failed", reason="simulated")
        (folder / "trials.json").write_text(json.dumps(trials))
        (folder / "trial-000" / "kept").write_text("")
        (folder / "trial-001" / "stale").write_text("")
        kept = (folder / "trial-000" / "metrics.jsonl").stat().st_mtime_ns
        again = subprocess.run(base + ["--resume", str(folder), "--executor", "dask", "--address", address],
                               cwd=tmp_path, capture_output=True, text=True, timeout=180)
        assert again.returncode == 0, again.stdout + again.stderr
        assert says(again.stdout, "(1 already completed)")
        assert (folder / "trial-000" / "kept").is_file()
        assert (folder / "trial-000" / "metrics.jsonl").stat().st_mtime_ns == kept
        assert not (folder / "trial-001" / "stale").exists()
        assert_complete_run(folder / "trial-001", epochs=2)
        assert [(int(r["trial"]), r["status"]) for r in read_results(folder)] == [(0, "completed"),
                                                                                  (1, "completed")]
        assert [p.name for p in (runs_dir / "sweeps").iterdir()] == [folder.name]


def test_dask_executor_without_a_reachable_scheduler_is_a_user_error(tmp_path):
    pytest.importorskip("dask.distributed")
    result = cli("sweep", QUICKSTART, "--grid", "optimizer.lr=0.01,0.001", *TINY, "--executor", "dask",
                 "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2, result.output
    assert "--address" in result.stderr


# ---------------------------------------------------------- 7. dict-valued grids read well
OPTIMIZERS = [{"name": "sgd", "lr": 0.01}, {"name": "adam", "lr": 0.001}]


def anchors_and_aliases(text: str) -> list:
    """YAML's events that are an ``&anchor`` or a ``*alias``."""
    return [e for e in yaml.parse(text) if isinstance(e, yaml.AliasEvent) or getattr(e, "anchor", None)]


def test_saved_yaml_repeats_shared_values_instead_of_anchors():
    from cnncli import yamlfiles

    shared = {"name": "sgd", "lr": 0.01}
    text = yamlfiles.dump({"grid": {"optimizer": [shared]}, "trials": [{"optimizer": shared}, {"optimizer": shared}]})
    assert anchors_and_aliases(text) == [], text
    assert yamlfiles.parse(text) == {"grid": {"optimizer": [shared]}, "trials": [{"optimizer": shared}] * 2}


def test_a_dict_valued_grid_reads_well_in_sweep_yaml_and_the_leaderboard(tmp_path):
    path = write_sweep_file(tmp_path / "optimizers.yaml", {
        "overrides": ["data.num_samples=240", "model.input_shape=[8,8,3]", "train.epochs=1"],
        "grid": {"optimizer": OPTIMIZERS}})
    result = cli("sweep", path, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    folder = only_sweep(tmp_path / "runs")

    saved = (folder / "sweep.yaml").read_text()
    assert anchors_and_aliases(saved) == [], saved  # each trial's values written out, no &id001 / *id001
    assert [t["overrides"] for t in yaml.safe_load(saved)["trials"]] == [{"optimizer": o} for o in OPTIMIZERS]
    assert sweeps.Sweep.open(folder).spec.trials == [{"optimizer": o} for o in OPTIMIZERS]

    board = (folder / "leaderboard.md").read_text()
    for text in (board, result.stdout):  # as a sweep file writes them, not Python's repr
        assert "{name: sgd, lr: 0.01}" in text and "{name: adam, lr: 0.001}" in text, text
        assert "'name'" not in text, text


def test_printed_leaderboard_shows_values_with_brackets(tmp_path):
    """A list value is shown as YAML and printed as text: rich would read "[relu, tanh]"
    as a style tag and drop it."""
    from cnncli.cli.common import console
    from cnncli.cli.sweep import print_leaderboard

    values = [["relu", "tanh"], ["tanh", "relu"]]
    spec = sweeps.SweepSpec(base=str(QUICKSTART), name="x", overrides=[], grid={"key": values}, random={},
                            trials=[{"key": v} for v in values])
    records = {i: {"index": i, "status": "completed", "path": f"trial-{i:03d}", "seconds": 1.0,
                   "metrics": {"epochs": 1, "best_val_accuracy": 0.5 + i / 10, "final_val_accuracy": 0.5}}
               for i in range(2)}
    for i in range(2):
        (tmp_path / f"trial-{i:03d}").mkdir()
    sw = sweeps.Sweep(tmp_path, spec, records)
    assert [row[2] for row in sw.leaderboard_rows()[1]] == ["[tanh, relu]", "[relu, tanh]"]
    with console.capture() as captured:
        print_leaderboard(sw)
    assert "[tanh, relu]" in captured.get() and "[relu, tanh]" in captured.get(), captured.get()


# ------------------------------------------------------------------- 8. runs and compare
def test_runs_lists_runs_and_sweeps_with_counts(parallel_sweep, tmp_path):
    folder, _, _, _ = parallel_sweep
    runs_dir = tmp_path / "runs"
    (runs_dir / "sweeps").mkdir(parents=True)
    shutil.copytree(folder, runs_dir / "sweeps" / folder.name, symlinks=True)
    shutil.copytree(folder / "trial-002", runs_dir / "20240101-000000-solo")
    result = cli("runs", runs_dir)
    assert result.exit_code == 0, result.output
    line = next(x for x in result.stdout.splitlines() if "20240101-000000-solo" in x)
    assert "completed" in line
    # "best" is training's: the epoch of the best monitored value, and its figures there.
    status = json.loads((folder / "trial-002" / "status.json").read_text())
    at_best = next(r for r in runs_mod.read_metrics(folder / "trial-002") if r["epoch"] == status["best_epoch"])
    assert f"{status['best_epoch']} ({status['monitor']})" in line and f"{at_best['val_accuracy']:.4f}" in line
    assert says(result.stdout, f"sweep {folder.name}: 4 completed, 0 failed, 0 running")
    assert "trial-000" not in result.stdout  # trials are listed with their sweep, not as runs

    empty = cli("runs", tmp_path / "nothing")
    assert empty.exit_code == 0 and "no runs" in empty.stdout


def test_compare_shows_metrics_and_config_differences(parallel_sweep):
    folder, _, _, _ = parallel_sweep
    a, b, c = folder / "trial-000", folder / "trial-001", folder / "trial-002"
    result = cli("compare", a, b)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "trial-000" in out and "trial-001" in out
    diff = out[out.index("config differences"):]
    lr_line = next(x for x in diff.splitlines() if "optimizer.lr" in x)
    assert "0.01" in lr_line and "0.001" in lr_line
    assert "optimizer.name" not in diff and "model.input_shape" not in diff and "name " not in diff.split("\n", 1)[1]
    for run in (a, b):  # the val_accuracy of the epoch training called best (by its monitor)
        _, best = runs_mod.best_epoch(run)
        assert f"{best['val_accuracy']:.4f}" in next(x for x in out.splitlines() if "val_accuracy at the best" in x)

    three = cli("compare", a, b, c)
    assert three.exit_code == 0, three.output
    assert "optimizer.name" in three.stdout[three.stdout.index("config differences"):]

    one = cli("compare", a)
    assert one.exit_code == 2
    assert "at least two" in one.stderr
    missing = cli("compare", a, folder / "trial-999")
    assert missing.exit_code == 2 and "trial-999" in missing.stderr
