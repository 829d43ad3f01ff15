"""Sweeps: grids and random searches over a base config, run in parallel, resumable.

A sweep is a base config plus the keys that vary. ``grid`` takes the cartesian product
of its lists; ``random`` draws ``n_trials`` values for each of its keys (a list to choose
from, or a ``{low, high, log}`` range), seeded, for every grid point. Every trial's
config is expanded and validated before the first trial starts.

A sweep folder ``<runs>/sweeps/<YYYYmmdd-HHMMSS>-<name>/`` holds ``sweep.yaml`` (the
resolved sweep: base config, fixed overrides, each trial's overrides), one ordinary run
folder per trial (``trial-000``, ``trial-001``, ...), ``results.csv`` (one row per trial),
``leaderboard.md`` and ``best``, a link to the best trial's folder. Trial records live in
``trials.json``; resume skips completed trials, reruns those that were running or failed,
and keeps one row per trial.

Trials run in worker processes (``jobs``), each limited to ``cores // jobs`` BLAS
threads, or on a Dask distributed cluster (``executor: dask``), whose workers return
their run folder as a compressed archive, so no shared filesystem is assumed.

Worker processes end with the sweep's main process, however it ends (a SIGKILL from the
OOM killer runs no cleanup in it): :func:`end_with_parent`. The process running a sweep
holds ``.locks/sweep.lock`` in its folder, and the process running a trial holds
``.locks/trial-NNN.lock``; the kernel releases a lock when its holder dies, so a resume
that finds one held knows a live process still writes there and refuses in one line
(after waiting :data:`SURVIVOR_WAIT_S` for a dying worker) rather than share the folder.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import ctypes
import io
import itertools
import json
import math
import os
import shutil
import signal
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cnncli import plugins, runs, yamlfiles
from cnncli.config import apply_override, load_config, warn_kept_rate
from cnncli.errors import ConfigError, InputError, RunFolderError
from cnncli.nn.validate import did_you_mean, known_keys
from cnncli.runs import sanitize_name
from cnncli.training import Callback, TrialPruned

SWEEP_KEYS = ("base", "name", "overrides", "grid", "random", "metric", "mode", "jobs", "seed", "search", "n_trials",
              "pruner")
#: Searches that Optuna samples (cnncli.search); grid and random are expanded up front here.
SAMPLED = ("tpe", "cmaes", "qmc")
SEARCHES = ("grid", "random") + SAMPLED
PRUNERS = {"none": {}, "median": {"n_startup_trials": 5, "n_warmup_steps": 1},
           "hyperband": {"min_resource": 1, "max_resource": "auto", "reduction_factor": 3}}
METRICS = ("val_accuracy", "val_loss", "accuracy", "loss")
#: How long a resume waits for a trial's lock, held by a worker of a sweep that died (it
#: ends within a second once its parent is gone), before refusing to touch the trial.
SURVIVOR_WAIT_S = 10.0
#: How often a worker without PR_SET_PDEATHSIG (not Linux) checks that its parent lives.
PARENT_POLL_S = 0.5


@dataclass
class SweepSpec:
    """What to run: the base config (a path), fixed overrides, and the trials' overrides."""

    base: str
    name: str
    overrides: list[str]
    grid: dict[str, list]
    random: dict[str, Any]
    metric: str = "val_accuracy"
    mode: str = "max"
    seed: int = 0
    jobs: int | None = None
    trials: list[dict[str, Any]] = field(default_factory=list)
    #: The base config as read when the sweep was made: resume reruns trials from it, so an
    #: edited or deleted base file cannot make rerun trials differ from completed ones.
    base_config: dict | None = None
    #: grid or random (expanded up front), or tpe, cmaes, qmc (sampled by Optuna, trial by
    #: trial: ``trials`` grows as they are asked; the study database is the record).
    search: str = "grid"
    #: How many trials a sampled search runs.
    n_trials: int | None = None
    #: ``{name: none | median | hyperband, ...its settings}`` (sampled searches).
    pruner: dict | None = None
    #: The Optuna study's name in study.db: the folder's name and a random suffix, so that
    #: another sweep's database is told apart even when made in the same second.
    study: str | None = None

    @property
    def sampled(self) -> bool:
        return self.search in SAMPLED

    def as_dict(self) -> dict:
        return {"base": self.base, "name": self.name, "overrides": self.overrides, "grid": self.grid,
                "random": self.random, "metric": self.metric, "mode": self.mode, "seed": self.seed,
                "jobs": self.jobs, "search": self.search, "n_trials": self.n_trials, "pruner": self.pruner,
                "study": self.study,
                "trials": [{"index": i, "overrides": t} for i, t in enumerate(self.trials)],
                "base_config": self.base_config}


# ----------------------------------------------------------------------------- parsing
def parse_grid_option(item: str) -> tuple[str, list]:
    """``optimizer.lr=0.1,0.01`` -> ('optimizer.lr', [0.1, 0.01]); values are YAML."""
    if "=" not in item:
        raise ConfigError("--grid", "KEY=V1,V2,..., for example optimizer.lr=0.1,0.01", item)
    key, text = item.split("=", 1)
    try:
        values = yamlfiles.parse(f"[{text}]")  # YAML, with 1e-3 read as a float like --set does
    except yamlfiles.YAMLError:
        raise ConfigError("--grid", "comma-separated YAML values", text) from None
    if not values:
        raise ConfigError(f"--grid {key}", "at least one value", text)
    return key.strip(), values


def make_spec(target: str, *, grid_options=(), overrides=(), name=None, metric=None, mode=None,
              seed=None) -> SweepSpec:
    """A SweepSpec from a config file with ``--grid`` options, or from a sweep file.

    A sweep file is YAML with ``base`` (a config path, relative to the sweep file) and
    ``grid:``/``random:`` sections; a file with a ``model`` section is a plain config.
    The base path is kept absolute, so that ``--resume`` works from any directory.
    """
    raw = yamlfiles.read(target)
    if not isinstance(raw, dict):
        raise ConfigError("", "", None, raw=f"{target}: expected a config or a sweep file (a mapping)")
    if "base" in raw and "model" not in raw:
        try:
            known_keys(raw, SWEEP_KEYS, "")
        except ConfigError as err:
            raise err.in_file(target) from None
        base = str((Path(target).parent / str(raw["base"])).absolute())
        spec_grid = raw.get("grid") or {}
        spec_random = raw.get("random") or {}
        sweep_name = raw.get("name", Path(target).stem)
        fixed = list(raw.get("overrides") or [])
        file_metric, file_mode, file_seed = raw.get("metric"), raw.get("mode"), raw.get("seed")
        file_jobs = raw.get("jobs")
        if file_jobs is not None and (not isinstance(file_jobs, int) or isinstance(file_jobs, bool) or file_jobs < 1):
            raise ConfigError("jobs", "a positive int", file_jobs, source=target)
        source = target
        search = {k: raw.get(k) for k in ("search", "n_trials", "pruner")}
    else:
        base, spec_grid, spec_random, sweep_name, fixed = str(Path(target).absolute()), {}, {}, Path(target).stem, []
        file_metric = file_mode = file_seed = file_jobs = None
        source = "--grid"
        search = {}
    given = set()
    for item in grid_options:
        key, values = parse_grid_option(item)
        if key in given:  # two --grid options for one key: never silently keep the last
            raise ConfigError(f"--grid {key}", "", None, raw="given twice; give every value in one --grid "
                                                             f"{key}=V1,V2,...")
        given.add(key)
        spec_grid[key] = values
    spec = SweepSpec(base=base, name=sanitize_name(name or sweep_name), overrides=fixed + list(overrides),
                     grid=spec_grid, random=spec_random, metric=metric or file_metric or "val_accuracy",
                     mode=mode or file_mode or "", seed=seed if seed is not None else (file_seed or 0),
                     jobs=file_jobs, search=search.get("search") or ("random" if spec_random and not spec_grid
                                                                      else "grid"),
                     n_trials=search.get("n_trials"), pruner=search.get("pruner"))
    _check_spec(spec, source)
    spec.base_config = yamlfiles.read(base)
    if not isinstance(spec.base_config, dict):
        raise ConfigError("", "", None, raw=f"{base}: expected a config mapping")
    spec.trials = [] if spec.sampled else expand(spec)
    return spec


def _check_spec(spec: SweepSpec, source: str) -> None:
    def bad(path, expected, got):
        return ConfigError(path, expected, got, source=source if source != "--grid" else None)

    if spec.search not in SEARCHES:
        raise ConfigError("search", "", None, source=source if source != "--grid" else None,
                          raw=f"expected one of {', '.join(SEARCHES)}; got {spec.search!r}"
                              f"{did_you_mean(spec.search, SEARCHES)}")
    if not isinstance(spec.grid, dict):
        raise bad("grid", "a mapping of dotted keys to lists of values", spec.grid)
    for key, values in spec.grid.items():
        if not isinstance(values, list) or not values:
            raise bad(f"grid.{key}", "a non-empty list of values", values)
    if not isinstance(spec.random, dict):
        raise bad("random", "a mapping with n_trials and dotted keys", spec.random)
    n = spec.random.get("n_trials", 1 if not spec.random or spec.search in SAMPLED else None)
    if spec.random and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise bad("random.n_trials", "a positive int", n)
    for key, choice in spec.random.items():
        if key in ("n_trials",):
            continue
        if isinstance(choice, list):
            if not choice:
                raise bad(f"random.{key}", "a non-empty list or {low, high, log}", choice)
        elif isinstance(choice, dict):
            try:
                known_keys(choice, ("low", "high", "log", "int"), f"random.{key}")
            except ConfigError as err:
                raise err.in_file(source if source != "--grid" else None) from None
            low, high = choice.get("low"), choice.get("high")
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or low >= high:
                raise bad(f"random.{key}", "{low: number, high: number} with low < high", choice)
            if choice.get("log") and low <= 0:
                raise bad(f"random.{key}.low", "a number > 0 for a log range", low)
        else:
            raise bad(f"random.{key}", "a list to choose from or {low, high, log}", choice)
    if spec.metric not in METRICS:
        raise bad("metric", "one of " + ", ".join(METRICS), spec.metric)
    if not spec.mode:
        spec.mode = "min" if spec.metric.endswith("loss") else "max"
    if spec.mode not in ("min", "max"):
        raise bad("mode", "min or max", spec.mode)
    if not isinstance(spec.seed, int) or isinstance(spec.seed, bool):
        raise bad("seed", "an int", spec.seed)
    if not spec.grid and not spec.random:
        raise bad("grid", "at least one --grid KEY=V1,V2 or a grid:/random: section", None)
    if spec.sampled:
        if spec.n_trials is None and spec.random.get("n_trials"):
            spec.n_trials = spec.random["n_trials"]
        n = spec.n_trials
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise bad("n_trials", f"a positive int: how many trials {spec.search} samples", n)
        pruner = spec.pruner if isinstance(spec.pruner, dict) else {"name": spec.pruner or "none"}
        name = pruner.get("name", "none")
        if name not in PRUNERS:
            raise ConfigError("pruner.name", "", None, source=source if source != "--grid" else None,
                              raw=f"unknown pruner {name!r}{did_you_mean(name, PRUNERS)}; expected one of: "
                                  f"{', '.join(PRUNERS)}")
        known_keys({k: v for k, v in pruner.items() if k != "name"}, PRUNERS[name], "pruner")
        spec.pruner = {"name": name, **PRUNERS[name], **pruner}
    elif spec.n_trials is not None or spec.pruner not in (None, "none", {"name": "none"}):
        raise bad("search", "tpe, cmaes or qmc for n_trials and pruner (grid and random run every trial)",
                  spec.search)


def expand(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every trial's varying values: grid product x n_trials seeded random draws."""
    import numpy as np

    keys = list(spec.grid)
    points = [dict(zip(keys, combo)) for combo in itertools.product(*(spec.grid[k] for k in keys))] or [{}]
    random_keys = [k for k in spec.random if k != "n_trials"]
    n_random = spec.random.get("n_trials", 1) if spec.random else 1
    rng = np.random.default_rng([spec.seed, 0x5EEE])
    trials = []
    for point in points:
        for _ in range(n_random):
            trial = dict(point)
            for key in random_keys:
                trial[key] = _draw(spec.random[key], rng)
            trials.append(trial)
    return trials


def _draw(choice, rng):
    if isinstance(choice, list):
        value = choice[int(rng.integers(len(choice)))]
        return value
    low, high = float(choice["low"]), float(choice["high"])
    if choice.get("log"):
        value = math.exp(rng.uniform(math.log(low), math.log(high)))
    else:
        value = rng.uniform(low, high)
    if choice.get("int"):
        return int(round(value))
    return float(f"{value:.6g}")


def override_strings(trial: dict[str, Any]) -> list[str]:
    return [f"{k}={json.dumps(v)}" for k, v in trial.items()]


def trial_configs(spec: SweepSpec, folder: Path | None = None) -> list[dict]:
    """Validate every trial's config up front; an error names the trial and the key.

    Plugin paths are relative to the base config's folder, or to the sweep ``folder``
    once it holds their copies (``Sweep.create``)."""
    return [trial_config(spec, trial, i, folder) for i, trial in enumerate(spec.trials)]


def trial_config(spec: SweepSpec, trial: dict[str, Any], index: int, folder: Path | None = None) -> dict:
    """One trial's validated config values (see :func:`trial_configs`)."""
    base_dir = folder if folder is not None and (folder / plugins.FOLDER).is_dir() else Path(spec.base).parent
    base_raw = spec.base_config if spec.base_config is not None else yamlfiles.read(spec.base)
    if not isinstance(base_raw, dict):
        raise ConfigError("", "", None, raw=f"{spec.base}: expected a config mapping")
    raw = copy.deepcopy(base_raw)
    overrides = spec.overrides + override_strings(trial)
    try:
        for item in overrides:
            apply_override(raw, item)
        config = load_config(raw, base_dir=base_dir)
        # A trial that changes only optimizer.name keeps the base config's rate: said once.
        warn_kept_rate(base_raw.get("optimizer"), overrides, config.values["optimizer"], str(spec.base))
    except ConfigError as err:
        desc = ", ".join(f"{k}={v}" for k, v in trial.items())
        raise ConfigError("", "", None, raw=f"{spec.base}: trial {index} ({desc}): {err}") from None
    values = config.values
    values["name"] = f"trial-{index:03d}"
    return values


# ------------------------------------------------------------- worker lifetime and locks
#: linux/prctl.h: ask the kernel to send a signal to this process when its parent dies.
PR_SET_PDEATHSIG = 1


def end_with_parent(parent_pid: int) -> None:
    """Worker initializer: this process ends when ``parent_pid`` (the sweep's main
    process, which started it) ends, however that ends.

    On Linux the kernel sends SIGKILL when the parent dies (``PR_SET_PDEATHSIG``); the
    parent may have died before that was asked, so the parent is checked afterwards. Where
    there is no prctl, a daemon thread polls ``os.getppid()`` (the parent of an orphan
    changes to init or a subreaper)."""
    asked = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            asked = libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
        except (OSError, AttributeError):  # no libc to load, or no prctl in it
            asked = False
    if os.getppid() != parent_pid:  # died before prctl, or before this worker started
        os._exit(1)
    if not asked:
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True, name="cnncli-parent-watch").start()


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_S)
    os._exit(1)  # at once, from this thread, with no cleanup: the trial's folder is the resume's now


def sweep_lock_path(folder: str | Path) -> Path:
    """Held by the process running the sweep in ``folder``."""
    return Path(folder) / ".locks" / "sweep.lock"


def trial_lock_path(folder: str | Path, index: int) -> Path:
    """Held by the process running trial ``index`` into ``folder/trial-NNN``."""
    return Path(folder) / ".locks" / f"trial-{index:03d}.lock"


class FolderLock:
    """An exclusive ``flock`` on a lock file that names its holder's pid. The kernel
    releases it when the holder's process dies, however it dies, so a held lock means a
    live process. The file itself stays (unlinking it would race with the next holder).
    Where there is no ``fcntl`` (Windows) it is always free."""

    def __init__(self, path: Path):
        self.path = path
        self._fh = None

    def acquire(self) -> bool:
        """Take the lock if it is free (never waits); True when this process holds it."""
        try:
            import fcntl
        except ImportError:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")  # noqa: SIM115 (held open as long as the lock is)
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            return False
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._fh = fh
        return True

    def holder(self) -> str:
        """The holder's pid as it wrote it (``?`` when it is not written yet)."""
        try:
            return self.path.read_text().strip() or "?"
        except OSError:
            return "?"

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()  # closing the file releases the flock
            self._fh = None

    @contextlib.contextmanager
    def held(self):
        """Try the lock for the ``with`` block: yields True while this process holds it,
        False (holding nothing) when another live process does; released at the end."""
        try:
            yield self.acquire()
        finally:
            self.release()


@contextlib.contextmanager
def running_sweep(folder: Path):
    """Hold the sweep's lock while it runs; a sweep that another live process runs is refused."""
    lock = FolderLock(sweep_lock_path(folder))
    with lock.held() as mine:
        if not mine:
            raise RunFolderError(f"{folder}: this sweep is being run by process {lock.holder()}; let it finish or "
                                 "stop it, then --resume again")
        yield


@contextlib.contextmanager
def claimed_trials(folder: Path, indices: list[int]):
    """Hold the locks of trials about to be cleared and run again, so that no worker of a
    sweep that died still writes into their folders. A lock still held after
    :data:`SURVIVOR_WAIT_S` (a worker that did not end with its sweep) is refused in one
    line, before anything is touched."""
    waiting = {i: FolderLock(trial_lock_path(folder, i)) for i in indices}
    held: list[FolderLock] = []
    deadline = time.monotonic() + SURVIVOR_WAIT_S
    try:
        while waiting:
            for i, lock in list(waiting.items()):
                if lock.acquire():
                    held.append(waiting.pop(i))
            if not waiting:
                break
            if time.monotonic() >= deadline:
                i, lock = next(iter(waiting.items()))
                raise RunFolderError(f"{folder}: trial-{i:03d} is still being run by process {lock.holder()} (a "
                                     "worker of the sweep that stopped); end it, then --resume again")
            time.sleep(0.05)
        yield
    finally:
        for lock in held:
            lock.release()


# ------------------------------------------------------------------------------ trials
class PruneReporter(Callback):
    """After each epoch, report the sweep's metric to the pruner (``channel.report``) and
    stop the trial at once (:class:`TrialPruned`) when it says so."""

    def __init__(self, channel, metric: str):
        self.channel, self.metric = channel, metric

    def on_epoch_end(self, metrics, improved, state) -> None:
        values = metrics.as_dict()
        value = values.get(self.metric)
        if value is None and self.metric.startswith("val_"):  # no validation split: the training figure
            value = values.get(self.metric[4:])
        if self.channel.report(metrics.epoch, value):
            raise TrialPruned(f"pruned after epoch {metrics.epoch} ({self.metric} {value})")


def run_trial(index: int, values: dict, target: str | None, threads: int | None = None,
              plugin_files: dict[str, bytes] | None = None, prune=None, metric: str = "val_accuracy") -> dict:
    """Run one trial (in a worker). With ``target`` None the run folder comes back as bytes;
    ``plugin_files`` (by SHA-256) bring the plugins' sources to a worker on another machine;
    ``prune`` (a ``cnncli.search.PruneChannel``) hears ``metric`` after each epoch and may
    stop the trial (status ``pruned``). Into ``target`` it runs holding the trial's lock."""
    if target is None:
        return _run_trial(index, values, target, threads, plugin_files, prune, metric)
    lock = FolderLock(trial_lock_path(target, index))
    with lock.held() as mine:
        if not mine:  # a worker of a sweep that died still writes there: never share its folder
            return {"index": index, "status": "failed", "metrics": {}, "seconds": 0.0,
                    "reason": f"trial-{index:03d} is being run by process {lock.holder()}"}
        return _run_trial(index, values, target, threads, plugin_files, prune, metric)


def _run_trial(index, values, target, threads, plugin_files, prune, metric) -> dict:
    if threads:
        _limit_threads(threads)
    from cnncli.experiment import train

    start = time.time()
    workdir = Path(target) if target else Path(tempfile.mkdtemp(prefix="cnncli-trial-"))
    record: dict[str, Any] = {"index": index, "status": "failed", "reason": None}
    if plugin_files:
        values = {**values, "plugins": plugins.write_files(values["plugins"], plugin_files,
                                                           workdir / f".plugins-{index}")}
    try:
        callbacks = (PruneReporter(prune, metric),) if prune is not None else ()
        run = train(values, runs_dir=workdir, name=values["name"], handle_signals=False, exact_name=True,
                    callbacks=callbacks)
        record.update(status="completed", path=run.path.name, metrics=_trial_metrics(run.history))
    except TrialPruned as err:
        record.update(status="pruned", reason=str(err))
    except InputError as err:
        record.update(reason=f"{type(err).__name__}: {err}")
    except Exception as err:  # a trial's bug must not end the sweep; its reason is recorded
        record.update(reason=f"{type(err).__name__}: {err}")
    record["seconds"] = round(time.time() - start, 3)
    folder = workdir / values["name"]
    record["path"] = folder.name
    shutil.rmtree(workdir / f".plugins-{index}", ignore_errors=True)
    if target is None:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            if folder.exists():
                tar.add(folder, arcname=folder.name)
        record["archive"] = buf.getvalue()
        shutil.rmtree(workdir, ignore_errors=True)
    if record["status"] in ("failed", "pruned") and "metrics" not in record:
        history = runs.read_metrics(folder) if folder.exists() else []
        record["metrics"] = _trial_metrics_rows(history)
    return record


def _limit_threads(threads: int) -> None:
    """BLAS and the engine both use ``threads`` threads in this worker."""
    from threadpoolctl import threadpool_limits

    from cnncli.nn import parallel

    threadpool_limits(threads)
    parallel.set_threads(threads)


def _trial_metrics(history) -> dict:
    return _trial_metrics_rows([h.as_dict() for h in history])


def _trial_metrics_rows(rows: list[dict]) -> dict:
    if not rows:
        return {}
    final = rows[-1]
    out = {"epochs": final["epoch"]}
    for m in METRICS:
        values = [r[m] for r in rows if r.get(m) is not None]
        if values:
            out[f"final_{m}"] = final.get(m)
            out[f"best_{m}"] = (min if m.endswith("loss") else max)(values)
    return out


# ---------------------------------------------------------------------------- the sweep
class Sweep:
    """A sweep folder: its spec, its trial records and its outputs."""

    def __init__(self, folder: Path, spec: SweepSpec, records: dict[int, dict] | None = None):
        self.folder = folder
        self.spec = spec
        self.records: dict[int, dict] = records or {}

    @classmethod
    def create(cls, spec: SweepSpec, runs_dir: str | Path) -> "Sweep":
        root = Path(runs_dir) / "sweeps"
        folder = runs.create_run_dir(root, spec.name, checkpoints=False)
        base = spec.base_config or {}
        if base.get("plugins"):  # the sweep keeps its own copies, as the base config was read
            resolved = plugins.resolve(base["plugins"], Path(spec.base).parent)
            spec.base_config = {**base, "plugins": plugins.copy_into(folder, resolved)}
        if spec.sampled:
            import uuid

            spec.study = f"cnncli-{folder.name}-{uuid.uuid4().hex[:8]}"
        sweep = cls(folder, spec)
        runs.atomic_write_text(folder / "sweep.yaml", yamlfiles.dump(spec.as_dict()))
        sweep.save()
        return sweep

    @classmethod
    def open(cls, folder: str | Path) -> "Sweep":
        folder = Path(folder)
        if not (folder / "sweep.yaml").is_file():
            raise RunFolderError(f"{folder}: not a sweep folder (no sweep.yaml)")
        raw = yamlfiles.read(folder / "sweep.yaml")
        trials = [t["overrides"] for t in raw.pop("trials")]
        spec = SweepSpec(**raw, trials=trials)
        records = {}
        if (folder / "trials.json").is_file():
            records = {int(k): v for k, v in json.loads((folder / "trials.json").read_text()).items()}
        return cls(folder, spec, records)

    def save(self) -> None:
        if self.spec.sampled:  # the trials grow as Optuna asks for them: sweep.yaml lists them
            runs.atomic_write_text(self.folder / "sweep.yaml", yamlfiles.dump(self.spec.as_dict()))
        runs.write_json(self.folder / "trials.json", {str(k): v for k, v in sorted(self.records.items())})
        self.write_results()

    def pending(self) -> list[int]:
        return [i for i in range(len(self.spec.trials))
                if self.records.get(i, {}).get("status") not in ("completed", "pruned")]

    def varying_keys(self) -> list[str]:
        keys = []
        for k in dict.fromkeys(k for t in self.spec.trials for k in t):
            if len({json.dumps(t.get(k)) for t in self.spec.trials}) > 1:
                keys.append(k)
        return keys

    def score(self, record: dict) -> float | None:
        value = (record.get("metrics") or {}).get(f"best_{self.spec.metric}")
        return None if value is None or value != value else value

    def ranked(self) -> list[int]:
        """Trial indices, best first; trials without the metric last."""
        sign = -1 if self.spec.mode == "max" else 1
        def key(i):
            s = self.score(self.records.get(i, {}))
            return (s is None, sign * s if s is not None else 0, i)
        return sorted(range(len(self.spec.trials)), key=key)

    def rows(self) -> list[dict]:
        keys = list(dict.fromkeys(k for t in self.spec.trials for k in t))
        out = []
        for i, trial in enumerate(self.spec.trials):
            rec = self.records.get(i, {})
            metrics = rec.get("metrics") or {}
            row = {"trial": i, **{k: trial.get(k) for k in keys}}
            for m in METRICS:
                row[f"final_{m}"] = metrics.get(f"final_{m}")
                row[f"best_{m}"] = metrics.get(f"best_{m}")
            row.update(epochs=metrics.get("epochs"), status=rec.get("status", "pending"),
                       seconds=rec.get("seconds"), run=rec.get("path", f"trial-{i:03d}"),
                       reason=rec.get("reason") or "")
            out.append(row)
        return out

    def write_results(self) -> None:
        rows = self.rows()
        buf = io.StringIO()
        if rows:
            writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
            writer.writeheader()
            for r in rows:
                writer.writerow({k: "" if v is None else (json.dumps(v) if isinstance(v, (list, dict)) else v)
                                 for k, v in r.items()})
        runs.atomic_write_text(self.folder / "results.csv", buf.getvalue())
        runs.atomic_write_text(self.folder / "leaderboard.md", self.leaderboard_markdown())
        self._point_best()

    def leaderboard_rows(self) -> tuple[list[str], list[list[str]]]:
        varying = self.varying_keys()
        m = self.spec.metric
        header = ["rank", "trial", *varying, f"best {m}", f"final {m}", "epochs", "status", "seconds"]
        body = []
        for rank, i in enumerate(self.ranked(), start=1):
            rec = self.records.get(i, {})
            metrics = rec.get("metrics") or {}
            trial = self.spec.trials[i]
            body.append([str(rank), f"trial-{i:03d}", *(value_text(trial.get(k)) for k in varying),
                         _fmt(metrics.get(f"best_{m}")), _fmt(metrics.get(f"final_{m}")),
                         str(metrics.get("epochs", "")), rec.get("status", "pending"),
                         _fmt(rec.get("seconds"), 1)])
        return header, body

    def leaderboard_markdown(self) -> str:
        header, body = self.leaderboard_rows()
        lines = [f"# Sweep {self.folder.name}", "",
                 f"Base config `{self.spec.base}`; ranked by {self.spec.metric} ({self.spec.mode}).", "",
                 "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in body]
        failed = [(i, r) for i, r in sorted(self.records.items()) if r.get("status") == "failed"]
        if failed:
            lines += ["", "Failed trials:"] + [f"- trial-{i:03d}: {r.get('reason')}" for i, r in failed]
        return "\n".join(lines) + "\n"

    def best_trial(self) -> int | None:
        for i in self.ranked():
            if self.records.get(i, {}).get("status") == "completed" and self.score(self.records[i]) is not None:
                return i
        return None

    def _point_best(self) -> None:
        best = self.best_trial()
        link = self.folder / "best"
        if link.is_symlink() or link.exists():
            link.unlink()
        if best is None:
            return
        target = self.records[best].get("path", f"trial-{best:03d}")
        try:
            link.symlink_to(target, target_is_directory=True)
        except OSError:  # no symlinks here: a text pointer
            runs.atomic_write_text(link, target + "\n")


def value_text(value) -> str:
    """A trial's value as the leaderboard shows it: a mapping or a list as one line of YAML
    (``{name: sgd, lr: 0.01}``, as a sweep file writes it), anything else as it prints."""
    if isinstance(value, (dict, list)):
        return yamlfiles.inline(value)
    return str(value)


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


@contextlib.contextmanager
def sweep_tracking(sweep: Sweep, base_values: dict, on_warning=None):
    """The sweep's MLflow parent run around its trials (``cnncli.tracking``; nothing when
    the base config does not track): yields its id, for ``tracking.trial_tracking``."""
    from cnncli import tracking

    settings = base_values.get("tracking")
    parent = tracking.start_parent(sweep.folder, sweep.spec.as_dict(), settings, on_warning=on_warning)
    status = "failed"
    try:
        yield parent
        status = "completed"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        best = sweep.best_trial()
        metrics = {f"best_{sweep.spec.metric}": sweep.score(sweep.records[best])} if best is not None else {}
        tracking.finish_parent(sweep.folder, parent, settings, status, metrics=metrics, on_warning=on_warning)


def run_sweep(sweep: Sweep, *, jobs: int = 1, executor: str = "local", address: str | None = None,
              on_update: Callable[[str, int, dict | None], None] | None = None, on_warning=None) -> Sweep:
    """Run every pending trial; ``on_update(event, index, record)`` reports started/finished;
    ``on_warning(line)`` hears of a tracking server that stopped answering."""
    if sweep.spec.sampled:  # Optuna asks for the trials one by one: a layer above this one
        raise ValueError(f"search: {sweep.spec.search} sweeps run with cnncli.search.run_search")
    configs = trial_configs(sweep.spec, sweep.folder)  # validated up front, before any trial starts
    with running_sweep(sweep.folder), sweep_tracking(sweep, configs[0], on_warning) as parent:
        from cnncli.tracking import trial_tracking

        configs = [trial_tracking(c, parent) for c in configs]
        return _run_pending(sweep, configs, jobs, executor, address, on_update)


def _run_pending(sweep: Sweep, configs: list[dict], jobs: int, executor: str, address: str | None,
                 on_update) -> Sweep:
    pending = sweep.pending()
    with claimed_trials(sweep.folder, pending):
        for i in pending:  # a trial that was running or failed starts again from nothing
            folder = sweep.folder / f"trial-{i:03d}"
            if folder.exists():
                shutil.rmtree(folder)
            sweep.records.pop(i, None)
    sweep.save()
    notify = on_update or (lambda event, index, record: None)
    if not pending:
        return sweep
    if executor == "dask":
        _run_dask(sweep, configs, pending, address, notify)
    elif jobs <= 1:
        for i in pending:
            sweep.records[i] = {"index": i, "status": "running"}
            sweep.save()
            notify("started", i, None)
            record = run_trial(i, configs[i], str(sweep.folder))
            _finish(sweep, i, record, notify)
    else:
        _run_local_pool(sweep, configs, pending, jobs, notify)
    return sweep


def _finish(sweep: Sweep, i: int, record: dict, notify) -> None:
    archive = record.pop("archive", None)
    if archive is not None:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            tar.extractall(sweep.folder, filter="data")
    sweep.records[i] = record
    sweep.save()
    notify("finished", i, record)


def threads_per_worker(jobs: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(jobs, 1))


@contextlib.contextmanager
def blas_threads(threads: int):
    """BLAS's thread count for the worker processes started inside (read when a worker
    imports numpy); this process's settings come back afterwards."""
    saved = {v: os.environ.get(v) for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    for v in saved:
        os.environ[v] = str(threads)
    try:
        yield
    finally:
        for v, old in saved.items():
            if old is None:
                os.environ.pop(v, None)
            else:
                os.environ[v] = old


def _run_local_pool(sweep: Sweep, configs, pending, jobs: int, notify) -> None:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    threads = threads_per_worker(jobs)
    with blas_threads(threads):
        ctx = multiprocessing.get_context("spawn")
        queue = list(pending)
        while queue:  # a worker that dies (killed, out of memory) breaks its pool: go on in a new one
            with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=end_with_parent,
                                     initargs=(os.getpid(),)) as pool:
                futures = {}
                broken = False
                while (queue and not broken) or futures:
                    while queue and not broken and len(futures) < jobs:
                        i = queue[0]
                        try:
                            fut = pool.submit(run_trial, i, configs[i], str(sweep.folder), threads)
                        except BrokenProcessPool:
                            broken = True
                            break
                        queue.pop(0)
                        sweep.records[i] = {"index": i, "status": "running"}
                        sweep.save()
                        futures[fut] = i
                        notify("started", i, None)
                    if not futures:
                        break
                    done, _ = wait(futures, return_when=FIRST_COMPLETED)
                    for fut in done:
                        i = futures.pop(fut)
                        try:
                            record = fut.result()
                        except Exception as err:  # the worker itself died
                            broken = broken or isinstance(err, BrokenProcessPool)
                            record = {"index": i, "status": "failed", "reason": f"worker failed: {err}",
                                      "metrics": {}}
                        _finish(sweep, i, record, notify)


def _run_dask(sweep: Sweep, configs, pending, address: str | None, notify) -> None:
    try:
        from dask.distributed import Client, as_completed
    except ImportError:
        raise InputError("--executor dask needs dask[distributed]: pip install 'cnncli[dask]'") from None
    if not address:
        raise InputError("--executor dask needs --address tcp://HOST:PORT of a running scheduler")
    try:
        client = Client(address, timeout="10s")
    except (OSError, TimeoutError) as err:
        raise InputError(f"cannot reach the Dask scheduler at {address} ({err})") from None
    try:
        futures = {}
        for i in pending:
            sweep.records[i] = {"index": i, "status": "running"}
            files = plugins.read_files(configs[i]["plugins"])  # workers need not share our disk
            futures[client.submit(run_trial, i, configs[i], None, 1, files, pure=False,
                                  key=f"cnncli-trial-{i}-{time.time_ns()}")] = i
            notify("started", i, None)
        sweep.save()
        for fut in as_completed(futures):
            i = futures[fut]
            try:
                record = fut.result()
            except Exception as err:
                record = {"index": i, "status": "failed", "reason": f"worker failed: {err}", "metrics": {}}
            _finish(sweep, i, record, notify)
    finally:
        client.close()
