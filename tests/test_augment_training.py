"""Augmentation in training runs: configured, applied to training batches only, seeded so
that an interrupted and resumed run is bit-identical, and shown by ``visualize``."""

from __future__ import annotations

import copy
import signal

import numpy as np
import pytest

import cnncli
from cnncli import experiment, runs
from cnncli.config import load_config
from cnncli.errors import ConfigError
from tests.helpers import TINY, assert_ok, invoke
from tests.test_faults import InterruptAt, assert_same_small_run, chain_config, status_of

AUGMENT = {"flip_horizontal": True, "random_crop": {"padding": 2}, "brightness": 0.1}


def with_augment(cfg: dict, augment=AUGMENT) -> dict:
    cfg = copy.deepcopy(cfg)
    cfg["data"]["augment"] = augment
    return cfg


def test_the_config_writes_every_augmentation_key_and_checks_them_against_the_input():
    values = load_config(with_augment(TINY))["data"]["augment"]
    assert values["flip_horizontal"] is True and values["random_crop"] == {"padding": 2}
    assert values["rotate"] == 0 and set(values) >= {"translate", "contrast", "cutout", "flip_vertical"}
    with pytest.raises(ConfigError, match=r"^data\.augment\.rotat: unknown key \(did you mean 'rotate'\?\)"):
        load_config(with_augment(TINY, {"rotat": 10}))
    with pytest.raises(ConfigError, match=r"data\.augment\.cutout: expected an int <= 8 \(the image is 8x8\); got 9"):
        load_config(with_augment(TINY, {"cutout": 9}))


def test_augmentation_changes_training_only_and_all_off_changes_nothing(tmp_path):
    plain = cnncli.train(TINY, runs_dir=tmp_path / "a", handle_signals=False)
    off = cnncli.train(with_augment(TINY, {"flip_horizontal": False}), runs_dir=tmp_path / "b", handle_signals=False)
    on = cnncli.train(with_augment(TINY), runs_dir=tmp_path / "c", handle_signals=False)
    weights = [runs.load_checkpoint(r.path / "checkpoints" / "last.npz")[0] for r in (plain, off, on)]
    assert all(np.array_equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(np.array_equal(weights[0][k], weights[2][k]) for k in weights[0])
    # evaluation sees the images as stored: the same network evaluated twice agrees
    assert cnncli.evaluate_run(on.path)["loss"] == pytest.approx(on.evaluation["loss"], rel=1e-6)


def test_an_augmented_run_interrupted_and_resumed_is_bit_identical(tmp_path):
    cfg = with_augment(chain_config(), {**AUGMENT, "rotate": 15, "cutout": 3})
    reference = cnncli.train(cfg, runs_dir=tmp_path / "reference", handle_signals=False)
    run = cnncli.train(cfg, runs_dir=tmp_path / "runs", callbacks=(InterruptAt(2, 3),))
    assert run.status == "interrupted" and status_of(run.path)["batch"] == 3
    run = experiment.resume(run.path, callbacks=(InterruptAt(4, 1, signal.SIGTERM),))
    run = experiment.resume(run.path)
    assert run.status == "completed"
    assert_same_small_run(run.path, reference.path)


def test_visualize_shows_what_the_network_sees(tmp_path):
    run = cnncli.train(with_augment(TINY), runs_dir=tmp_path / "runs", handle_signals=False)
    res = invoke("visualize", run.path)
    assert_ok(res)
    from PIL import Image

    with Image.open(run.path / "visualize" / "augmented.png") as image:
        assert image.size[0] > 300 and image.size[1] > 400  # 6 examples x (stored + 4 draws)
    plain = cnncli.train(TINY, runs_dir=tmp_path / "plain", handle_signals=False)
    assert_ok(invoke("visualize", plain.path))
    assert not (plain.path / "visualize" / "augmented.png").exists()
