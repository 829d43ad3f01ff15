"""Rough edges a new user hit (issue 16): each test failed on the code before its fix."""

from __future__ import annotations

import json
import re

import yaml

import cnncli
from tests.helpers import TINY, assert_ok, assert_user_error, invoke


def write(tmp_path, cfg: dict, name: str = "tiny.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def only_run(runs_dir):
    (run,) = [p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return run


def test_eval_checkpoint_last_is_what_every_evaluation_uses(tmp_path):
    cfg = {**TINY, "train": {"epochs": 3, "batch_size": 32}, "eval": {"checkpoint": "last"}}
    assert_ok(invoke("train", write(tmp_path, cfg), "--runs-dir", tmp_path / "runs", "-q"))
    run = only_run(tmp_path / "runs")
    trained = json.loads((run / "eval.json").read_text())
    assert trained["checkpoint"] == "last" and trained["epoch"] == 3
    res = invoke("eval", run)
    assert_ok(res)
    assert f"{run} (last checkpoint, epoch 3)" in res.stdout
    assert json.loads((run / "eval-last.json").read_text())["loss"] == trained["loss"]
    assert not (run / "eval-best.json").exists()
    from PIL import Image

    Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "red.png")
    shown = invoke("predict", run, tmp_path / "red.png")
    assert_ok(shown)
    assert f"{run} (last)" in " ".join(shown.stdout.split())
    exported = invoke("export", run, "--format", "npz")
    assert_ok(exported)
    assert "(last checkpoint;" in exported.stdout
    from cnncli.experiment import run_checkpoint

    assert run_checkpoint(run) == "last" and run_checkpoint(run, "best") == "best"


def test_by_default_the_runs_own_evaluation_is_its_best_checkpoint_and_says_its_epoch(tmp_path):
    run = cnncli.train({**TINY, "train": {"epochs": 3, "batch_size": 32}}, runs_dir=tmp_path)
    trained = json.loads((run.path / "eval.json").read_text())
    assert trained["checkpoint"] == "best" and trained["epoch"] == run.result.best_epoch
    again = cnncli.evaluate_run(run.path)
    assert again["checkpoint"] == "best" and again["loss"] == trained["loss"] and again["file"] == "eval-best.json"
    assert json.loads((run.path / "eval.json").read_text()) == trained  # cnncli eval wrote beside it


def test_eval_on_other_data_names_its_file_by_the_data(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", x=rng.random((40, 8, 8, 3)), y=rng.integers(0, 2, 40))
    cfg = {**TINY, "data": {"source": "npz", "path": str(tmp_path / "data.npz")}}
    run = cnncli.train(cfg, runs_dir=tmp_path / "runs").path
    np.savez(tmp_path / "other set.npz", x=rng.random((12, 8, 8, 3)), y=rng.integers(0, 2, 12))
    res = invoke("eval", run, "--data-path", tmp_path / "other set.npz")
    assert_ok(res)
    assert (run / "eval-best-other-set.npz.json").is_file() and (run / "eval.json").is_file()


def test_runs_takes_runs_dir_like_every_other_command(tmp_path):
    cnncli.train(TINY, runs_dir=tmp_path / "elsewhere")
    by_option = invoke("runs", "--runs-dir", tmp_path / "elsewhere")
    assert_ok(by_option)
    assert "tiny" in by_option.stdout and "completed" in by_option.stdout
    assert by_option.stdout == invoke("runs", tmp_path / "elsewhere").stdout
    assert_user_error(invoke("runs", tmp_path / "a", "--runs-dir", tmp_path / "b"), "give the folder once")


def test_runs_on_a_folder_of_sweeps_only_lists_the_sweeps_and_no_empty_table(tmp_path):
    assert_ok(invoke("sweep", write(tmp_path, TINY), "--grid", "optimizer.lr=0.01,0.001", "--runs-dir",
                     tmp_path / "runs"))
    res = invoke("runs", "--runs-dir", tmp_path / "runs")
    assert_ok(res)
    assert "┏" not in res.stdout and "no runs in" in res.stdout and "outside its sweeps" in res.stdout
    assert re.search(r"sweep \S+-tiny: 2 completed, 0 failed, 0 running", res.stdout)


def test_the_training_banner_counts_one_epoch_as_one_epoch(tmp_path):
    res = invoke("train", write(tmp_path, {**TINY, "train": {"epochs": 1, "batch_size": 32}}), "--runs-dir",
                 tmp_path / "runs")
    assert_ok(res)
    assert "1 epoch of batch 32" in res.stdout and "1 epochs" not in res.stdout
    res = invoke("train", write(tmp_path, TINY), "--runs-dir", tmp_path / "more")
    assert "2 epochs of batch 32" in res.stdout


def test_names_with_spaces_or_other_alphabets_become_one_safe_folder_name_that_is_printed(tmp_path):
    res = invoke("train", write(tmp_path, TINY), "--name", "my first run, größer", "--runs-dir", tmp_path / "runs")
    assert_ok(res)
    run = only_run(tmp_path / "runs")
    assert run.name.endswith("-my-first-run-gr-er") and f"run: {run}" in res.stdout
    res = invoke("train", write(tmp_path, TINY), "--name", "日本語", "--runs-dir", tmp_path / "cjk")
    assert_ok(res)
    assert only_run(tmp_path / "cjk").name.endswith("-run")  # nothing safe left: the word run
    res = invoke("sweep", write(tmp_path, TINY), "--grid", "optimizer.lr=0.01", "--name", "lr sweep #1",
                 "--runs-dir", tmp_path / "sweeps")
    assert_ok(res)
    (folder,) = (tmp_path / "sweeps" / "sweeps").iterdir()
    assert folder.name.endswith("-lr-sweep-1") and str(folder) in res.stdout
