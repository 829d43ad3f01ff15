"""Sampled sweeps: Optuna's samplers and pruners over a study stored in the sweep folder.

A sweep file with ``search: tpe | cmaes | qmc`` and ``n_trials`` samples its trials one
by one from the same search space a grid or random sweep names: a ``grid:`` list or a
``random:`` list becomes a categorical choice, a ``random:`` ``{low, high, log, int}``
range a float (or int) distribution. The study lives in ``SWEEP_DIR/study.db``
(Optuna's SQLite storage), which is the record a resume trusts.

The driver (this process) owns the study: it asks for a trial, turns its parameters
into ``--set`` overrides, has a worker train it (``cnncli.sweep.run_trial``, in this
process, in worker processes or on Dask workers) and tells the study the result. With a
pruner, each trial reports its metric after every epoch through a :class:`PruneChannel`
and waits for the driver's verdict: the driver reports it to the study and asks the
pruner, and a pruned trial stops at once (``cnncli.training.TrialPruned``), keeping its
run folder, checkpoints and status ``pruned``.

Resume: trials the study holds as complete or pruned stay; a trial it holds as running
(the sweep was killed) is marked failed and its parameters are asked again first, so it
runs again from nothing. ``n_trials`` counts the trials that finished: complete, pruned,
or failed by an error of their own.
"""

from __future__ import annotations

import json
import os
import queue as queues
import shutil
import time
from typing import Any, Callable

from cnncli import plugins, runs
from cnncli.errors import ConfigError, InputError, RunFolderError
from cnncli.tracking import abandon, trial_tracking
from cnncli.sweep import (Sweep, SweepSpec, _finish, _trial_metrics_rows, blas_threads, claimed_trials,
                          end_with_parent, run_sweep, run_trial, running_sweep, sweep_tracking, threads_per_worker,
                          trial_config)

#: A study trial that was running when its sweep died, asked again (a user attribute).
REQUEUED = "cnncli_requeued"


def _optuna():
    try:
        import optuna
    except ImportError:
        raise InputError("search: tpe, cmaes and qmc need Optuna: pip install 'cnncli[search]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


# ----------------------------------------------------------------------- the search space
def distributions(spec: SweepSpec) -> dict[str, Any]:
    """Optuna distributions of the sweep's keys: lists are categorical (values that are not
    plain scalars are stored as JSON text), ranges float or int, log when asked."""
    optuna = _optuna()
    space = {}
    for key, values in spec.grid.items():
        space[key] = _categorical(optuna, values)
    for key, choice in spec.random.items():
        if key == "n_trials":
            continue
        if isinstance(choice, list):
            space[key] = _categorical(optuna, choice)
        elif choice.get("int"):
            space[key] = optuna.distributions.IntDistribution(int(choice["low"]), int(choice["high"]),
                                                              log=bool(choice.get("log")))
        else:
            space[key] = optuna.distributions.FloatDistribution(float(choice["low"]), float(choice["high"]),
                                                                log=bool(choice.get("log")))
    return space


def _plain(value) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _categorical(optuna, values: list):
    return optuna.distributions.CategoricalDistribution(
        [v if _plain(v) else json.dumps(v, sort_keys=True) for v in values])


def trial_values(spec: SweepSpec, params: dict) -> dict:
    """The overrides of a trial from its Optuna parameters (JSON text back to values)."""
    out = {}
    for key, value in params.items():
        choices = spec.grid.get(key, spec.random.get(key))
        if isinstance(value, str) and isinstance(choices, list) and not any(v == value for v in choices):
            value = json.loads(value)
        elif isinstance(value, float) and not isinstance(choices, list):
            value = float(f"{value:.6g}")  # as a random sweep draws: a rate of 0.0115826, not 17 digits
        out[key] = value
    return out


def describe_space(spec: SweepSpec) -> list[str]:
    """Lines for ``--dry-run``: each key's choices or range, and how many trials."""
    lines = []
    for key, values in spec.grid.items():
        lines.append(f"{key}: one of {json.dumps(values)}")
    for key, choice in spec.random.items():
        if key == "n_trials":
            continue
        if isinstance(choice, list):
            lines.append(f"{key}: one of {json.dumps(choice)}")
        else:
            kind = "int" if choice.get("int") else "float"
            lines.append(f"{key}: {kind} in [{choice['low']}, {choice['high']}]" + (", log scale" if choice.get("log")
                                                                                   else ""))
    return lines


# ----------------------------------------------------------------------------- the study
def make_sampler(spec: SweepSpec, trials_so_far: int = 0):
    """The sampler, seeded by the sweep's seed and the number of trials the study holds:
    a sampler's generator is not stored in the study, and one seeded as at the start
    would draw the first trials' values again after a resume."""
    optuna = _optuna()
    seed = spec.seed + 1_000_003 * trials_so_far
    samplers = {"tpe": lambda: optuna.samplers.TPESampler(seed=seed),
                "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False),
                "qmc": lambda: optuna.samplers.QMCSampler(seed=spec.seed, warn_independent_sampling=False)}
    return samplers[spec.search]()


def make_pruner(spec: SweepSpec, epochs: int):
    optuna = _optuna()
    settings = dict(spec.pruner or {"name": "none"})
    name = settings.pop("name")
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=settings["n_startup_trials"],
                                           n_warmup_steps=settings["n_warmup_steps"])
    if name == "hyperband":
        top = settings["max_resource"]
        return optuna.pruners.HyperbandPruner(min_resource=settings["min_resource"],
                                              max_resource=epochs if top == "auto" else top,
                                              reduction_factor=settings["reduction_factor"])
    return optuna.pruners.NopPruner()


def study_name(sweep: Sweep) -> str:
    return sweep.spec.study or f"cnncli-{sweep.folder.name}"


def open_study(sweep: Sweep, epochs: int, *, create: bool):
    """The sweep's study in ``study.db``: created with the sweep, loaded on resume. A
    database that is not a study, or holds another sweep's, is refused in one line."""
    optuna = _optuna()
    path = sweep.folder / "study.db"
    if not create and not path.is_file():
        raise RunFolderError(f"{path}: the sweep's study database is missing; it cannot be resumed")
    storage = f"sqlite:///{path.resolve()}"
    direction = "maximize" if sweep.spec.mode == "max" else "minimize"
    try:
        if create:
            return optuna.create_study(storage=storage, study_name=study_name(sweep), direction=direction,
                                       sampler=make_sampler(sweep.spec), pruner=make_pruner(sweep.spec, epochs))
        names = [s.study_name for s in optuna.study.get_all_study_summaries(storage)]
        if study_name(sweep) not in names:
            raise RunFolderError(f"{path}: holds the study of another sweep ({', '.join(names) or 'none'}), not "
                                 f"{study_name(sweep)}")
        study = optuna.load_study(storage=storage, study_name=study_name(sweep), pruner=make_pruner(sweep.spec, epochs))
        study.sampler = make_sampler(sweep.spec, len(study.get_trials(deepcopy=False)))
        return study
    except RunFolderError:
        raise
    except Exception as err:  # sqlalchemy's and Optuna's errors for a file that is not a study
        raise RunFolderError(f"{path}: not a readable study database ({type(err).__name__}: "
                             f"{str(err).splitlines()[0][:160]})") from None


def finished_count(study) -> int:
    optuna = _optuna()
    done = 0
    for t in study.get_trials(deepcopy=False):
        if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED):
            done += 1
        elif t.state == optuna.trial.TrialState.FAIL and not t.user_attrs.get(REQUEUED):
            done += 1
    return done


def requeued_record(number: int) -> dict:
    """trials.json's record of trial ``number``, running when its sweep died: failed in
    the study, its values asked again as a later trial."""
    return {"index": number, "status": "requeued", "metrics": {},
            "reason": "running when the sweep stopped; its values are asked again"}


def recover(study, sweep: Sweep, space: dict) -> list[int]:
    """Trials the study holds as running (their sweep died): failed and asked again. The
    study is the record: trials.json is brought in line with it."""
    optuna = _optuna()
    spec = sweep.spec
    for t in study.get_trials(deepcopy=False):
        if t.params and not (t.number < len(spec.trials) and spec.trials[t.number]):
            set_trial(spec, t.number, trial_values(spec, t.params))  # asked just before a kill
        record = sweep.records.get(t.number)
        if t.state != optuna.trial.TrialState.RUNNING and (record is None or record.get("status") == "running"):
            folder = sweep.folder / f"trial-{t.number:03d}"
            told = {optuna.trial.TrialState.COMPLETE: "completed", optuna.trial.TrialState.PRUNED: "pruned"}
            if t.user_attrs.get(REQUEUED):
                sweep.records[t.number] = requeued_record(t.number)
            elif t.state in told and (folder / "metrics.jsonl").is_file():
                # Told to the study, then killed before trials.json said so: the run folder has it all.
                sweep.records[t.number] = {"index": t.number, "status": told[t.state], "path": folder.name,
                                           "metrics": _trial_metrics_rows(runs.read_metrics(folder)),
                                           "reason": None}
            elif record is not None:
                sweep.records[t.number] = {"index": t.number, "status": "failed", "metrics": {},
                                           "reason": f"the study holds it as {t.state.name.lower()}"}
    again = []
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    # No worker of the sweep that died may still write into a folder cleared here; the
    # study is told nothing until then, so a refusal leaves the sweep as it was.
    with claimed_trials(sweep.folder, [t.number for t in running]):
        for t in running:
            optuna.trial.Trial(study, t._trial_id).set_user_attr(REQUEUED, True)
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            if set(t.params) >= set(space):  # killed while asking: nothing ran, nothing to ask again
                study.enqueue_trial(t.params)
            folder = sweep.folder / f"trial-{t.number:03d}"
            if folder.exists():
                abandon(folder)  # its MLflow run, if it had one, ends KILLED rather than RUNNING forever
                shutil.rmtree(folder)
            sweep.records[t.number] = requeued_record(t.number)
            again.append(t.number)
    return again


def set_trial(spec: SweepSpec, number: int, values: dict) -> None:
    """Trial ``number``'s values in ``spec.trials`` (a list by number: failed-and-requeued
    trials and trials asked just before a kill can leave gaps, kept as ``{}``)."""
    spec.trials.extend({} for _ in range(number + 1 - len(spec.trials)))
    spec.trials[number] = values


# ------------------------------------------------------------------------------ pruning
class PruneChannel:
    """How a trial hears the pruner: ``report(epoch, value) -> True to stop``.

    In this process the driver answers directly; across processes the worker puts
    (trial, epoch, value) on ``requests`` and waits on its own ``answers`` queue for the
    driver's verdict (local worker processes: a multiprocessing manager's queues; Dask: a
    distributed Queue pair).
    """

    def __init__(self, number: int, requests=None, answers=None, decide: Callable | None = None):
        self.number, self.requests, self.answers, self.decide = number, requests, answers, decide

    def report(self, epoch: int, value: float | None) -> bool:
        if self.decide is not None:
            return self.decide(self.number, epoch, value)
        self.requests.put((self.number, epoch, value))
        return bool(self.answers.get(timeout=3600))


class Driver:
    """The study's side of a sampled sweep: asks, judges intermediate values, tells."""

    def __init__(self, sweep: Sweep, study, space: dict):
        self.sweep, self.study, self.space = sweep, study, space
        self.trials: dict[int, Any] = {}
        self.parent: str | None = None  # the sweep's MLflow run, when the base config tracks

    def ask(self):
        trial = self.study.ask(self.space)
        self.trials[trial.number] = trial
        values = trial_values(self.sweep.spec, trial.params)
        set_trial(self.sweep.spec, trial.number, values)
        return trial.number, values

    def decide(self, number: int, epoch: int, value: float | None) -> bool:
        trial = self.trials[number]
        if value is None or value != value:
            return False
        trial.report(float(value), epoch)
        return trial.should_prune()

    def tell(self, number: int, record: dict) -> None:
        optuna = _optuna()
        state = record.get("status")
        score = self.sweep.score(record)
        if state == "pruned":
            self.study.tell(number, state=optuna.trial.TrialState.PRUNED)
        elif state == "completed" and score is not None:
            self.study.tell(number, score)
        else:
            self.study.tell(number, state=optuna.trial.TrialState.FAIL)
        self.trials.pop(number, None)


# ------------------------------------------------------------------------------ running
def run_any(sweep: Sweep, **options) -> Sweep:
    """Run a sweep of any search: sampled ones here, grid and random by ``cnncli.sweep``."""
    if sweep.spec.sampled:
        return run_search(sweep, create=not (sweep.folder / "study.db").exists(), **options)
    return run_sweep(sweep, **options)


def run_search(sweep: Sweep, *, jobs: int = 1, executor: str = "local", address: str | None = None,
               on_update: Callable[[str, int, dict | None], None] | None = None, create: bool = False,
               on_warning=None) -> Sweep:
    """Sample, train and tell until ``n_trials`` trials have finished (see the module docstring)."""
    notify = on_update or (lambda event, index, record: None)
    spec = sweep.spec
    base = trial_config(spec, {}, 0, sweep.folder)  # the base config must hold before anything is sampled
    with running_sweep(sweep.folder):
        study = open_study(sweep, base["train"]["epochs"], create=create)
        space = distributions(spec)
        for number in recover(study, sweep, space):
            notify("requeued", number, None)
        driver = Driver(sweep, study, space)
        sweep.save()
        prune = (spec.pruner or {}).get("name", "none") != "none"
        with sweep_tracking(sweep, base, on_warning) as parent:
            driver.parent = parent
            if executor == "dask":
                _run_dask(driver, jobs, address, notify, prune)
            elif jobs <= 1:
                _run_here(driver, notify, prune)
            else:
                _run_pool(driver, jobs, notify, prune)
        sweep.save()
    return sweep


def _next_trial(driver: Driver, notify):
    """(number, validated config) of the next trial, or None; a sampled config the
    validation refuses is a failed trial (told so) and another is asked."""
    sweep = driver.sweep
    while True:
        number, values = driver.ask()
        try:
            config = trial_tracking(trial_config(sweep.spec, values, number, sweep.folder), driver.parent)
        except ConfigError as err:
            record = {"index": number, "status": "failed", "reason": str(err), "metrics": {}}
            sweep.records[number] = record
            driver.tell(number, record)
            sweep.save()
            notify("finished", number, record)
            if finished_count(driver.study) >= sweep.spec.n_trials:
                return None
            continue
        sweep.records[number] = {"index": number, "status": "running"}
        sweep.save()
        notify("started", number, None)
        return number, config


def _run_here(driver: Driver, notify, prune: bool) -> None:
    sweep = driver.sweep
    while finished_count(driver.study) < sweep.spec.n_trials:
        picked = _next_trial(driver, notify)
        if picked is None:
            return
        number, config = picked
        channel = PruneChannel(number, decide=driver.decide) if prune else None
        record = run_trial(number, config, str(sweep.folder), prune=channel, metric=sweep.spec.metric)
        driver.tell(number, record)
        _finish(sweep, number, record, notify)


def _fill(driver: Driver, futures: dict, limit: int, notify, submit) -> None:
    """Ask for trials and ``submit(number, config) -> future`` them until ``limit`` run or
    every trial still needed is on its way."""
    while len(futures) < limit and finished_count(driver.study) + len(futures) < driver.sweep.spec.n_trials:
        picked = _next_trial(driver, notify)
        if picked is None:
            return
        futures[submit(*picked)] = picked[0]


def _collect(driver: Driver, number: int, future, notify) -> None:
    """A finished trial's record (or its worker's death) told to the study and saved."""
    try:
        record = future.result()
    except Exception as err:  # the worker died
        record = {"index": number, "status": "failed", "reason": f"worker failed: {err}", "metrics": {}}
    driver.tell(number, record)
    _finish(driver.sweep, number, record, notify)


def _run_pool(driver: Driver, jobs: int, notify, prune: bool) -> None:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from multiprocessing.managers import SyncManager

    sweep = driver.sweep
    threads = threads_per_worker(jobs)
    ctx = multiprocessing.get_context("spawn")
    manager = None
    if prune:  # the queues' server process, like the workers, ends with this process however it ends
        manager = SyncManager(ctx=ctx)
        manager.start(initializer=end_with_parent, initargs=(os.getpid(),))
    requests = manager.Queue() if prune else None
    answers: dict[int, Any] = {}
    try:
        with blas_threads(threads), ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=end_with_parent,
                                                        initargs=(os.getpid(),)) as pool:
            def submit(number, config):
                channel = None
                if prune:
                    answers[number] = manager.Queue()
                    channel = PruneChannel(number, requests, answers[number])
                return pool.submit(run_trial, number, config, str(sweep.folder), threads, None, channel,
                                   sweep.spec.metric)

            futures: dict[Any, int] = {}
            while True:
                _fill(driver, futures, jobs, notify, submit)
                if not futures:
                    return
                done, _ = wait(futures, timeout=0.05 if prune else None, return_when=FIRST_COMPLETED)
                _answer(driver, requests, answers)
                for fut in done:
                    number = futures.pop(fut)
                    _collect(driver, number, fut, notify)
                    answers.pop(number, None)
    finally:
        if manager is not None:
            manager.shutdown()


def _answer(driver: Driver, requests, answers) -> None:
    """Judge every intermediate value the workers have reported, and answer each."""
    if requests is None:
        return
    while True:
        try:
            number, epoch, value = requests.get_nowait()
        except queues.Empty:
            return
        answers[number].put(driver.decide(number, epoch, value))


def _run_dask(driver: Driver, jobs: int, address: str | None, notify, prune: bool) -> None:
    try:
        from dask.distributed import Client, Queue, wait
    except ImportError:
        raise InputError("--executor dask needs dask[distributed]: pip install 'cnncli[dask]'") from None
    try:
        client = Client(address, timeout="10s")
    except (OSError, TimeoutError) as err:
        raise InputError(f"cannot reach the Dask scheduler at {address} ({err})") from None
    sweep = driver.sweep
    tag = f"cnncli-{sweep.folder.name}-{time.time_ns()}"
    try:
        workers = max(len(client.scheduler_info().get("workers", {})), 1)
        parallel = max(jobs, workers)
        requests = Queue(f"{tag}-requests", client=client) if prune else None
        answers: dict[int, Any] = {}

        def submit(number, config):
            channel = None
            if prune:
                answers[number] = Queue(f"{tag}-answers-{number}", client=client)
                channel = PruneChannel(number, requests, answers[number])
            files = plugins.read_files(config["plugins"])  # workers need not share our disk
            return client.submit(run_trial, number, config, None, 1, files, channel, sweep.spec.metric,
                                 pure=False, key=f"{tag}-trial-{number}")

        futures: dict[Any, int] = {}
        while True:
            _fill(driver, futures, parallel, notify, submit)
            if not futures:
                return
            try:
                done, _ = wait(list(futures), timeout=0.05 if prune else None, return_when="FIRST_COMPLETED")
            except TimeoutError:
                done = set()
            while prune:
                try:
                    number, epoch, value = requests.get(timeout=0.01)
                except TimeoutError:
                    break
                answers[number].put(driver.decide(number, epoch, value))
            for fut in done:
                _collect(driver, futures.pop(fut), fut, notify)
    finally:
        client.close()


__all__ = ["run_any", "run_search", "distributions", "describe_space", "PruneChannel", "open_study"]
