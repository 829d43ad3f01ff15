"""Shared by the CLI-level tests: a small experiment config (a plain dict, as YAML gives)
and the CliRunner helpers that check exit codes and the one-line error form."""

import contextlib
import warnings

import numpy as np
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
