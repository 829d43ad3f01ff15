"""The command line through Typer's CliRunner: train, summary, eval, predict and their failures.

Every command gets ``--runs-dir`` inside ``tmp_path``; nothing is written into the
repository's ``runs/``.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from cnncli import runs as runs_mod
from tests.helpers import TINY, assert_ok, assert_user_error, invoke

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "configs" / "paper.yaml"
RUN_FILES = ("config.yaml", "metrics.jsonl", "metrics.csv", "checkpoints/last.npz", "checkpoints/best.npz",
             "summary.md", "eval.json", "curves.png", "env.json", "status.json", "data.json")





def write_config(path: Path, cfg: dict = TINY) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run, trained through the CLI: (runs dir, run dir, CliRunner result)."""
    root = tmp_path_factory.mktemp("cli")
    cfg = write_config(root / "tiny.yaml")
    runs = root / "runs"
    res = invoke("train", cfg, "--runs-dir", runs)
    assert_ok(res)
    (run,) = [p for p in runs.iterdir() if not p.name.startswith(".")]
    return runs, run, res


# --------------------------------------------------------------------------- train
def test_train_prints_the_summary_and_the_run_path(trained):
    runs, run, res = trained
    out = res.stdout
    assert "[(3x3x3)+1]x4 = 112" in out and "[64+1]x2 = 130" in out  # the summary table
    assert "242 parameters" in out
    assert "epoch 1/2" in out and "epoch 2/2" in out
    assert "classes circle, square" in out
    assert f"run: {run}" in out
    assert re.fullmatch(r"\d{8}-\d{6}-tiny", run.name)
    assert run.parent == runs


def test_train_writes_every_file_of_a_run(trained):
    _, run, _ = trained
    for name in RUN_FILES:
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    assert not list(run.rglob(".*.tmp"))  # atomic writes left no temporaries
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["seed"] == 0 and config["train"]["epochs"] == 2 and config["loss"]["name"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "step"):
            assert isinstance(r[key], (int, float)), key
    table = list(csv.DictReader(io.StringIO((run / "metrics.csv").read_text())))
    assert [int(r["epoch"]) for r in table] == [1, 2]
    assert float(table[1]["val_loss"]) == pytest.approx(rows[1]["val_loss"])
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "completed" and status["epochs_completed"] == 2
    data = json.loads((run / "data.json").read_text())
    assert data["class_names"] == ["circle", "square"] and data["normalization"]["mode"] == "scale"
    ev = json.loads((run / "eval.json").read_text())
    assert ev["examples"] == 40 and len(ev["confusion_matrix"]) == 2
    assert sum(map(sum, ev["confusion_matrix"])) == 40
    env = json.loads((run / "env.json").read_text())
    assert env["numpy"] == np.__version__ and "python" in env
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "[(3x3x3)+1]x4 = 112" in (run / "summary.md").read_text()
    params, _, meta = runs_mod.load_checkpoint(run / "checkpoints" / "last.npz")
    assert meta["epoch"] == 2 and set(params) >= {"layers.0.kernel", "layers.0.bias", "layers.3.kernel"}


def test_train_quiet_prints_only_the_outcome(tmp_path):
    cfg = write_config(tmp_path / "c.yaml")
    res = invoke("train", cfg, "--runs-dir", tmp_path / "runs", "--quiet", "--set", "train.epochs=1")
    assert_ok(res)
    assert "parameters" not in res.stdout and "run: " in res.stdout


# ------------------------------------------------------------------------- summary
PAPER_FIGURES = ("[(5x5x3)+1]x64 = 4,864", "[(5x5x64)+1]x128 = 204,928", "[2048+1]x500 = 1,024,500",
                 "[500+1]x1 = 501", "1,234,793", "1,234,100", "693")


def test_summary_of_the_paper_config(tmp_path):
    res = invoke("summary", PAPER, "--runs-dir", tmp_path / "runs")
    assert_ok(res)
    for figure in PAPER_FIGURES:
        assert figure in res.stdout, figure
    assert "4x4x128" in res.stdout and "24x24x64" in res.stdout
    assert not (tmp_path / "runs").exists()


def test_summary_markdown(tmp_path):
    res = invoke("summary", PAPER, "--format", "markdown", "--runs-dir", tmp_path)
    assert_ok(res)
    for figure in PAPER_FIGURES:
        assert figure in res.stdout, figure
    assert "| # | layer |" in res.stdout
    assert "**1,234,793**" in res.stdout


def test_summary_csv(tmp_path):
    res = invoke("summary", PAPER, "-f", "csv", "--runs-dir", tmp_path)
    assert_ok(res)
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert [r["index"] for r in rows] == ["0", "1", "2", "3", "4", "5", "6", "total"]
    assert [int(r["params"]) for r in rows[:-1]] == [4864, 0, 204928, 0, 0, 1024500, 501]
    assert (int(rows[-1]["params"]), int(rows[-1]["weights"]), int(rows[-1]["biases"])) == (1234793, 1234100, 693)
    assert rows[0]["calculation"] == "[(5x5x3)+1]x64"


def test_summary_json(tmp_path):
    res = invoke("summary", PAPER, "--format", "json", "--runs-dir", tmp_path)
    assert_ok(res)
    s = json.loads(res.stdout)
    assert (s["params"], s["weights"], s["biases"]) == (1234793, 1234100, 693)
    assert sum(r["params"] for r in s["rows"]) == s["params"]
    assert s["input_shape"] == [28, 28, 3]
    assert [r["output_shape"] for r in s["rows"]] == [[24, 24, 64], [12, 12, 64], [8, 8, 128], [4, 4, 128],
                                                      [2048], [500], [1]]


def test_summary_with_set(tmp_path):
    res = invoke("summary", PAPER, "-f", "json", "--set", "model.layers[5].units=10", "--runs-dir", tmp_path)
    assert_ok(res)
    assert json.loads(res.stdout)["rows"][5]["params"] == 2049 * 10


def test_summary_of_a_run_dir_and_of_the_latest_run(trained, tmp_path):
    _, run, _ = trained
    res = invoke("summary", run, "-f", "json")
    assert_ok(res)
    assert json.loads(res.stdout)["params"] == 242
    # Two runs: the latest (by its time-stamped name) is the default.
    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copytree(run, runs / "20000101-000000-old")
    newer = shutil.copytree(run, runs / "20000101-000001-new")
    cfg = yaml.safe_load((newer / "config.yaml").read_text())
    cfg["model"]["layers"][0]["filters"] = 5
    (newer / "config.yaml").write_text(yaml.safe_dump(cfg))
    res = invoke("summary", "-f", "json", "--runs-dir", runs)
    assert_ok(res)
    assert json.loads(res.stdout)["params"] == (27 + 1) * 5 + (4 * 4 * 5 + 1) * 2


def test_summary_without_runs_is_a_user_error(tmp_path):
    assert_user_error(invoke("summary", "--runs-dir", tmp_path / "none"), "no runs")


def test_summary_bad_format(tmp_path):
    assert_user_error(invoke("summary", PAPER, "--format", "xml", "--runs-dir", tmp_path), "--format", "xml")


# ---------------------------------------------------------------------------- eval
def test_eval_latest_run_json(trained):
    runs, run, _ = trained
    trained_eval = (run / "eval.json").read_text()
    res = invoke("eval", "--runs-dir", runs, "--checkpoint", "last", "--json")
    assert_ok(res)
    report = json.loads(res.stdout)
    for key in ("loss", "accuracy", "confusion_matrix", "precision", "recall", "f1"):
        assert key in report, key
    assert report["checkpoint"] == "last" and report["epoch"] == 2 and report["examples"] == 40
    assert len(report["precision"]) == len(report["recall"]) == len(report["f1"]) == 2
    m = np.array(report["confusion_matrix"])
    assert m.sum() == 40 and report["accuracy"] == pytest.approx(np.trace(m) / 40)
    # cnncli eval writes eval-last.json beside (never over) the run's own eval.json
    assert json.loads((run / "eval-last.json").read_text()) == report and report["file"] == "eval-last.json"
    assert (run / "eval.json").read_text() == trained_eval
    # The last checkpoint holds the final weights: the same figures as training's own evaluation.
    rows = runs_mod.read_metrics(run)
    assert report["loss"] == pytest.approx(rows[-1]["val_loss"], rel=1e-5)
    assert report["accuracy"] == pytest.approx(rows[-1]["val_accuracy"])


def test_eval_table_of_a_run_dir(trained):
    _, run, _ = trained
    res = invoke("eval", run)
    assert_ok(res)
    assert "accuracy" in res.stdout and "confusion matrix" in res.stdout and "circle" in res.stdout
    assert "eval-best.json" in res.stdout and "(best checkpoint, epoch" in res.stdout


def test_eval_on_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "plain").mkdir()
    assert_user_error(invoke("eval", tmp_path / "plain"), "not a run folder")
    assert_user_error(invoke("eval", tmp_path / "missing"), "no such run folder")


def test_eval_bad_checkpoint_name(trained):
    _, run, _ = trained
    assert_user_error(invoke("eval", run, "--checkpoint", "first"), "best or last")


def test_eval_corrupt_checkpoint(trained, tmp_path):
    _, run, _ = trained
    copy = shutil.copytree(run, tmp_path / "20000101-000000-copy")
    (copy / "checkpoints" / "best.npz").write_bytes(b"not a checkpoint")
    assert_user_error(invoke("eval", copy), "best.npz")


# ------------------------------------------------------------------------- predict
def test_predict_an_image(trained, tmp_path):
    from PIL import Image

    _, run, _ = trained
    img = tmp_path / "img.png"
    Image.new("RGB", (20, 30), (200, 10, 10)).save(img)
    grey = tmp_path / "grey.jpg"
    Image.new("L", (8, 8), 90).save(grey)
    res = invoke("predict", run, img, grey, "--json")
    assert_ok(res)
    out = json.loads(res.stdout)
    assert [r["image"] for r in out] == [str(img), str(grey)]
    for r in out:
        assert r["class"] in ("circle", "square") and 0.5 <= r["probability"] <= 1.0
    table = invoke("predict", run, img)
    assert_ok(table)
    assert "img.png" in table.stdout


def test_predict_uses_the_latest_run_by_default(trained, tmp_path):
    from PIL import Image

    runs, _, _ = trained
    img = tmp_path / "img.bmp"
    Image.new("RGB", (8, 8), (0, 0, 0)).save(img)
    res = invoke("predict", img, "--runs-dir", runs, "--json", "--checkpoint", "last")
    assert_ok(res)
    assert len(json.loads(res.stdout)) == 1


def test_predict_on_a_file_that_is_not_an_image(trained, tmp_path):
    _, run, _ = trained
    notes = tmp_path / "notes.png"
    notes.write_text("this is text")
    assert_user_error(invoke("predict", run, notes), "notes.png", "not a readable image")
    assert_user_error(invoke("predict", run, tmp_path / "nothing.png"), "nothing.png")


def test_predict_needs_an_image(trained):
    _, run, _ = trained
    assert_user_error(invoke("predict", run), "image")


# --------------------------------------------------------------------------- help
@pytest.mark.parametrize("command", [[], ["train"], ["eval"], ["summary"], ["predict"]])
def test_help(command):
    res = invoke(*command, "--help")
    assert_ok(res)
    assert "Usage" in res.stdout


def test_version():
    import cnncli

    res = invoke("--version")
    assert_ok(res)
    assert cnncli.__version__ in res.stdout


# ------------------------------------------------------------------------ failures
def test_train_nonexistent_config(tmp_path):
    line = assert_user_error(invoke("train", tmp_path / "nope.yaml", "--runs-dir", tmp_path / "runs"), "nope.yaml")
    assert "no such config file" in line
    assert not (tmp_path / "runs").exists()


def test_summary_nonexistent_config(tmp_path):
    assert_user_error(invoke("summary", tmp_path / "nope.yaml", "--runs-dir", tmp_path), "nope.yaml")


@pytest.mark.parametrize("bad, phrase", [("optimizer.lr", "key=value"), ("optimizer.lrr=1", "did you mean 'lr'"),
                                         ("train.epochs=-3", "train.epochs"), ("=3", "dotted key")])
def test_train_bad_set(tmp_path, bad, phrase):
    cfg = write_config(tmp_path / "c.yaml")
    assert_user_error(invoke("train", cfg, "--set", bad, "--runs-dir", tmp_path / "runs"), phrase)
    assert not [p for p in (tmp_path / "runs").glob("*") if not p.name.startswith(".")]


def test_summary_bad_set(tmp_path):
    assert_user_error(invoke("summary", PAPER, "--set", "model.layers[0].filters=0", "--runs-dir", tmp_path),
                      "model.layers[0].filters")


def test_error_text_is_printed_as_is_not_as_markup(tmp_path):
    # Square brackets in a message or a file name are text, not rich markup.
    missing = tmp_path / "exp[bold].yaml"
    line = assert_user_error(invoke("train", missing, "--runs-dir", tmp_path / "runs"))
    assert line == f"error: {missing}: no such config file"
    cfg = dict(TINY, model={**TINY["model"], "input_shape": [8, 8]})
    path = write_config(tmp_path / "c.yaml", cfg)
    line = assert_user_error(invoke("train", path, "--runs-dir", tmp_path / "runs"))
    assert "expected [height, width, channels] of positive ints; got [8, 8]" in line


def test_eval_on_other_data(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (60, 8, 8, 3), dtype=np.uint8)
    y = np.arange(60) % 2
    np.savez(tmp_path / "train.npz", x=x, y=y)
    np.savez(tmp_path / "other.npz", x=x[:25], y=y[:25])
    cfg = dict(TINY, data={"source": "npz", "path": str(tmp_path / "train.npz"), "normalize": "standardize"})
    cfg["train"] = {"epochs": 1}
    runs = tmp_path / "runs"
    assert_ok(invoke("train", write_config(tmp_path / "c.yaml", cfg), "--runs-dir", runs, "-q"))
    res = invoke("eval", "--runs-dir", runs, "--data-path", tmp_path / "other.npz", "--json")
    assert_ok(res)
    report = json.loads(res.stdout)
    assert report["examples"] == 25 and report["data"] == str(tmp_path / "other.npz")
    assert sum(map(sum, report["confusion_matrix"])) == 25
    assert_user_error(invoke("eval", "--runs-dir", runs, "--data-path", tmp_path / "none.npz"), "none.npz")
