"""Shared by the CLI-level tests: a small experiment config (a plain dict, as YAML gives),
the CliRunner helpers that check exit codes and the one-line error form, and the sweep
tests' readers and deadline poll."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cnncli.cli import app

TINY = {
    "name": "tiny",
    "seed": 0,
    "data": {"source": "synthetic", "num_samples": 200, "num_classes": 2, "noise": 0.05},
    "model": {
        "input_shape": [8, 8, 3],
        "layers": [
            {"type": "conv2d", "filters": 4, "kernel_size": 3, "padding": "same", "activation": "relu"},
            {"type": "max_pool2d", "pool_size": 2},
            {"type": "flatten"},
            {"type": "dense", "units": 2, "activation": "softmax"},
        ],
    },
    "optimizer": {"name": "adam", "lr": 0.01},
    "train": {"epochs": 2, "batch_size": 32},
}


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_ok(res):
    assert res.exception is None or (isinstance(res.exception, SystemExit) and res.exit_code == 0), res.exc_info
    assert res.exit_code == 0, (res.stdout, res.stderr)
    assert "Traceback" not in res.stdout + res.stderr


def assert_user_error(res, *phrases):
    """Exit 2, one line on stderr starting with ``error:`` naming ``phrases``, no traceback."""
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exc_info
    assert res.exit_code == 2, (res.exit_code, res.stdout, res.stderr)
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    for phrase in phrases:
        assert phrase in lines[0], (phrase, lines[0])
    return lines[0]


@contextlib.contextmanager
def strict_floats():
    """Every NumPy overflow, division by zero or invalid operation raises, and so does any
    warning; underflow to 0 (the intended limit of the exp(-|z|) tricks) is let through."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(over="raise", divide="raise", invalid="raise", under="ignore"):
            yield


# ------------------------------------------------------------------------------ sweeps
def only_sweep(runs_dir: Path) -> Path:
    """The one sweep folder under ``runs_dir`` (fails unless there is exactly one)."""
    found = [p for p in (runs_dir / "sweeps").iterdir() if p.is_dir()]
    assert len(found) == 1, found
    return found[0]


def read_trials(folder: Path) -> dict:
    return json.loads((folder / "trials.json").read_text())


def sweep_so_far(runs_dir: Path) -> tuple[Path, dict] | None:
    """While a sweep runs in another process: its folder and its trials.json, or None
    while either is not written yet (or trials.json is half-written)."""
    sweeps_dir = runs_dir / "sweeps"
    found = [p for p in sweeps_dir.iterdir() if p.is_dir()] if sweeps_dir.is_dir() else []
    if len(found) != 1:
        return None
    try:
        return found[0], read_trials(found[0])
    except (FileNotFoundError, ValueError):
        return None


def wait_for(predicate, deadline_s: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    """Poll ``predicate()`` until it returns something truthy, or fail after ``deadline_s``
    (or as soon as ``proc`` exits, once ``predicate()`` is still falsy after it did)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            value = predicate()
            if value:
                return value
            pytest.fail(f"the sweep exited ({proc.returncode}) before {what}:\n"
                        + (log.read_text()[-3000:] if log else ""))
        time.sleep(0.02)
    pytest.fail(f"timed out after {deadline_s}s waiting for {what}:\n" + (log.read_text()[-3000:] if log else ""))
