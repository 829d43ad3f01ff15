"""The learning-rate range test: ``suggest`` on curves with a known answer, the rates and
the smoothing, stopping, the run folder, and ``cnncli lr-find`` end to end (its
suggestion trains the quick start)."""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from cnncli.builder import build
from cnncli.config import load_config
from cnncli.data import Split
from cnncli.lr_find import find_lr, learning_rates, run_test, set_value, smooth, suggest
from tests.helpers import TINY, assert_ok, assert_user_error, invoke

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.yaml"
RECORD = ("config.yaml", "lr_find.csv", "lr_find.json", "lr_find.png", "status.json")


def config_with(**changes) -> dict:
    """TINY with some sections replaced (a deep copy)."""
    cfg = copy.deepcopy(TINY)
    cfg.update(copy.deepcopy(changes))
    return cfg


def folders(runs_dir: Path) -> list[Path]:
    return [p for p in runs_dir.glob("*") if not p.name.startswith(".")] if runs_dir.exists() else []


# ------------------------------------------------------------------- suggest, pure
def test_suggest_finds_the_steepest_fall_of_a_known_curve():
    lrs = learning_rates(1e-7, 10.0, 100)
    x = np.log10(lrs)
    index, slope, reason = suggest(lrs, -np.tanh(x + 3))  # steepest at 1e-3, -1 per decade
    assert abs(x[index] + 3) <= 0.5 * (x[1] - x[0]) + 1e-12
    assert slope == pytest.approx(-1.0, abs=0.01)
    assert reason.startswith(f"suggested lr {lrs[index]:.1e}: the smoothed loss falls fastest there (-1.00 per decade)")
    assert "its minimum is at 1.0e+01, the last rate of the test, where it was still falling" in reason


def test_suggest_looks_only_after_the_first_points_and_before_the_minimum():
    lrs = learning_rates(1e-7, 10.0, 100)
    x = np.log10(lrs)
    gentle = -0.5 * np.tanh(x + 4)                       # the fall to read: steepest at 1e-4, -0.5 per decade
    rise = 2.0 * np.clip(x + 2, 0, None) ** 2             # the minimum near 1e-2, then the explosion
    late_drop = -0.5 * (np.tanh(5 * x) + 1)               # steeper, but past the minimum
    early_drop = np.where(np.arange(100) < 4, 3.0 - np.arange(100), 0.0)  # steeper, but in the first points
    curve = gentle + rise + late_drop + early_drop
    assert np.argmin(curve) < np.argmax(np.gradient(-late_drop))  # the late drop is past the minimum
    index, slope, reason = suggest(lrs, curve)
    assert lrs[index] == pytest.approx(1e-4, rel=0.2)
    assert reason.endswith(f"its minimum is at {lrs[np.argmin(curve)]:.1e}; past it the loss rises")
    assert slope == pytest.approx(-0.5, abs=0.02)
    # Without the window the steepest point would be one of the others: the test can tell.
    whole = np.gradient(curve, x)
    assert np.argmin(whole) != index


def test_suggest_gives_none_with_a_reason_when_it_cannot():
    lrs = learning_rates(1e-7, 10.0, 100)
    assert suggest(lrs[:12], np.linspace(2, 1, 12))[:2] == (None, None)
    assert "too few" in suggest(lrs[:12], np.linspace(2, 1, 12))[2]
    assert suggest(lrs[:3], [1.0, 5.0, 30.0])[:2] == (None, None)  # exploded at once
    rising = np.linspace(1, 4, 60)
    index, slope, reason = suggest(lrs[:60], rising)
    assert (index, slope) == (None, None) and "lower --start" in reason
    flat = 1.1 - 0.002 * np.linspace(0, 1, 100)
    flat[60:] += 0.5
    noisy = flat + np.random.default_rng(0).normal(0, 0.03, 100)
    assert suggest(lrs, flat)[0] is not None               # a fall of 0.002 is a fall...
    index, slope, reason = suggest(lrs, flat, losses=noisy)  # ...unless the batches are noisier than that
    assert (index, slope) == (None, None) and "noise of the batch losses" in reason


def test_the_rates_grow_exponentially_from_start_to_end():
    lrs = learning_rates(1e-7, 10.0, 100)
    assert len(lrs) == 100 and lrs[0] == 1e-7 and lrs[-1] == pytest.approx(10.0, rel=1e-12)
    ratios = lrs[1:] / lrs[:-1]
    assert np.allclose(ratios, 1e8 ** (1 / 99), rtol=1e-12)
    assert lrs[50] == pytest.approx(1e-7 * 1e8 ** (50 / 99))


def test_the_smoothed_loss_is_a_bias_corrected_moving_average():
    assert np.allclose(smooth([2.0, 2.0, 2.0]), 2.0)  # no pull towards 0 at the start
    beta = 0.98
    expected = ((1 - beta) * (beta * 1.0 + 3.0)) / (1 - beta ** 2)
    assert smooth([1.0, 3.0]) == pytest.approx([1.0, expected])


@pytest.mark.parametrize("lr, text", [(0.0032, "0.0032"), (3.2456e-3, "0.0032"), (2.0, "2.0"),
                                      (1.5e-5, "0.000015"), (0.1, "0.1")])
def test_the_set_value_reads_back_as_a_float(lr, text):
    assert set_value(lr) == text
    assert isinstance(yaml.safe_load(text), float)


# ------------------------------------------------------------------- the test itself
def small_network_and_data(cfg: dict, n: int = 64):
    network, loss, optimizer = build(load_config(cfg))
    rng = np.random.default_rng(0)
    train = Split(rng.random((n, *network.input_shape)).astype(network.dtype), np.arange(n) % 2)
    return network, loss, optimizer, train


def test_each_update_uses_its_rate_whatever_the_schedule():
    cfg = config_with(optimizer={"name": "sgd", "lr": 0.5, "schedule": {"name": "step", "step_size": 1}})
    network, loss, optimizer, train = small_network_and_data(cfg)
    used = []
    step = optimizer.step

    def recording_step(*args, **kwargs):
        used.append(optimizer.current_lr())
        return step(*args, **kwargs)

    optimizer.step = recording_step
    rates = learning_rates(1e-4, 1e-2, 25)
    lrs, losses, smoothed, stopped = run_test(network, loss, optimizer, train, lrs=rates, batch_size=16,
                                              shuffle_rng=np.random.default_rng(0))
    assert used == pytest.approx(list(rates), rel=1e-12)  # not 0.1x, 0.01x, ... of them
    assert list(lrs) == list(rates) and len(losses) == 25 and stopped == "ran all 25 steps"
    assert smoothed == pytest.approx(smooth(losses))


def test_a_loss_that_is_not_finite_stops_the_test_and_says_so():
    network, loss, optimizer, train = small_network_and_data(TINY)
    real = network.loss_and_gradients
    calls = []

    def fifth_is_nan(*args, **kwargs):
        calls.append(1)
        value, out = real(*args, **kwargs)
        return (math.nan if len(calls) == 5 else value), out

    network.loss_and_gradients = fifth_is_nan
    lrs, losses, _, stopped = run_test(network, loss, optimizer, train, lrs=learning_rates(1e-4, 1.0, 30),
                                       batch_size=16, shuffle_rng=np.random.default_rng(0))
    assert len(lrs) == len(losses) == 4
    assert stopped.startswith("the loss (nan) was not finite at step 5")


def test_a_large_end_diverges_early_and_the_record_says_why(tmp_path):
    cfg = config_with(optimizer={"name": "sgd", "lr": 0.01})
    result = find_lr(cfg, runs_dir=tmp_path / "runs", start=1e-3, end=1e6, steps=60)
    assert 20 < result.steps_run < 60
    assert result.stopped.startswith(f"diverged at step {result.steps_run}")
    assert result.smoothed[-1] > 4 * result.smoothed.min()
    assert (result.smoothed[:-1] <= 4 * np.minimum.accumulate(result.smoothed)[:-1]).all()
    record = json.loads((result.path / "lr_find.json").read_text())
    assert record["steps_run"] == result.steps_run and record["stopped"] == result.stopped
    assert record["settings"]["start"] == 1e-3 and record["settings"]["end"] == 1e6
    assert record["settings"]["steps"] == 60
    rows = list(csv.DictReader(io.StringIO((result.path / "lr_find.csv").read_text())))
    assert len(rows) == result.steps_run
    assert [float(r["lr"]) for r in rows] == list(learning_rates(1e-3, 1e6, 60)[:result.steps_run])
    status = json.loads((result.path / "status.json").read_text())
    assert status["status"] == "completed" and status["stopped"] == result.stopped


def test_class_weights_and_augmentation_are_the_configs(tmp_path):
    first = {}
    for label, cfg in (("plain", TINY), ("weighted", config_with(loss={"name": "categorical_crossentropy",
                                                                     "class_weight": {"circle": 3.0}})),
                       ("augmented", config_with(data={**TINY["data"], "augment": {"flip_horizontal": True}}))):
        first[label] = find_lr(cfg, runs_dir=tmp_path / label, steps=20).losses[0]
    assert first["weighted"] != pytest.approx(first["plain"], rel=1e-3)
    assert first["augmented"] != pytest.approx(first["plain"], rel=1e-3)


# --------------------------------------------------------------------------- the CLI
@pytest.fixture(scope="module")
def quickstart_test(tmp_path_factory):
    """``cnncli lr-find`` on the quick start: (config path, runs dir, CliRunner result).

    300 steps from 1e-6 to 1: the quick start's network needs some 60 updates at a good
    rate to leave its starting loss, more than the default 100 steps over 8 decades give.
    """
    root = tmp_path_factory.mktemp("lr-find")
    config = Path(shutil.copy(QUICKSTART, root / "quickstart.yaml"))
    runs = root / "runs"
    res = invoke("lr-find", config, "--start", "1e-6", "--end", "1", "--steps", "300", "--runs-dir", runs)
    return config, runs, res


def test_the_cli_writes_the_record_and_prints_the_suggestion(quickstart_test):
    config, runs, res = quickstart_test
    assert_ok(res)
    (folder,) = folders(runs)
    assert re.fullmatch(r"\d{8}-\d{6}-quickstart-lr-find", folder.name)
    for name in RECORD:
        assert (folder / name).is_file() and (folder / name).stat().st_size > 0, name
    assert not (folder / "checkpoints").exists() and not list(folder.rglob(".*.tmp"))
    assert (folder / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads((folder / "lr_find.json").read_text())
    assert record["suggested_lr"] is not None and record["slope_per_decade"] < 0
    assert record["suggested_lr"] < record["min_loss_lr"]
    assert yaml.safe_load((folder / "config.yaml").read_text())["name"] == "quickstart"
    out = res.stdout
    assert f"suggested lr {record['suggested_lr']:.1e}: the smoothed loss falls fastest there" in out
    assert record["rationale"] in out
    assert f"train with it: cnncli train {config} --set optimizer.lr={set_value(record['suggested_lr'])}" in out
    assert f"wrote {folder / 'lr_find.png'}" in out


def test_training_at_the_suggested_rate_learns(quickstart_test):
    config, runs, res = quickstart_test
    value = re.search(r"--set optimizer\.lr=(\S+)", res.stdout).group(1)
    assert isinstance(yaml.safe_load(value), float)
    trained = invoke("train", config, "--set", f"optimizer.lr={value}", "--set", "train.epochs=3", "--runs-dir",
                     runs, "-q")
    assert_ok(trained)
    (run,) = [p for p in folders(runs) if not p.name.endswith("-lr-find")]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["lr"] == float(value)
    assert max(r["val_accuracy"] for r in rows) > 0.5  # three classes: chance is 1/3


def test_ignored_settings_are_noted_once_each(tmp_path):
    cfg = config_with(optimizer={"name": "adam", "lr": 0.01, "schedule": {"name": "step", "step_size": 10}},
                      train={**TINY["train"], "early_stopping": {"patience": 2}})
    notes = []
    find_lr(cfg, runs_dir=tmp_path / "api", steps=20, on_notice=notes.append)
    assert len(notes) == 2
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    res = invoke("lr-find", path, "--steps", "20", "--runs-dir", tmp_path / "runs", "-q")
    assert_ok(res)
    lines = res.stderr.splitlines()
    assert [line for line in lines if line.startswith("note: ")] == lines and len(lines) == 2
    assert sum("step learning-rate schedule" in line for line in lines) == 1
    assert sum("train.early_stopping is ignored" in line for line in lines) == 1
    plain = invoke("lr-find", path, "--steps", "20", "--runs-dir", tmp_path / "runs", "-q",
                   "--set", "optimizer.schedule=null", "--set", "train.early_stopping=null")
    assert_ok(plain)
    assert "note:" not in plain.stderr


@pytest.mark.parametrize("options, phrase", [(["--start", "0"], "--start"), (["--start", "-1e-3"], "--start"),
                                             (["--end", "1e-7"], "--end"), (["--start", "1", "--end", "0.5"], "--end"),
                                             (["--steps", "19"], "--steps")])
def test_bad_options_are_one_line_before_anything_is_read_or_written(tmp_path, options, phrase):
    missing = tmp_path / "nope.yaml"  # not read: the options are refused first
    line = assert_user_error(invoke("lr-find", missing, *options, "--runs-dir", tmp_path / "runs"), phrase)
    assert "nope.yaml" not in line
    assert not (tmp_path / "runs").exists()


def test_a_bad_config_leaves_no_folder(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(TINY, sort_keys=False))
    assert_user_error(invoke("lr-find", path, "--set", "optimizer.lrr=1", "--runs-dir", tmp_path / "runs"),
                      "did you mean 'lr'")
    assert folders(tmp_path / "runs") == []


def test_the_name_option_names_the_folder(tmp_path):
    result = find_lr(TINY, runs_dir=tmp_path, name="probe", steps=20)
    assert result.path.name.endswith("-probe-lr-find")


def test_the_centered_average_does_not_lag_where_the_moving_average_does():
    """The moving average (beta 0.98) at a step averages the ~49 steps before it, so while
    the loss keeps falling its slope keeps growing, and its steepest point lands at the
    end of the fall, next to the minimum; the centered average's stays where the loss
    fell fastest. That is why ``suggest`` reads the centered curve."""
    from cnncli.lr_find import centered

    lrs = learning_rates(1e-7, 10, 100)
    x, i = np.log10(lrs), np.arange(100)

    def steepest(curve):
        return int(np.argmin(np.gradient(curve, x)[10:int(np.argmin(curve))])) + 10

    # falls fast over steps 25-45, slowly to step 70, then rises
    fast_then_slow = np.where(i < 25, 1.0, np.where(i < 45, 1.0 - 0.02 * (i - 25),
                                                    np.where(i < 70, 0.6 - 0.008 * (i - 45), 0.4 + 0.05 * (i - 70))))
    assert 25 <= steepest(centered(fast_then_slow, lrs)) < 45
    assert steepest(smooth(fast_then_slow)) >= 45
    # falls evenly over steps 20-70, then rises: the moving average's steepest point is at the minimum's door
    ramp = np.where(i < 20, 1.0, np.where(i < 70, 1.0 - 0.01 * (i - 20), 0.5 + 0.08 * (i - 70)))
    assert np.argmin(smooth(ramp)) - steepest(smooth(ramp)) <= 5
    assert np.argmin(centered(ramp, lrs)) - steepest(centered(ramp, lrs)) >= 20
    # the window: about three quarters of a decade (11 points at 12.4 points a decade); short curves get less
    step = np.where(i < 40, 1.0, 0.5)
    assert np.count_nonzero(np.abs(np.diff(centered(step, lrs))) > 1e-12) == 11
    assert np.allclose(centered(step[:4], lrs[:4]), np.convolve(np.pad(step[:4], 1, mode="edge"),
                                                               np.ones(3) / 3, mode="valid"))
