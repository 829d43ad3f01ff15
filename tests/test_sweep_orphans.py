"""A sweep whose main process is killed leaves no process behind, and its resume never
shares a trial folder with one.

The OOM killer ends a process by SIGKILL alone: nothing in the sweep's main process runs
(no ``finally``, no pool shutdown), so its worker processes must notice by themselves.
The process table is read from ``/proc`` (psutil is not a dependency), so these tests
are Linux-only. Every wait polls with a deadline; nothing sleeps and hopes.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cnncli import sweep as sweeps
from cnncli.cli import app
from tests.helpers import assert_user_error, only_sweep, read_trials, sweep_so_far, wait_for

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads the process table in /proc")

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.yaml"
TRIALS = 4
EPOCHS = 6
#: Each trial a second or two in a one-thread worker: long enough to be killed mid-training.
SMALL = ["--set", "data.num_samples=600", "--set", "model.input_shape=[8,8,3]", "--set", f"train.epochs={EPOCHS}"]
GRID = ["--grid", "optimizer.lr=" + ",".join(str(0.01 * (i + 1)) for i in range(TRIALS))]
#: The environment variable that marks every process of the sweep under test (workers
#: inherit it), so that survivors are found even once they have a new parent.
MARK = "CNNCLI_TEST_ORPHAN_MARK"


# ------------------------------------------------------------------------ the process table
def process_start(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks) of a live process, or None when it is gone.

    The start time tells a reused pid apart; a zombie (Z) or dead (X) entry holds no
    memory and runs nothing, so it counts as gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses
    state, start = fields[0], int(fields[19])
    return None if state in ("Z", "X") else (state, start)


def parent_of(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(text[text.rindex(")") + 2:].split()[1])


def marked_processes(mark: str) -> set[int]:
    """Live processes (this user's) whose environment holds ``MARK=mark``."""
    needle = f"{MARK}={mark}".encode()
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone, or another user's
            continue
        if needle in environ.split(b"\0") and process_start(int(entry.name)) is not None:
            found.add(int(entry.name))
    return found


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and parent_of(int(entry.name)) == pid and process_start(int(entry.name)):
            found.add(int(entry.name))
    return found


def metrics_epochs(run: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------------- the tests
@pytest.mark.slow
def test_workers_end_when_the_main_process_is_killed_and_the_resume_runs_each_trial_once(tmp_path):
    runs_dir = tmp_path / "runs"
    log = tmp_path / "sweep.log"
    mark = uuid.uuid4().hex
    env = {**os.environ, MARK: mark}
    cmd = [sys.executable, "-m", "cnncli.cli", "sweep", str(QUICKSTART), *GRID, *SMALL, "--jobs", "2",
           "--name", "orphans", "--runs-dir", str(runs_dir)]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    survivors: set[int] = set()
    try:
        def two_trials_training():
            if (so_far := sweep_so_far(runs_dir)) is None:
                return None
            folder, trials = so_far
            running = [int(k) for k, t in trials.items() if t["status"] == "running"]
            # both workers past their first epoch: each would write into its folder again
            if len(running) == 2 and all((folder / f"trial-{i:03d}" / "metrics.jsonl").is_file() for i in running):
                return folder
            return None

        folder = wait_for(two_trials_training, 120, "two trials past their first epoch", proc, log)
        workers = children_of(proc.pid)
        assert len(workers) >= 2, workers  # the two pool workers (and multiprocessing's resource tracker)
        started = {pid: process_start(pid) for pid in workers | marked_processes(mark)}
        started.pop(proc.pid, None)
        killed_at = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)  # the main process alone, as the OOM killer does
        assert proc.wait(timeout=10) == -signal.SIGKILL

        def all_gone():
            alive = {pid for pid, start in started.items() if process_start(pid) == start} | marked_processes(mark)
            survivors.clear()
            survivors.update(alive)
            return not alive

        end = time.monotonic() + 15
        while time.monotonic() < end and not all_gone():
            time.sleep(0.05)
        gone_after = time.monotonic() - killed_at
        assert not survivors, (f"{len(survivors)} process(es) of the sweep still alive {gone_after:.1f}s after its "
                               f"main process was killed: {sorted(survivors)}")
        print(f"every worker gone {gone_after:.2f}s after the SIGKILL")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in survivors | marked_processes(mark):  # a failing run must not leave them either
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    trials = read_trials(folder)
    assert any(t["status"] == "running" for t in trials.values()), trials
    resumed = subprocess.run([sys.executable, "-m", "cnncli.cli", "sweep", "--resume", str(folder), "--jobs", "2"],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert not marked_processes(mark)  # the resume's own workers ended with it

    with open(folder / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(int(r["trial"]), r["status"]) for r in rows] == [(i, "completed") for i in range(TRIALS)]
    assert {k: t["status"] for k, t in read_trials(folder).items()} == {str(i): "completed" for i in range(TRIALS)}
    assert sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.is_symlink() and p.name != ".locks") == [
        f"trial-{i:03d}" for i in range(TRIALS)]  # one folder per trial, no trial-001-2
    for i in range(TRIALS):  # each trial ran once into its folder: one line per epoch, written by one process
        run = folder / f"trial-{i:03d}"
        assert json.loads((run / "status.json").read_text())["status"] == "completed"
        assert metrics_epochs(run) == list(range(1, EPOCHS + 1)), run


# ------------------------------------------------------------- a worker ends with its parent
#: A worker: ``end_with_parent`` as a pool's initializer calls it, then waits forever. It
#: says "ready" only when the way under test is the one in use (prctl: no watchdog thread
#: started), else the way it found, so the prctl case cannot pass on the watchdog alone.
WORKER = """
import sys, threading
from cnncli import sweep
if sys.argv[1] == "watchdog":
    sys.platform = "darwin"  # no prctl here: the thread that polls os.getppid() must do it
try:
    sweep.end_with_parent(int(sys.argv[2]))
except BaseException as err:  # not ending by itself: say why
    print(f"error {type(err).__name__}: {err}", flush=True)
    raise SystemExit(3)
way = "watchdog" if any(t.name == "cnncli-parent-watch" for t in threading.enumerate()) else "prctl"
print("ready" if way == sys.argv[1] else way, flush=True)
threading.Event().wait()
"""
#: The worker's parent: starts it, says its pid and its first line, and exits when told.
PARENT = """
import json, os, subprocess, sys
expected = os.getpid() if sys.argv[2] == "me" else os.getppid()
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[3], str(expected)], stdout=subprocess.PIPE,
                         text=True)
line = child.stdout.readline().strip()
print(json.dumps({"pid": child.pid, "line": line, "exit": None if line else child.wait(timeout=10)}), flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize("way", ["prctl", "watchdog"])
def test_a_worker_ends_when_its_parent_dies(way):
    parent = subprocess.Popen([sys.executable, "-c", PARENT, WORKER, "me", way], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=REPO)
    said = json.loads(parent.stdout.readline())
    worker, started = said["pid"], process_start(said["pid"])
    try:
        assert said["line"] == "ready", said
        assert started is not None
        parent.stdin.close()  # the parent exits; the worker's only way out is its own
        assert parent.wait(timeout=10) == 0
        end = time.monotonic() + 5
        while time.monotonic() < end and process_start(worker) == started:
            time.sleep(0.02)
        assert process_start(worker) != started, f"the worker ({way}) outlived its parent by 5 s"
    finally:
        if process_start(worker) == started:
            os.kill(worker, signal.SIGKILL)


def test_a_worker_whose_parent_is_already_gone_exits_at_once():
    """The parent died between starting the worker and its initializer: no signal will
    come, so the initializer sees another parent and ends the worker."""
    parent = subprocess.Popen([sys.executable, "-c", PARENT, WORKER, "not-me", "prctl"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        said = json.loads(parent.stdout.readline())
        assert (said["line"], said["exit"]) == ("", 1), said  # ended by the initializer, before it was ready
    finally:
        parent.stdin.close()
        parent.wait(timeout=10)


# ------------------------------------------------------------------- a survivor holds its trial
def tiny_sweep(runs_dir: Path) -> Path:
    result = CliRunner().invoke(app, ["sweep", str(QUICKSTART), "--grid", "optimizer.lr=0.01,0.02",
                                      "--set", "data.num_samples=120", "--set", "model.input_shape=[8,8,3]",
                                      "--set", "train.epochs=1", "--runs-dir", str(runs_dir)])
    assert result.exit_code == 0, result.output
    return only_sweep(runs_dir)


def hold_lock(path: Path) -> subprocess.Popen:
    """Another process holding ``path``'s lock as a sweep or a trial does, until its stdin closes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    code = ("import fcntl, os, sys\n"
            f"fh = open({str(path)!r}, 'a+')\n"
            "fcntl.flock(fh, fcntl.LOCK_EX)\n"
            "fh.seek(0); fh.truncate(); fh.write(str(os.getpid())); fh.flush()\n"
            "print('locked', flush=True)\n"
            "sys.stdin.read()\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"  # readline returns '' at once if it died
    return holder


@pytest.mark.parametrize("held, phrase", [
    ("trial", "trial-001 is still being run by process"),
    ("sweep", "this sweep is being run by process"),
])
def test_a_resume_never_shares_a_folder_with_a_live_process(tmp_path, monkeypatch, held, phrase):
    """A worker that outlived its sweep (or the sweep itself, still running) holds a lock;
    the resume refuses in one line, exit code 2, and touches nothing."""
    # how long a resume waits for a dying worker (raising=False: the test must fail, not error, without it)
    monkeypatch.setattr(sweeps, "SURVIVOR_WAIT_S", 0.5, raising=False)
    folder = tiny_sweep(tmp_path / "runs")
    trials = read_trials(folder)
    trials["1"] = {"index": 1, "status": "running"}  # as a killed sweep leaves it
    (folder / "trials.json").write_text(json.dumps(trials))
    (folder / "trial-001" / "survivor-was-here").write_text("")
    lock = folder / ".locks" / ("trial-001.lock" if held == "trial" else "sweep.lock")
    holder = hold_lock(lock)
    try:
        result = CliRunner().invoke(app, ["sweep", "--resume", str(folder)])
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
    assert_user_error(result, phrase, f"process {holder.pid}")
    assert (folder / "trial-001" / "survivor-was-here").is_file()  # its folder left alone
    assert read_trials(folder)["1"]["status"] == "running"

    # once the holder is gone the resume runs the trial again
    again = CliRunner().invoke(app, ["sweep", "--resume", str(folder)])
    assert again.exit_code == 0, again.output
    assert read_trials(folder)["1"]["status"] == "completed"
    assert not (folder / "trial-001" / "survivor-was-here").exists()


def test_a_trial_whose_lock_another_process_holds_is_refused_by_its_worker(tmp_path):
    """``run_trial``, as a worker runs it, refuses a trial another live process holds and
    touches nothing. (A sweep claims its trials' locks before starting them, so there the
    resume refuses first; this is the worker's own guard, for the window after that.)"""
    config = sweeps.trial_configs(sweeps.make_spec(str(QUICKSTART), grid_options=["optimizer.lr=0.01"],
                                                   overrides=SMALL[1::2]))[0]
    folder = tmp_path / "sweep"
    (folder / "trial-000").mkdir(parents=True)
    (folder / "trial-000" / "survivor-was-here").write_text("a worker of a sweep that died")
    lock = sweeps.trial_lock_path(folder, 0)
    holder = hold_lock(lock)
    try:
        before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        record = sweeps.run_trial(0, config, str(folder))
        after = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
    assert record == {"index": 0, "status": "failed", "metrics": {}, "seconds": 0.0,
                      "reason": f"trial-000 is being run by process {holder.pid}"}
    assert after == before  # no run folder written, the survivor's files and the lock file as they were
    assert sorted(p.name for p in folder.iterdir()) == [".locks", "trial-000"]
    mine = sweeps.FolderLock(lock)  # and the refusal left no lock held in this process
    assert mine.acquire()
    mine.release()
