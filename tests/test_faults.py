"""Fault tolerance: interrupts, kills, damaged checkpoints, divergence, resources, hostile input.

* SIGINT / SIGTERM to a real ``cnncli train`` process stops after the current step with a
  checkpoint, exit 130 and a hint to resume; ``train --resume`` then ends bit-identical to an
  uninterrupted run (weights, buffers, optimizer state, RNG states, metrics but timings).
  To land the signal mid-epoch for certain, the trainer is frozen with SIGSTOP where its last
  step checkpoint bounds how far it can be, signalled, and let go with SIGCONT.
* SIGKILL loses at most the steps since the last checkpoint (``checkpoint_every: "5 steps"``);
  a run interrupted twice, or crashed between epoch checkpoints, still resumes identically.
* A second SIGINT stops at once and leaves every file readable (and the run resumable).
* Damaged, truncated, foreign-shaped, pickle-bearing or future-format checkpoints are refused
  with an error naming the file (API and CLI: exit 2, one ``error:`` line), nothing unpickled.
* NaN/inf stops the run (status failed, with epoch, step, learning rate and layer) or, with
  ``on_nan: skip_batch``, drops the batch and leaves no trace of it.
* Random config documents give a Config (whose config.yaml loads back the same) or a
  CnnCliError, never another exception, and a valid config's YAML loads back the same.
* Oversized networks and unwritable runs folders are refused before anything is allocated or
  written; a run name cannot leave the runs folder; YAML tags and pickles never run.

Every run is written under ``tmp_path``. Processes are polled for files with a deadline; no
test sleeps and hopes."""

from __future__ import annotations

import copy
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import cnncli
from cnncli import experiment, runs
from cnncli.cli import app
from cnncli.config import load_config
from cnncli.errors import CheckpointError, CnnCliError, ConfigError
from cnncli.training import Callback, NonFiniteError

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.yaml"
TIMING = {"seconds", "images_per_second"}
DEADLINE = 90.0  # seconds any one process may take before the test gives up on it

# A small network with every kind of state a resume must restore: batch-norm buffers, a
# dropout generator, Adam's slots and an exponential learning-rate schedule. 480 training
# examples in batches of 8: 60 steps per epoch (a multiple of 5).
FAULTS = {
    "name": "faults",
    "seed": 7,
    "data": {"source": "synthetic", "num_samples": 600, "num_classes": 3, "noise": 0.1},
    "model": {
        "input_shape": [16, 16, 3],
        "layers": [
            {"type": "conv2d", "filters": 8, "kernel_size": 3, "padding": "same", "activation": "relu"},
            {"type": "batch_norm"},
            {"type": "max_pool2d", "pool_size": 2},
            {"type": "flatten"},
            {"type": "dropout", "rate": 0.25},
            {"type": "dense", "units": 3, "activation": "softmax"},
        ],
    },
    "loss": "categorical_crossentropy",
    "optimizer": {"name": "adam", "lr": 0.002, "schedule": {"name": "exponential", "gamma": 0.999}},
    "train": {"epochs": 10, "batch_size": 8, "validation_split": 0.2},
}
STEPS_PER_EPOCH = 60

# Tiny and fast, for the in-process tests.
TINY = {
    "name": "tiny",
    "seed": 3,
    "data": {"source": "synthetic", "num_samples": 120, "num_classes": 2, "noise": 0.05},
    "model": {
        "input_shape": [8, 8, 3],
        "layers": [
            {"type": "conv2d", "filters": 4, "kernel_size": 3, "padding": "same", "activation": "relu"},
            {"type": "batch_norm"},
            {"type": "max_pool2d", "pool_size": 2},
            {"type": "flatten"},
            {"type": "dense", "units": 2, "activation": "softmax"},
        ],
    },
    "optimizer": {"name": "sgd", "lr": 0.01},
    "train": {"epochs": 3, "batch_size": 16},
}


def tiny(**train) -> dict:
    cfg = copy.deepcopy(TINY)
    cfg["train"].update(train)
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_user_error(res, *phrases, code: int = 2) -> str:
    """Exit ``code``, one line on stderr starting with ``error:``, no traceback."""
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exc_info
    assert res.exit_code == code, (res.exit_code, res.stdout, res.stderr)
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    for phrase in phrases:
        assert phrase in lines[0], (phrase, lines[0])
    return lines[0]


def run_folders(runs_dir: Path) -> list[Path]:
    return sorted(p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if runs_dir.is_dir() else []


def only_run(runs_dir: Path) -> Path:
    (run,) = run_folders(runs_dir)
    return run


def status_of(run: Path) -> dict:
    return json.loads((run / "status.json").read_text())


def metrics_without_timing(run: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in runs.read_metrics(run)]


def assert_bit_identical(a: dict[str, np.ndarray], b: dict[str, np.ndarray], what: str) -> None:
    assert sorted(a) == sorted(b), what
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, (what, key)
        assert a[key].tobytes() == b[key].tobytes(), f"{what}: {key} differs"


def assert_same_run(run: Path, reference: Path) -> None:
    """Weights, buffers, optimizer state and metrics equal bit for bit (timings aside)."""
    for name in ("last", "best"):
        params, optim, meta = runs.load_checkpoint(run / "checkpoints" / f"{name}.npz")
        ref_params, ref_optim, ref_meta = runs.load_checkpoint(reference / "checkpoints" / f"{name}.npz")
        assert_bit_identical(params, ref_params, f"{name}.npz parameters")
        assert_bit_identical(optim, ref_optim, f"{name}.npz optimizer state")
        assert (meta["epoch"], meta["step"]) == (ref_meta["epoch"], ref_meta["step"])
        assert meta["shuffle_rng"] == ref_meta["shuffle_rng"] and meta["layer_rngs"] == ref_meta["layer_rngs"]
    assert metrics_without_timing(run) == metrics_without_timing(reference)
    assert len(runs.read_metrics(run)) == FAULTS["train"]["epochs"]
    assert json.loads((run / "eval.json").read_text()) == json.loads((reference / "eval.json").read_text())
    assert status_of(run)["status"] == "completed"


def assert_every_file_parses(run: Path) -> None:
    """JSON files load, checkpoints pass load_checkpoint, temporaries are hidden ('.')."""
    for path in run.rglob("*"):
        if path.is_dir():
            continue
        if path.name.endswith(".tmp"):
            assert path.name.startswith("."), f"a temporary file that looks like an output: {path}"
            continue
        if path.name.startswith("."):
            continue
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".jsonl":
            for line in path.read_text().splitlines():
                json.loads(line)
        elif path.suffix == ".npz":
            runs.load_checkpoint(path)
        elif path.suffix == ".yaml":
            yaml.safe_load(path.read_text())


# ---------------------------------------------------------------------- subprocesses
class Proc:
    """``python -m cnncli.cli ...`` (or a script) with its output in files (no pipe can fill)."""

    def __init__(self, workdir: Path, *args, script: Path | None = None):
        workdir.mkdir(parents=True, exist_ok=True)
        self.out_path, self.err_path = workdir / "stdout.txt", workdir / "stderr.txt"
        head = [sys.executable, str(script)] if script else [sys.executable, "-m", "cnncli.cli"]
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.popen = subprocess.Popen([*head, *map(str, args)], cwd=workdir, stdout=out, stderr=err,
                                          stdin=subprocess.DEVNULL)

    @property
    def output(self) -> str:
        return f"stdout:\n{self.out_path.read_text()}\nstderr:\n{self.err_path.read_text()}"

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()

    def wait_for(self, condition, what: str, timeout: float = DEADLINE):
        """Poll ``condition()`` until it returns something true; fail if the process ends first."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = condition()
            except (OSError, ValueError, CheckpointError):  # a file not there yet
                value = None
            if value:
                return value
            if self.popen.poll() is not None:
                pytest.fail(f"the process ended (exit {self.popen.returncode}) before {what}\n{self.output}")
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"gave up waiting for {what}\n{self.output}")
            time.sleep(0.005)

    def wait(self, timeout: float = DEADLINE) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the process did not end in {timeout}s\n{self.output}")

    def kill(self):
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


def metrics_rows(runs_dir: Path) -> int:
    folders = run_folders(runs_dir)
    return len(runs.read_metrics(folders[0])) if folders else 0


@pytest.fixture(scope="module")
def faults_config(tmp_path_factory) -> Path:
    return write_config(tmp_path_factory.mktemp("config") / "faults.yaml", FAULTS)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, faults_config) -> Path:
    """The same config, never interrupted (in this process)."""
    run = cnncli.train(str(faults_config), runs_dir=tmp_path_factory.mktemp("reference"), handle_signals=False)
    assert run.status == "completed"
    return run.path


def resume_with_cli(run: Path) -> None:
    res = invoke("train", "--resume", run, "--quiet")
    assert res.exit_code == 0, (res.exit_code, res.stdout, res.stderr, res.exc_info)


# ------------------------------------------------------------------- 1. SIGINT/SIGTERM
def last_checkpoint_meta(runs_dir: Path) -> dict | None:
    folders = run_folders(runs_dir)
    return runs.load_checkpoint(folders[0] / "checkpoints" / "last.npz")[2] if folders else None


def freeze_mid_epoch(proc: Proc, runs_dir: Path, every: int) -> dict | None:
    """SIGSTOP the trainer where its last checkpoint (every ``every`` steps) is early enough in
    an epoch that the step now running is also mid-epoch; return that checkpoint's meta."""
    latest = last_checkpoint_meta(runs_dir)
    if latest is None or not 1 <= latest["batch"] <= STEPS_PER_EPOCH - every - 1:
        return None
    proc.popen.send_signal(signal.SIGSTOP)
    try:
        latest = last_checkpoint_meta(runs_dir)  # it cannot move on by more than ``every`` steps now
        if 1 <= latest["batch"] <= STEPS_PER_EPOCH - every - 1:
            return latest
    except BaseException:
        proc.popen.send_signal(signal.SIGCONT)
        raise
    proc.popen.send_signal(signal.SIGCONT)
    return None


@pytest.mark.slow
@pytest.mark.parametrize("signum, quiet, mid_epoch", [(signal.SIGINT, True, True), (signal.SIGTERM, False, False)],
                         ids=["SIGINT-mid-epoch", "SIGTERM"])
def test_a_signal_stops_after_the_step_and_resume_is_bit_identical(tmp_path, faults_config, reference_run,
                                                                  signum, quiet, mid_epoch):
    runs_dir = tmp_path / "runs"
    every = 7
    extra = ["--set", f"train.checkpoint_every={every} steps"] if mid_epoch else []
    proc = Proc(tmp_path / "proc", "train", faults_config, "--runs-dir", runs_dir, *(["-q"] if quiet else []),
                *extra)
    if mid_epoch:
        # Frozen, the trainer is at most ``every`` steps past its last checkpoint, and that is
        # early enough in the epoch for the signal to land in the middle of it.
        frozen = proc.wait_for(lambda: freeze_mid_epoch(proc, runs_dir, every), "a checkpoint early in an epoch")
        proc.popen.send_signal(signum)
        proc.popen.send_signal(signal.SIGCONT)
    else:
        proc.wait_for(lambda: metrics_rows(runs_dir) >= 1, "the first epoch's metrics row")
        proc.popen.send_signal(signum)
    code = proc.wait()
    assert code == 130, proc.output
    assert "--resume" in proc.stderr and "Traceback" not in proc.output
    run = only_run(runs_dir)
    assert f"cnncli train --resume {run}" in proc.stderr
    status = status_of(run)
    assert status["status"] == "interrupted", status
    done = status["epochs_completed"]
    assert isinstance(done, int) and isinstance(status["step"], int) and "batch" in status
    assert "epoch" not in status  # one numbering: epochs completed, and the epoch in progress (from 1)
    assert (0 if mid_epoch else 1) <= done < FAULTS["train"]["epochs"]
    assert status["step"] == done * STEPS_PER_EPOCH + status["batch"]
    if mid_epoch:
        assert done == frozen["epoch"] and frozen["batch"] <= status["batch"] <= frozen["batch"] + every
        # The epoch the terminal names is the one status.json names: numbered from 1.
        assert status["current_epoch"] == done + 1
        assert f"interrupted in epoch {done + 1} after batch {status['batch']} " in proc.stderr
    else:
        assert "current_epoch" not in status or status["current_epoch"] == done + 1
    # The checkpoint holds exactly the steps the status reports.
    _, optim, meta = runs.load_checkpoint(run / "checkpoints" / "last.npz")
    assert meta["step"] == int(optim["t"]) == status["step"]
    assert (meta["epoch"], meta["batch"]) == (done, status["batch"])
    assert status["checkpoint"] == {"epochs_completed": meta["epoch"], "batch": meta["batch"], "step": meta["step"]}
    assert_every_file_parses(run)

    resume_with_cli(run)
    assert_same_run(run, reference_run)


# ------------------------------------------------------------------------- 2. SIGKILL
@pytest.mark.slow
def test_sigkill_loses_at_most_the_steps_since_the_last_checkpoint(tmp_path, faults_config, reference_run):
    runs_dir = tmp_path / "runs"
    proc = Proc(tmp_path / "proc", "train", faults_config, "--runs-dir", runs_dir, "-q",
                "--set", "train.checkpoint_every=5 steps")

    def mid_epoch_checkpoint():
        folders = run_folders(runs_dir)
        if not folders:
            return None
        meta = runs.load_checkpoint(folders[0] / "checkpoints" / "last.npz")[2]
        return meta if meta["batch"] > 0 and meta["epoch"] >= 1 else None

    proc.wait_for(mid_epoch_checkpoint, "a checkpoint in the middle of an epoch")
    proc.popen.send_signal(signal.SIGSTOP)  # hold it still to see where it is, then kill it
    frozen = runs.load_checkpoint(only_run(runs_dir) / "checkpoints" / "last.npz")[2]
    proc.popen.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    run = only_run(runs_dir)
    assert status_of(run)["status"] == "running"  # nobody could say otherwise
    assert_every_file_parses(run)
    _, optim, meta = runs.load_checkpoint(run / "checkpoints" / "last.npz")
    assert meta == frozen
    assert meta["step"] % 5 == 0 and meta["step"] == int(optim["t"])
    assert meta["step"] == meta["epoch"] * STEPS_PER_EPOCH + meta["batch"]
    assert meta["step"] < FAULTS["train"]["epochs"] * STEPS_PER_EPOCH  # killed before the end

    resume_with_cli(run)
    assert_same_run(run, reference_run)


# ------------------------------------------------------------------ 3. second SIGINT
# The second SIGINT has to arrive while the first is still being honoured (before the
# step ends), which no outside timing can promise on a loaded machine. So the child is the
# real CLI with one addition: after the real handler has taken the first signal, it touches
# a marker file and waits there; the test sees the marker and sends the second signal, which
# the real handler turns into KeyboardInterrupt wherever training was.
ANNOUNCE = '''
import contextlib, pathlib, signal, sys, time
import cnncli.experiment as experiment

marker = pathlib.Path(sys.argv[1])
original = experiment.graceful_interrupts


@contextlib.contextmanager
def announcing():
    with original() as should_stop:
        handler = signal.getsignal(signal.SIGINT)

        def first_then_wait(signum, frame):
            handler(signum, frame)  # raises KeyboardInterrupt the second time
            marker.touch()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                time.sleep(0.01)

        signal.signal(signal.SIGINT, first_then_wait)
        yield should_stop


experiment.graceful_interrupts = announcing
from cnncli.cli import app

app(sys.argv[2:], prog_name="cnncli")
'''


@pytest.mark.slow
def test_a_second_sigint_stops_at_once_and_corrupts_nothing(tmp_path, faults_config, reference_run):
    script = tmp_path / "announce.py"
    script.write_text(ANNOUNCE)
    marker = tmp_path / "first-signal-taken"
    runs_dir = tmp_path / "runs"
    proc = Proc(tmp_path / "proc", marker, "train", faults_config, "--runs-dir", runs_dir, "-q", script=script)
    proc.wait_for(lambda: metrics_rows(runs_dir) >= 1 and (only_run(runs_dir) / "checkpoints" / "last.npz").is_file(),
                  "the first epoch's metrics and checkpoint")
    proc.popen.send_signal(signal.SIGINT)
    proc.wait_for(marker.exists, "the first SIGINT to be taken")
    proc.popen.send_signal(signal.SIGINT)
    assert proc.wait() == 130, proc.output
    assert "stopped at once" in proc.stderr and "--resume" in proc.stderr and "Traceback" not in proc.output
    run = only_run(runs_dir)
    status = status_of(run)
    assert status["status"] == "interrupted" and "second interrupt" in status["reason"], status
    assert_every_file_parses(run)
    # The last checkpoint (of a finished epoch) is intact: resuming from it still ends
    # identical to the uninterrupted run.
    resume_with_cli(run)
    assert_same_run(run, reference_run)


class InterruptAt(Callback):
    """Raises SIGINT in this process after batch ``batch`` of epoch ``epoch`` (what Ctrl-C does)."""

    def __init__(self, epoch: int, batch: int, signum=signal.SIGINT):
        self.at, self.signum = (epoch, batch), signum

    def on_batch_end(self, epoch, batch, loss, accuracy, images_per_second):
        if (epoch, batch) == self.at:
            signal.raise_signal(self.signum)


class CrashAt(Callback):
    def __init__(self, epoch: int, batch: int):
        self.at = (epoch, batch)

    def on_batch_end(self, epoch, batch, loss, accuracy, images_per_second):
        if (epoch, batch) == self.at:
            raise RuntimeError("the machine went away")


def chain_config(**train) -> dict:
    """TINY with dropout and early stopping that restores the best weights (6 steps per epoch)."""
    cfg = tiny(epochs=5, early_stopping={"patience": 10, "restore_best": True}, **train)
    cfg["model"]["layers"].insert(4, {"type": "dropout", "rate": 0.3})
    cfg["optimizer"] = {"name": "momentum", "lr": 0.02, "schedule": {"name": "step", "step_size": 7, "gamma": 0.5}}
    return cfg


def assert_same_small_run(run: Path, reference: Path, epochs: int = 5) -> None:
    for name in ("last", "best"):
        a, oa, _ = runs.load_checkpoint(run / "checkpoints" / f"{name}.npz")
        b, ob, _ = runs.load_checkpoint(reference / "checkpoints" / f"{name}.npz")
        assert_bit_identical(a, b, name)
        assert_bit_identical(oa, ob, name)
    assert metrics_without_timing(run) == metrics_without_timing(reference)
    assert len(runs.read_metrics(run)) == epochs
    assert json.loads((run / "eval.json").read_text()) == json.loads((reference / "eval.json").read_text())
    assert status_of(run)["status"] == "completed"


def test_interrupted_twice_and_resumed_twice_is_still_bit_identical(tmp_path):
    reference = cnncli.train(chain_config(), runs_dir=tmp_path / "reference", handle_signals=False)
    run = cnncli.train(chain_config(), runs_dir=tmp_path / "runs", callbacks=(InterruptAt(1, 3),))
    assert run.status == "interrupted"
    assert (status_of(run.path)["epochs_completed"], status_of(run.path)["batch"]) == (0, 3)
    run = experiment.resume(run.path, callbacks=(InterruptAt(3, 5, signal.SIGTERM),))
    assert run.status == "interrupted"
    assert (status_of(run.path)["epochs_completed"], status_of(run.path)["batch"], status_of(run.path)["step"]) == (2, 5, 17)
    assert [r["epoch"] for r in runs.read_metrics(run.path)] == [1, 2]
    run = experiment.resume(run.path)
    assert run.status == "completed"
    assert_same_small_run(run.path, reference.path)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers given back


def test_a_crash_between_epoch_checkpoints_rolls_the_log_back_and_resumes_identically(tmp_path):
    reference = cnncli.train(chain_config(checkpoint_every=2), runs_dir=tmp_path / "reference",
                             handle_signals=False)
    with pytest.raises(RuntimeError):
        cnncli.train(chain_config(checkpoint_every=2), runs_dir=tmp_path / "runs", handle_signals=False,
                     callbacks=(CrashAt(4, 2),))
    run = only_run(tmp_path / "runs")
    status = status_of(run)
    assert status["status"] == "failed" and "the machine went away" in status["reason"]
    assert status["checkpoint"]["epochs_completed"] == 2
    assert [r["epoch"] for r in runs.read_metrics(run)] == [1, 2, 3]  # epoch 3 is not in any checkpoint
    resumed = experiment.resume(run, handle_signals=False)
    assert resumed.status == "completed"
    assert_same_small_run(run, reference.path)


def test_ctrl_c_after_the_last_epoch_says_interrupted_and_resume_finishes_the_run(tmp_path, monkeypatch):
    reference = cnncli.train(chain_config(), runs_dir=tmp_path / "reference", handle_signals=False)
    real_write_curves = experiment.write_curves

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(experiment, "write_curves", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cnncli.train(chain_config(), runs_dir=tmp_path / "runs")
    run = only_run(tmp_path / "runs")
    status = status_of(run)
    assert status["status"] == "interrupted" and status["epochs_completed"] == 5, status
    monkeypatch.setattr(experiment, "write_curves", real_write_curves)
    assert experiment.resume(run).status == "completed"
    assert_same_small_run(run, reference.path)
    assert (run / "curves.png").is_file()


def test_an_interrupted_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "status.json"
    runs.write_json(target, {"status": "running"})

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(runs.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        runs.write_json(target, {"status": "completed"})
    assert json.loads(target.read_text()) == {"status": "running"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["status.json"]


# ------------------------------------------------------------- 4. checkpoints refused
class Unpickled:
    """Pickles to a call of os.mkdir(marker): unpickling it would leave a folder behind."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _meta(arrays: dict) -> dict:
    return json.loads(str(arrays["meta"]))


def _resave(path: Path, arrays: dict, meta: dict | None = None) -> None:
    if meta is not None:
        arrays = {**arrays, "meta": np.array(json.dumps(meta))}
    path.unlink()
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def damage_array_resaved(path: Path) -> str:
    """One weight changed, the file saved again properly, the checksum left as it was."""
    arrays = _arrays(path)
    arrays["param/layers.0.kernel"] = arrays["param/layers.0.kernel"].copy()
    arrays["param/layers.0.kernel"].flat[0] += 1
    _resave(path, arrays)
    return "checksum"


def damage_payload_rezipped(path: Path) -> str:
    """Bytes flipped inside an array's payload, the zip rebuilt with fresh CRCs so it opens."""
    with zipfile.ZipFile(path) as z:
        members = {info.filename: z.read(info) for info in z.infolist()}
    name = "param/layers.4.kernel.npy"
    data = bytearray(members[name])
    for i in range(len(data) - 16, len(data)):  # the end of the payload, past the npy header
        data[i] ^= 0xFF
    members[name] = bytes(data)
    path.unlink()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for member, content in members.items():
            z.writestr(member, content)
    return "checksum"


def damage_bytes_in_place(path: Path) -> str:
    """Bytes flipped in the file as it lies on disk (the zip's own CRC catches it)."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("param/layers.4.kernel.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 128  # in the array data
    for i in range(start, start + 8):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))
    return "not a readable checkpoint"


def damage_truncated(path: Path) -> str:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return "not a readable checkpoint"


def damage_empty(path: Path) -> str:
    path.write_bytes(b"")
    return "not a readable checkpoint"


def damage_format_version(path: Path) -> str:
    arrays = _arrays(path)
    _resave(path, arrays, {**_meta(arrays), "format_version": 99})
    return "format 99"


def damage_meta_not_an_object(path: Path) -> str:
    arrays = _arrays(path)
    _resave(path, {**arrays, "meta": np.array("[1, 2, 3]")})
    return "meta"


def damage_meta_not_json(path: Path) -> str:
    arrays = _arrays(path)
    _resave(path, {**arrays, "meta": np.array('{"format_version": 1, "epoch": ')})
    return "meta"


def damage_no_meta(path: Path) -> str:
    arrays = _arrays(path)
    del arrays["meta"]
    _resave(path, arrays)
    return "no meta"


def damage_pickled_param(path: Path) -> str:
    arrays = _arrays(path)
    marker = path.parent / "UNPICKLED"
    arrays["param/layers.0.kernel"] = np.array([Unpickled(marker)], dtype=object)
    _resave(path, arrays)
    return "not a readable checkpoint"


def damage_pickled_meta(path: Path) -> str:
    arrays = _arrays(path)
    marker = path.parent / "UNPICKLED"
    arrays["meta"] = np.array([{"a": 1}, Unpickled(marker)], dtype=object)
    _resave(path, arrays)
    return "not a readable checkpoint"


DAMAGES = {f.__name__[len("damage_"):]: f for f in (
    damage_array_resaved, damage_payload_rezipped, damage_bytes_in_place, damage_truncated, damage_empty,
    damage_format_version, damage_meta_not_an_object, damage_meta_not_json, damage_no_meta,
    damage_pickled_param, damage_pickled_meta)}


@pytest.fixture(scope="module")
def small_runs(tmp_path_factory) -> dict[str, Path]:
    """Finished tiny runs: 'a' (4 filters, sgd), 'b' (6 filters), 'c' (4 filters, adam)."""
    root = tmp_path_factory.mktemp("small")
    out = {}
    for key, changes in {"a": {}, "b": {"filters": 6}, "c": {"optimizer": "adam"}}.items():
        cfg = tiny(epochs=2)
        if "filters" in changes:
            cfg["model"]["layers"][0]["filters"] = changes["filters"]
        if "optimizer" in changes:
            cfg["optimizer"] = {"name": changes["optimizer"], "lr": 0.01}
        out[key] = cnncli.train(cfg, runs_dir=root / key, handle_signals=False).path
    return out


def resumable_copy(run: Path, dest: Path) -> Path:
    """A copy of ``run`` that looks killed mid-training (status running), so resume applies."""
    copy_ = dest / run.name
    shutil.copytree(run, copy_)
    runs.write_status(copy_, "running", epoch=1, step=1)
    return copy_


def test_the_damages_really_damage_and_the_pickle_would_run(small_runs, tmp_path):
    """Controls: a clean copy loads, and the pickle-bearing file does run code when unpickled."""
    run = resumable_copy(small_runs["a"], tmp_path)
    path = run / "checkpoints" / "last.npz"
    runs.load_checkpoint(path)
    damage_pickled_param(path)
    marker = path.parent / "UNPICKLED"
    with np.load(path, allow_pickle=True) as f:
        f["param/layers.0.kernel"]
    assert marker.is_dir()  # the sentinel works: allow_pickle=True would execute it


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_checkpoint_is_refused_naming_the_file(small_runs, tmp_path, damage):
    run = resumable_copy(small_runs["a"], tmp_path)
    path = run / "checkpoints" / "last.npz"
    phrase = DAMAGES[damage](path)
    marker = path.parent / "UNPICKLED"
    with pytest.raises(CheckpointError) as info:
        runs.load_checkpoint(path)
    assert str(path) in str(info.value) and phrase in str(info.value), str(info.value)
    # Through the CLI: exit 2, one line naming the file, nothing unpickled, nothing changed.
    status_before = (run / "status.json").read_bytes()
    line = assert_user_error(invoke("eval", run, "--checkpoint", "last"), str(path), phrase)
    assert "Traceback" not in line
    assert_user_error(invoke("train", "--resume", run, "-q"), str(path), phrase)
    assert (run / "status.json").read_bytes() == status_before
    assert not marker.exists(), "a pickle inside the checkpoint was executed"


def test_a_checkpoint_of_another_network_is_refused_on_resume_and_eval(small_runs, tmp_path):
    run = resumable_copy(small_runs["b"], tmp_path)  # 6 filters
    path = run / "checkpoints" / "last.npz"
    shutil.copyfile(small_runs["a"] / "checkpoints" / "last.npz", path)  # 4 filters
    with pytest.raises(CheckpointError) as info:
        experiment.resume(run, handle_signals=False)
    assert str(path) in str(info.value) and "shape" in str(info.value)
    assert_user_error(invoke("train", "--resume", run, "-q"), str(path), "shape")
    assert_user_error(invoke("eval", run, "--checkpoint", "last"), str(path), "shape")


def test_a_checkpoint_of_another_optimizer_is_refused_on_resume(small_runs, tmp_path):
    run = resumable_copy(small_runs["c"], tmp_path)  # adam: two slots per parameter
    path = run / "checkpoints" / "last.npz"
    shutil.copyfile(small_runs["a"] / "checkpoints" / "last.npz", path)  # sgd: none
    assert_user_error(invoke("train", "--resume", run, "-q"), str(path), "optimizer state")


def test_a_best_checkpoint_of_another_network_is_refused_before_training(small_runs, tmp_path):
    run = resumable_copy(small_runs["b"], tmp_path)
    best = run / "checkpoints" / "best.npz"
    shutil.copyfile(small_runs["a"] / "checkpoints" / "best.npz", best)
    metrics_before = (run / "metrics.jsonl").read_bytes()
    assert_user_error(invoke("train", "--resume", run, "-q"), str(best), "shape")
    assert (run / "metrics.jsonl").read_bytes() == metrics_before  # refused before training


def test_a_checkpoint_whose_meta_lacks_the_training_state_is_refused_on_resume(small_runs, tmp_path):
    run = resumable_copy(small_runs["a"], tmp_path)
    path = run / "checkpoints" / "last.npz"
    arrays = _arrays(path)
    meta = _meta(arrays)
    del meta["train_state"]
    _resave(path, arrays, meta)
    runs.load_checkpoint(path)  # the arrays are intact; only resuming needs the state
    assert_user_error(invoke("train", "--resume", run, "-q"), str(path))


def test_a_completed_run_is_not_resumed(small_runs):
    assert_user_error(invoke("train", "--resume", small_runs["a"], "-q"), "completed")


def test_a_killed_run_without_a_checkpoint_says_so(small_runs, tmp_path):
    run = resumable_copy(small_runs["a"], tmp_path)
    for p in (run / "checkpoints").iterdir():
        p.unlink()
    assert_user_error(invoke("train", "--resume", run, "-q"), "no checkpoint")


# ------------------------------------------------------------------------ 5. divergence
DIVERGING = {
    "name": "diverging",
    "seed": 1,
    "data": {"source": "synthetic", "num_samples": 200, "num_classes": 3, "noise": 0.1},
    "model": {
        "input_shape": [8, 8, 3],
        "layers": [
            {"type": "conv2d", "filters": 4, "kernel_size": 3, "padding": "same", "activation": "relu"},
            {"type": "flatten"},
            {"type": "dense", "units": 3, "activation": "softmax"},
        ],
    },
    "loss": "categorical_crossentropy",
    # 161 training examples in batches of 20: 9 steps per epoch. The first epoch trains at
    # lr 0.01; from the second the rate is 1e28 and the float32 weights overflow.
    "optimizer": {"name": "sgd", "lr": 0.01, "schedule": {"name": "step", "step_size": 9, "gamma": 1e30}},
    "train": {"epochs": 4, "batch_size": 20},
}


def assert_finite_checkpoint(path: Path, epoch: int) -> None:
    params, optim, meta = runs.load_checkpoint(path)
    assert meta["epoch"] == epoch
    for key, value in {**params, **optim}.items():
        assert np.all(np.isfinite(value)), f"{path.name}: {key} is not finite"


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_divergence_fails_the_run_with_the_reason_and_keeps_the_good_checkpoints(tmp_path):
    cfg = write_config(tmp_path / "diverging.yaml", DIVERGING)
    runs_dir = tmp_path / "runs"
    res = invoke("train", cfg, "--runs-dir", runs_dir, "-q")
    assert res.exit_code == 1, (res.exit_code, res.stdout, res.stderr, res.exc_info)
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "not finite" in errors[0] and "Traceback" not in res.stderr, res.stderr
    run = only_run(runs_dir)
    status = status_of(run)
    assert status["status"] == "failed"
    reason = status["reason"]
    for phrase in ("NonFiniteError", "not finite", "epoch 2", "step 11", "batch 2 of 9", "learning rate 1e+28"):
        assert phrase in reason, (phrase, reason)
    assert status["checkpoint"] == {"epochs_completed": 1, "batch": 0, "step": 9}
    assert [r["epoch"] for r in runs.read_metrics(run)] == [1]
    assert_finite_checkpoint(run / "checkpoints" / "best.npz", 1)
    assert_finite_checkpoint(run / "checkpoints" / "last.npz", 1)
    assert_user_error(invoke("train", "--resume", run, "-q"), code=1)  # resuming diverges again, the same way
    assert "step 11" in status_of(run)["reason"]
    assert_finite_checkpoint(run / "checkpoints" / "last.npz", 1)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_divergence_with_skip_batch_completes_and_counts_the_skipped_batches(tmp_path):
    cfg = write_config(tmp_path / "diverging.yaml", {**DIVERGING, "train": {**DIVERGING["train"],
                                                                              "on_nan": "skip_batch"}})
    runs_dir = tmp_path / "runs"
    res = invoke("train", cfg, "--runs-dir", runs_dir, "-q")
    assert res.exit_code == 0, (res.exit_code, res.stdout, res.stderr, res.exc_info)
    run = only_run(runs_dir)
    assert status_of(run)["status"] == "completed"
    rows = runs.read_metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert rows[0]["skipped_batches"] == 0 and all(r["skipped_batches"] > 0 for r in rows[1:])


class Inject:
    """Wraps Network.loss_and_gradients: on the listed calls (1-based), makes a gradient or an
    input NaN."""

    def __init__(self, monkeypatch, calls, *, layer: int | None = 0, key: str = "kernel", input_: bool = False):
        from cnncli.nn.network import Network

        self.calls, self.n = set(calls), 0
        original = Network.loss_and_gradients
        inject = self

        def wrapped(net, x, y, loss, **kwargs):
            inject.n += 1
            hit = inject.n in inject.calls
            if hit and input_:
                x = x.copy()
                x[0] = np.nan
            out = original(net, x, y, loss, **kwargs)
            if hit and not input_:
                net.layers[layer].grads[key][...] = np.nan
            return out

        monkeypatch.setattr(Network, "loss_and_gradients", wrapped)


def test_a_non_finite_gradient_names_the_layer_step_and_learning_rate(tmp_path, monkeypatch):
    Inject(monkeypatch, [8], layer=0)  # 6 steps per epoch: epoch 2, batch 2
    with pytest.raises(NonFiniteError) as info:
        cnncli.train(tiny(), runs_dir=tmp_path, handle_signals=False)
    message = str(info.value)
    for phrase in ("gradient of layers[0] (conv2d) kernel", "epoch 2", "step 8", "batch 2 of 6",
                   "learning rate 0.01"):
        assert phrase in message, (phrase, message)
    run = only_run(tmp_path)
    status = status_of(run)
    assert status["status"] == "failed" and message in status["reason"]
    assert_finite_checkpoint(run / "checkpoints" / "last.npz", 1)
    assert_finite_checkpoint(run / "checkpoints" / "best.npz", 1)


def test_skip_batch_drops_exactly_the_non_finite_batches(tmp_path, monkeypatch):
    Inject(monkeypatch, [3, 8, 9], layer=4)
    run = cnncli.train(tiny(on_nan="skip_batch"), runs_dir=tmp_path, handle_signals=False)
    assert run.status == "completed"
    rows = runs.read_metrics(run.path)
    assert [r["skipped_batches"] for r in rows] == [1, 2, 0]
    assert [r["step"] for r in rows] == [5, 9, 15]  # a skipped batch makes no update
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["val_loss"]) for r in rows)
    assert_finite_checkpoint(run.path / "checkpoints" / "last.npz", 3)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_skipped_batch_leaves_the_batch_norm_statistics_alone(tmp_path, monkeypatch):
    """A batch whose input holds a NaN is skipped, and its NaN must not reach the running
    statistics (they would make every later evaluation NaN)."""
    Inject(monkeypatch, [3], input_=True)
    run = cnncli.train(tiny(on_nan="skip_batch"), runs_dir=tmp_path, handle_signals=False)
    rows = runs.read_metrics(run.path)
    assert [r["skipped_batches"] for r in rows] == [1, 0, 0]
    assert all(math.isfinite(r["val_loss"]) for r in rows), rows
    assert_finite_checkpoint(run.path / "checkpoints" / "last.npz", 3)


def test_an_epoch_whose_batches_were_all_skipped_reports_no_loss_rather_than_zero(tmp_path, monkeypatch):
    Inject(monkeypatch, range(7, 13), layer=4)  # every batch of epoch 2
    run = cnncli.train(tiny(on_nan="skip_batch"), runs_dir=tmp_path, handle_signals=False)
    rows = runs.read_metrics(run.path)
    assert rows[1]["skipped_batches"] == 6 and rows[1]["step"] == rows[0]["step"]
    assert math.isnan(rows[1]["loss"]) and math.isnan(rows[1]["accuracy"]), rows[1]  # not a perfect 0.0
    assert math.isfinite(rows[2]["loss"])


# ------------------------------------------------------------------ 6. random configs

BASES = [yaml.safe_load(QUICKSTART.read_text()), yaml.safe_load((REPO / "configs" / "all_options.yaml").read_text()),
         copy.deepcopy(TINY)]
KEYS = ["name", "seed", "data", "model", "loss", "optimizer", "train", "eval", "source", "num_samples",
        "num_classes", "noise", "normalize", "limit", "test_path", "path", "x_key", "y_key", "use_test",
        "on_bad_image", "cache", "input_shape", "layers", "type", "filters", "kernel_size", "stride", "padding",
        "dilation", "use_bias", "activation", "kernel_initializer", "bias_initializer", "momentum", "epsilon",
        "pool_size", "count_include_pad", "units", "rate", "negative_slope", "lr", "beta1", "beta2", "rho",
        "weight_decay", "clip_norm", "schedule", "gamma", "step_size", "decay_steps", "t_max", "min_lr", "decay",
        "reduction", "half", "epochs", "batch_size", "shuffle", "validation_split", "early_stopping", "patience",
        "monitor", "min_delta", "restore_best", "checkpoint_every", "on_nan", "dtype", "checkpoint", "junk", "",
        "plugins", "file", "sha256", "from_logits", "implementation",
        "0", "__class__", "Name"]
WORDS = ["adam", "sgd", "momentum", "nesterov", "adagrad", "adadelta", "rmsprop", "conv2d", "dense", "flatten",
         "max_pool2d", "avg_pool2d", "global_avg_pool2d", "dropout", "batch_norm", "activation", "relu",
         "leaky_relu", "softmax", "sigmoid", "tanh", "linear", "softplus", "same", "valid", "mse", "mae",
         "categorical_crossentropy", "binary_crossentropy", "kl_divergence", "synthetic", "npz", "idx",
         "image_folder", "scale", "standardize", "none", "float32", "float64", "float16", "stop", "skip_batch",
         "val_loss", "val_accuracy", "loss", "accuracy", "5 steps", "2 epochs", "1 epoch", "0 steps", "-1 steps",
         "\u00b2 steps", "\u0663 steps", "best", "last", "sum", "mean", "step", "exponential", "cosine", "constant",
         "decay", "he_uniform", "glorot_uniform", "zeros", "", " ", "1e-3", "nan", ".inf", "~", "yes", "../x",
         "/nonexistent", "{", "[1, 2", "!!python/object/apply:os.system ['true']", "&a [*a]"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 70), st.integers(),
                    st.sampled_from([2**31, 2**63, 2**64, 10**30]), st.floats(), st.sampled_from(WORDS),
                    st.text(max_size=8))
junk = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=5)), inner,
                                                 max_size=4)), max_leaves=8)
# Mostly values a real config could hold, so that many examples get deep into validation.
plausible = st.one_of(st.integers(0, 40), st.sampled_from(WORDS), st.floats(0, 2), st.booleans(), st.none(),
                      st.lists(st.integers(0, 20), max_size=3), st.sampled_from([10**6, 2**40, 2**60, 2**64]))
values = st.one_of(plausible, plausible, plausible, junk)
KEY_PATHS = ["name", "seed", "plugins", "plugins[0]", "loss.from_logits", "data.source", "data.num_samples", "data.num_classes", "data.path", "data.limit",
             "model.input_shape", "model.input_shape[0]", "model.layers", "model.layers[0]",
             "model.layers[0].filters", "model.layers[0].kernel_size", "model.layers[0].padding",
             "model.layers[0].activation", "model.layers[1].pool_size", "model.layers[-1].units",
             "model.layers[-1].activation", "model.layers.2.type", "model.layers[99].units", "loss", "loss.name",
             "loss.reduction", "optimizer", "optimizer.name", "optimizer.lr", "optimizer.schedule",
             "optimizer.schedule.name", "optimizer.clip_norm", "train.epochs", "train.batch_size",
             "train.checkpoint_every", "train.on_nan", "train.early_stopping", "train.early_stopping.patience",
             "train.dtype", "eval.batch_size", "a..b", "model.layers.--5", "model.layers.\u00b2", "x[", "[0]",
             "model.layers[0][1]", "name.first", "seed[0]", "junk", " ", "", "=", "model.layers[-99]"]


@st.composite
def mutated_configs(draw):
    """A real config with a few keys changed, removed or added, at any depth."""
    cfg = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(0, 4))):
        node = cfg
        while True:  # walk down to a container
            keys = list(node) if isinstance(node, dict) else list(range(len(node)))
            if not keys or draw(st.integers(0, 3)) == 0:
                break
            key = draw(st.sampled_from(keys))
            if not isinstance(node[key], (dict, list)):
                break
            node = node[key]
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        op = draw(st.sampled_from(["set", "set", "delete", "add"]))
        if op == "add" or not keys:
            if isinstance(node, dict):
                node[draw(st.one_of(st.sampled_from(KEYS), st.text(max_size=5)))] = draw(values)
            else:
                node.append(draw(values))
        elif op == "set":
            node[draw(st.sampled_from(keys))] = draw(values)
        else:
            del node[draw(st.sampled_from(keys))]
    return cfg


override_value = st.one_of(
    values.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()),
    st.sampled_from(WORDS), st.text(max_size=10))
override = st.builds(lambda key, value: f"{key}={value}", st.sampled_from(KEY_PATHS), override_value)
junk_override = st.builds(lambda key, value: f"{key}={value}", st.text(max_size=10), override_value) \
    | st.text(max_size=12)
overrides = st.lists(st.one_of(override, override, override, junk_override), max_size=2)
documents = st.one_of(
    mutated_configs().map(lambda c: ("dict", c)),
    mutated_configs().map(lambda c: ("dict", c)),
    mutated_configs().map(lambda c: ("yaml", yaml.safe_dump(c, sort_keys=False))),
    mutated_configs().map(lambda c: ("yaml", yaml.safe_dump(c, sort_keys=False))),
    junk.map(lambda v: ("yaml", yaml.safe_dump(v))),
    st.text(max_size=60).map(lambda t: ("yaml", t)),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(document=documents, sets=overrides)
def test_any_config_document_gives_a_config_or_a_user_error(tmp_path, document, sets):
    kind, content = document
    if kind == "yaml":
        source = tmp_path / "config.yaml"
        source.write_text(content, encoding="utf-8")
    else:
        source = content
    try:
        config = load_config(source, sets)
    except CnnCliError as err:
        assert str(err).strip(), repr(err)
        return
    assert isinstance(config.values, dict) and set(config.values) == {"name", "seed", "plugins", "data", "model",
                                                                       "loss", "optimizer", "train", "eval"}
    # A run folder keeps config.yaml, and resume and eval read it back: it must load to the same values.
    saved = tmp_path / "run-config.yaml"
    saved.write_text(config.to_yaml(), encoding="utf-8")
    assert load_config(saved).values == config.values


def strings_in(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from strings_in(k)
            yield from strings_in(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings_in(v)


@pytest.mark.parametrize("item", ["model.layers.--1.units=3", "model.layers.\u00b2=1"])
def test_an_override_key_with_a_digit_like_segment_is_a_user_error(item):
    with pytest.raises(ConfigError):
        load_config(QUICKSTART, [item])


def test_checkpoint_every_with_a_digit_like_count_is_a_user_error():
    with pytest.raises(ConfigError):
        load_config(QUICKSTART, ["train.checkpoint_every=\u00b2 steps"])


@pytest.mark.parametrize("item", ["model.layers[0].filters=288230376151711744",  # 2**58
                                  "model.layers[5].units=4611686018427387904",  # 2**62
                                  "model.input_shape[0]=9223372036854775808"])  # 2**63
def test_an_astronomical_size_is_a_user_error(item):
    with pytest.raises(ConfigError):
        load_config(QUICKSTART, [item])


def test_a_run_named_like_a_number_can_be_evaluated(tmp_path):
    cfg = tiny(epochs=1)
    cfg["name"] = "1e3"
    run = cnncli.train(cfg, runs_dir=tmp_path, handle_signals=False)
    experiment.evaluate_run(run.path)


def test_hostile_config_files_are_user_errors(tmp_path):
    """A few fixed hostile documents, whatever the property test happens to draw."""
    for text in ("", "- 1\n- 2", "name: [", "!!python/object/apply:os.system ['touch PWNED']",
                 "a: &x [*x]\nmodel: *x", "model: {input_shape: [16, 16, 3], layers: [{type: conv2d}]}"):
        path = tmp_path / "c.yaml"
        path.write_text(text)
        with pytest.raises(CnnCliError) as info:
            load_config(path)
        assert str(info.value).strip()
    assert not (tmp_path / "PWNED").exists() and not Path("PWNED").exists()


# ------------------------------------------------------------ 7. resources and paths
def test_an_oversized_network_is_refused_from_its_shapes_alone():
    tracemalloc.start()
    try:
        start = time.perf_counter()
        with pytest.raises(ConfigError) as info:
            load_config(QUICKSTART, ["model.layers[0].filters=1000000"])
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert "GiB" in message and "available" in message and str(QUICKSTART) in message, message
    needed = float(re.search(r"needs about ([\d,.]+) GiB", message).group(1).replace(",", ""))
    assert needed > 500  # a million 3x3x3 filters on 16x16 images: outputs alone over half a terabyte
    assert peak < 50 * 2**20, f"refusing took {peak / 2**20:.0f} MiB"
    assert elapsed < 10


def test_an_oversized_network_is_refused_by_train_before_any_folder(tmp_path):
    runs_dir = tmp_path / "runs"
    line = assert_user_error(invoke("train", QUICKSTART, "--runs-dir", runs_dir, "--set",
                                    "model.layers[0].filters=1000000"), "GiB", "available")
    assert "model" in line
    assert not runs_dir.exists()


def test_check_memory_refuses_what_does_not_fit_the_memory_available():
    from cnncli.builder import build_network
    from cnncli.resources import check_memory, estimate_memory

    config = load_config(QUICKSTART)
    network = build_network(config.values, allocate=False)
    estimate = estimate_memory(network, 32, 2, 256)
    assert check_memory(network, 32, 2, 256, available=estimate.total).total == estimate.total
    with pytest.raises(ConfigError) as info:
        check_memory(network, 32, 2, 256, available=estimate.total - 1)
    assert "available" in str(info.value) and "MiB" in str(info.value)
    with pytest.raises(ConfigError):
        check_memory(network, 32, 2, 256, available=2**20)


def test_the_memory_estimate_is_not_below_what_a_training_step_allocates():
    """The estimate is meant to be on the high side: measure one forward, backward and Adam
    update (tracemalloc sees numpy's buffers) and compare."""
    from cnncli.builder import build
    from cnncli.resources import estimate_memory

    config = load_config(QUICKSTART)
    batch = config["train"]["batch_size"]
    rng = np.random.default_rng(0)
    x = rng.random((batch, 16, 16, 3), dtype=np.float32)
    y = rng.integers(0, 3, batch)
    tracemalloc.start()
    try:
        network, loss, optimizer = build(config)
        for _ in range(2):  # the optimizer's slots appear at the first update
            network.loss_and_gradients(x, y, loss)
            optimizer.step(network.parameters(), network.gradients())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    estimate = estimate_memory(network, batch, len(optimizer.slots))
    assert estimate.total >= peak, (estimate, peak)


def test_an_unwritable_runs_folder_is_refused_before_any_folder(tmp_path, monkeypatch):
    """os.access says no (what a read-only folder says to anyone but root)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access

    def access(path, mode, *args, **kwargs):
        if mode & os.W_OK and Path(path).resolve().is_relative_to(locked):
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)
    for runs_dir in (locked, locked / "runs"):
        with pytest.raises(CnnCliError, match="not writable"):
            cnncli.train(tiny(), runs_dir=runs_dir, handle_signals=False)
    assert list(locked.iterdir()) == []


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_runs_folder_is_refused_before_any_folder(tmp_path):
    cfg = write_config(tmp_path / "tiny.yaml", tiny())
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        for runs_dir in (locked, locked / "runs"):
            assert_user_error(invoke("train", cfg, "--runs-dir", runs_dir, "-q"), "not writable")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def test_a_runs_folder_below_a_file_is_refused(tmp_path):
    cfg = write_config(tmp_path / "tiny.yaml", tiny())
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert_user_error(invoke("train", cfg, "--runs-dir", blocker / "runs", "-q"), str(blocker / "runs"))
    assert blocker.read_text() == "not a folder"


@pytest.mark.parametrize("name", ["../../escape", "../escape", "..", "/tmp/escape", "a/../../../b", "./.hidden",
                                  "~/x", "nul\x00byte", "\u2215escape", ""])
def test_a_run_name_cannot_leave_the_runs_folder(tmp_path, name):
    root = tmp_path / "a" / "b" / "runs"
    for exact in (True, False):
        path = runs.create_run_dir(root, name, exact=exact)
        assert path.parent == root and path.resolve().parent == root.resolve(), path
        assert not path.name.startswith(".") and "/" not in path.name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b"]
    assert sorted(p.name for p in (tmp_path / "a" / "b").iterdir()) == ["runs"]


def test_train_with_an_escaping_name_stays_in_the_runs_folder(tmp_path):
    cfg = write_config(tmp_path / "tiny.yaml", tiny(epochs=1))
    runs_dir = tmp_path / "a" / "b" / "runs"
    res = invoke("train", cfg, "--runs-dir", runs_dir, "--name", "../../escape", "-q")
    assert res.exit_code == 0, (res.stdout, res.stderr)
    run = only_run(runs_dir)
    assert run.name.endswith("-escape")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "tiny.yaml"]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b"]


def test_yaml_tags_never_run(tmp_path):
    marker = tmp_path / "PWNED"
    tag = f"!!python/object/apply:os.mkdir [{str(marker)!r}]"
    path = tmp_path / "c.yaml"
    path.write_text(f"name: {tag}\n")
    with pytest.raises(ConfigError, match="YAML"):
        load_config(path)
    with pytest.raises(ConfigError):
        load_config(QUICKSTART, [f"name={tag}"])
    run_cfg = write_config(tmp_path / "tiny.yaml", tiny())
    with pytest.raises(CnnCliError):
        load_config(run_cfg, [f"train.epochs={tag}"])
    assert not marker.exists()


def test_npz_data_holding_python_objects_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "UNPICKLED"
    data = tmp_path / "data.npz"
    np.savez(data, x=np.array([Unpickled(marker)] * 8, dtype=object), y=np.arange(8) % 2)
    cfg = tiny()
    cfg["data"] = {"source": "npz", "path": str(data)}
    with pytest.raises(CnnCliError) as info:
        cnncli.train(cfg, runs_dir=tmp_path / "runs", handle_signals=False)
    assert str(data) in str(info.value)
    assert not marker.exists()
    assert run_folders(tmp_path / "runs") == []
