"""Runs logged to MLflow besides their folder (``tracking: {mlflow: ...}``, ``--track mlflow``).

The run folder stays the record of a run; MLflow gets a copy to search and compare in
its UI. A tracked run is one MLflow run, named like the run folder, holding:

* params: the resolved config, flattened to dotted keys (``optimizer.lr``), each key
  made acceptable to MLflow by :func:`param_key` and each value written as text (JSON for
  lists, mappings, booleans and null) of at most 6,000 characters;
* tags: ``cnncli.version``, ``cnncli.run_dir`` (the folder's absolute path) and
  ``cnncli.status`` (cnncli's own status: completed, failed, interrupted, pruned);
* metrics: every epoch's ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``, ``lr`` and
  ``seconds`` with ``step=epoch``; at the end ``eval_loss`` and ``eval_accuracy`` of eval.json;
* artifacts, at the end: the folder's record files (:data:`ARTIFACTS` that exist) and, with
  ``log_checkpoints: true``, ``checkpoints/``.

Its status follows cnncli's: completed -> FINISHED, failed -> FAILED, interrupted and
pruned -> KILLED. The run's MLflow id is kept in ``tracking.json`` in the run folder, so
``cnncli train --resume`` continues the same MLflow run (and first logs any finished epoch
that MLflow missed).

Failures are split in two, so that MLflow can never cost a run:

* Before anything runs (:func:`connect`, called before the run folder exists): MLflow not
  installed, a server that does not answer, a local store that cannot be written, are
  refused in one line (:class:`~cnncli.errors.ConfigError`, exit 2).
* Once the run has started, any error from MLflow is reported once through
  ``on_warning(line)``, recorded in tracking.json, and tracking stops for the run; the
  run folder is written in full as always.

A sweep is a parent run with each trial nested under it: :func:`start_parent`,
:func:`trial_tracking`, :func:`finish_parent`. Only :class:`mlflow.tracking.MlflowClient`
is used (never MLflow's global "active run"), so runs in threads or processes side by
side do not meet.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import time
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

from cnncli import runs
from cnncli.errors import ConfigError
from cnncli.training import Callback, EpochMetrics, TrainState

#: In the run (or sweep) folder: the MLflow run it is logged to, and how far.
TRACKING_FILE = "tracking.json"
INSTALL_HINT = "pip install 'cnncli[mlflow]'"
#: cnncli's status -> MLflow's; anything else (a run that stopped while "running") is FAILED.
MLFLOW_STATUS = {"completed": "FINISHED", "failed": "FAILED", "interrupted": "KILLED", "pruned": "KILLED"}
EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds")
#: A run folder's files logged at the end, those that exist (report.html once written).
ARTIFACTS = ("config.yaml", "summary.md", "metrics.jsonl", "status.json", "eval.json", "curves.png",
             "dynamics.jsonl", "report.html", "data.json", "env.json")
#: A sweep folder's files logged at the end of the sweep, those that exist.
SWEEP_ARTIFACTS = ("sweep.yaml", "trials.json", "results.csv", "leaderboard.md", "report.html")
MAX_PARAM_VALUE = 6000   # MLflow's limit on a param's value (characters)
MAX_KEY = 250            # ... and on a param's, metric's or tag's key
PARAMS_PER_CALL = 100    # ... and on the params (or tags) of one log_batch
METRICS_PER_CALL = 1000
#: Seconds to wait for an http(s) tracking server to accept a connection at the start.
REACH_TIMEOUT = 5.0
#: MLflow retries an HTTP call for minutes by default (7 retries, backoff factor 2, 120 s
#: timeout): a server that goes away mid-run would stall training that long at each call.
#: cnncli's calls give up within seconds, unless these are set in the environment.
HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}

Warn = Callable[[str], None]


# ------------------------------------------------------------------------ params and keys
def param_key(dotted: str) -> str:
    """A flattened config key as an MLflow key.

    MLflow keys may hold only letters, digits, ``_ - . space / :`` (no colon on Windows),
    must read the same as a normalized path (no leading ``/`` or ``..``) and are at most 250
    characters. So a list index becomes a path segment (``model.layers[0].filters`` ->
    ``model.layers.0.filters``, which ``--set`` reads too); any other character becomes
    ``_`` (``/`` and ``:`` included, which MLflow would read as a path or refuse on
    Windows); runs of dots become one and leading or trailing dots and spaces go; a key
    longer than 250 keeps its first 241 characters and ``-`` plus 8 hex digits of its hash.
    """
    key = re.sub(r"\[(-?\d+)\]", r".\1", dotted)
    key = re.sub(r"[^A-Za-z0-9_.\- ]", "_", key)
    key = re.sub(r"\.{2,}", ".", key).strip(". ") or "_"
    if len(key) > MAX_KEY:
        key = key[:MAX_KEY - 9] + "-" + _digest(dotted)
    return key


def param_value(value) -> str:
    """A config value as MLflow param text: strings as they are, numbers as Python writes
    them, anything else as JSON; cut to 6,000 characters (config.yaml has it whole)."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if len(text) > MAX_PARAM_VALUE:
        marker = f"... ({len(text):,} characters; config.yaml has them all)"
        text = text[:MAX_PARAM_VALUE - len(marker)] + marker
    return text


def params_of(flat: dict) -> dict[str, str]:
    """MLflow params from flattened config values (``cnncli.experiment.flat_values``).

    The ``tracking`` section is left out: where a run is logged is not part of the
    experiment. Two keys that sanitize alike (rare: a class name with a ``/``) are kept
    apart by a ``-`` and 8 hex digits of the original key's hash on the second.
    """
    out: dict[str, str] = {}
    for dotted, value in flat.items():
        if dotted == "tracking" or dotted.startswith(("tracking.", "tracking[")):
            continue
        key = param_key(dotted)
        if key in out:
            key = key[:MAX_KEY - 9] + "-" + _digest(dotted)
        out[key] = param_value(value)
    return out


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:8]


# ------------------------------------------------------------------------- the settings
def settings_of(tracking: dict | None) -> dict | None:
    """The resolved ``tracking.mlflow`` mapping when it asks for logging, else None."""
    spec = (tracking or {}).get("mlflow")
    return spec if spec and spec.get("enabled", True) else None


def trial_tracking(values: dict, parent_run_id: str | None) -> dict:
    """A sweep trial's resolved config ``values`` with its MLflow run nested under the
    sweep's run ``parent_run_id`` (a copy; ``values`` as they are when either is None).

    The parent's id travels in the config (``tracking.mlflow.parent_run_id``), so a trial
    in another process, or on a Dask worker, is nested all the same.
    """
    spec = settings_of(values.get("tracking"))
    if spec is None or parent_run_id is None:
        return values
    return {**values, "tracking": {**values["tracking"], "mlflow": {**spec, "parent_run_id": parent_run_id}}}


def read_record(folder: str | Path) -> dict | None:
    """A folder's tracking.json (``{uri, experiment, experiment_id, run_id, ...}``), or None."""
    try:
        return json.loads((Path(folder) / TRACKING_FILE).read_text())
    except (OSError, ValueError):
        return None


# -------------------------------------------------------------------- reaching MLflow
def _client_class():
    """MLflow's client class; without MLflow, a refusal that says what to install."""
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise ConfigError("tracking.mlflow", "", None,
                          raw=f"this config logs to MLflow, which is not installed: {INSTALL_HINT} "
                              "(or drop --track / the tracking section)") from None
    return MlflowClient


@contextlib.contextmanager
def _mlflow_calls():
    """Around every call into MLflow: HTTP retries capped (:data:`HTTP_LIMITS`, unless the
    environment sets them) and MLflow's INFO lines (creating a SQLite store's tables) kept
    off the terminal, which only the command line writes to."""
    added = {k: v for k, v in HTTP_LIMITS.items() if k not in os.environ}
    os.environ.update(added)
    quiet = [(logging.getLogger(name), logging.getLogger(name).level) for name in ("mlflow", "alembic")]
    for logger, _ in quiet:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for logger, level in quiet:
            logger.setLevel(level)
        for key in added:
            os.environ.pop(key, None)


def _check_database_driver(uri: str) -> None:
    """A database store (SQLite, PostgreSQL, MySQL, ...) needs SQLAlchemy and Alembic, which
    mlflow-skinny does not bring; without them MLflow fails with a bare ``KeyError``."""
    import importlib.util

    scheme = urlparse(uri).scheme.split("+")[0]
    if scheme in ("sqlite", "postgresql", "mysql", "mssql") and not all(
            importlib.util.find_spec(name) for name in ("sqlalchemy", "alembic")):
        raise ConfigError("tracking.mlflow.uri", "", None,
                          raw=f"the MLflow store {uri} is a database, which needs SQLAlchemy and Alembic besides "
                              f"MLflow: {INSTALL_HINT}")


def _check_reachable(uri: str) -> None:
    """An http(s) server must accept a connection within :data:`REACH_TIMEOUT`; a SQLite
    or file store's folder must be (or become) a writable folder. Refused in one line."""
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            with socket.create_connection((parsed.hostname or "", port), timeout=REACH_TIMEOUT):
                pass
        except OSError as err:
            why = (f"no answer within {REACH_TIMEOUT:g} s" if isinstance(err, TimeoutError)
                   else (err.strerror or str(err)).lower())
            raise ConfigError("tracking.mlflow.uri", "", None,
                              raw=f"cannot reach the MLflow server at {uri} ({why}); "
                                  "start it, or give another tracking.mlflow.uri or CNNCLI_MLFLOW_URI") from None
        return
    if parsed.scheme == "sqlite" and uri.startswith("sqlite:////"):
        folder = Path(uri[len("sqlite:///"):].split("?")[0]).parent
    elif parsed.scheme == "file":
        folder = Path(parsed.path)
    else:
        return  # databricks, postgresql, ...: opening the experiment is the check
    try:
        folder.mkdir(parents=True, exist_ok=True)
        writable = os.access(folder, os.W_OK | os.X_OK)
    except OSError as err:
        raise ConfigError("tracking.mlflow.uri", "", None,
                          raw=f"the MLflow store {uri} cannot be created: {err.strerror or err}") from None
    if not writable:
        raise ConfigError("tracking.mlflow.uri", "", None, raw=f"the MLflow store {uri}: {folder} is not writable")


def _default_artifact_location(settings: dict) -> str | None:
    """Where a new experiment keeps its artifacts: the key, else, for a SQLite store,
    ``mlartifacts/`` beside the database (MLflow's own default is ./mlruns of whatever
    folder the run starts in); else the store's default (a server's own)."""
    if settings.get("artifact_location"):
        return settings["artifact_location"]
    uri = settings["uri"]
    if uri.startswith("sqlite:////"):
        return str(Path(uri[len("sqlite:///"):].split("?")[0]).parent / "mlartifacts")
    return None


def _experiment_id(client, settings: dict) -> str:
    """The id of the experiment named in ``settings``, created when it does not exist."""
    name = settings["experiment"]
    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            return client.create_experiment(name, artifact_location=_default_artifact_location(settings))
        except Exception as err:  # another process (a sweep's worker) created it meanwhile
            if getattr(err, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                raise
            found = client.get_experiment_by_name(name)
    if found.lifecycle_stage != "active":
        raise ConfigError("tracking.mlflow.experiment", "", None,
                          raw=f"the MLflow experiment {name!r} is deleted in {settings['uri']}; restore it "
                              f"(mlflow experiments restore --experiment-id {found.experiment_id}) or name another")
    return found.experiment_id


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return f"{type(err).__name__}: {text[:300]}{'...' if len(text) > 300 else ''}"


def connect(tracking: dict | None, *, source: str | None = None, on_warning: Warn | None = None) -> "Tracker | None":
    """A :class:`Tracker` for the resolved ``tracking`` section, or None when it logs nothing.

    Called before anything runs: MLflow must import, an http(s) server must answer, a
    SQLite or file store must be writable, and the experiment must open (it is created
    when new). Otherwise a :class:`~cnncli.errors.ConfigError` says why in one line
    (``source``: the config file, for the message).
    """
    settings = settings_of(tracking)
    if settings is None:
        return None
    try:
        client_class = _client_class()
        _check_database_driver(settings["uri"])
        _check_reachable(settings["uri"])
        try:
            with _mlflow_calls():
                client = client_class(tracking_uri=settings["uri"])
                experiment_id = _experiment_id(client, settings)
        except ConfigError:
            raise
        except Exception as err:  # MLflow's, the database driver's, the network's: all mean "cannot use it"
            raise ConfigError("tracking.mlflow", "", None,
                              raw=f"cannot use the MLflow store {settings['uri']} ({_one_line(err)})") from None
    except ConfigError as err:
        raise err.in_file(source) if source and not err.source else err
    return Tracker(client, settings, experiment_id, on_warning)


# ------------------------------------------------------------------------- the tracker
class Tracker(Callback):
    """One run (or sweep) folder's MLflow run: :meth:`begin` creates or continues it, each
    epoch is logged as it ends, :meth:`end` logs the artifacts and sets the status.

    After the first error from MLflow it warns once and does nothing more (:attr:`stopped`).
    """

    def __init__(self, client, settings: dict, experiment_id: str, on_warning: Warn | None = None):
        self.client = client
        self.settings = settings
        self.experiment_id = experiment_id
        self.on_warning = on_warning
        self.folder: Path | None = None
        self.run_id: str | None = None
        self.stopped: str | None = None   # the warning, once MLflow failed
        self.epochs_logged = 0            # the last epoch MLflow has (kept in tracking.json)
        self.artifacts = ARTIFACTS

    # ------------------------------------------------------------------ the run's life
    def begin(self, folder: Path, params: dict[str, str], history=(), *, tags: dict | None = None,
              artifacts=ARTIFACTS) -> None:
        """Create the MLflow run for ``folder``, or continue the one its tracking.json
        names; log ``params`` (MLflow-ready: :func:`params_of`) that it does not have yet
        (a param's value cannot change in MLflow: a resume's ``--set`` shows in the
        ``history.*`` params instead) and the finished epochs of ``history`` it missed."""
        self.folder = Path(folder)
        self.artifacts = artifacts
        record = read_record(self.folder) or {}
        self._call("starting the run", self._open_run, record, tags or {})
        if self.run_id is None:
            return
        self._write_record()
        self._call("logging the config", self._log_new_params, params)
        self._log_epochs([row for row in history if row.get("epoch", 0) > self.epochs_logged])

    def on_epoch_end(self, metrics: EpochMetrics, improved: bool, state: TrainState) -> None:
        self._log_epochs([metrics.as_dict()])

    def end(self, status: str | None = None, metrics: dict | None = None) -> None:
        """Log the artifacts and end the MLflow run with cnncli's ``status`` mapped to
        MLflow's; ``status`` None reads it from the folder's status.json."""
        if self.run_id is None or self.stopped:
            return
        # An epoch the callbacks did not pass on (one before this stopped the run: a sweep's
        # pruner) is in metrics.jsonl all the same.
        self._log_epochs([row for row in runs.read_metrics(self.folder) if row.get("epoch", 0) > self.epochs_logged])
        status = status or runs.read_status(self.folder).get("status", "unknown")
        self._call("logging the artifacts", self._log_end, status, metrics or {})

    # ------------------------------------------------------------------- MLflow calls
    def _call(self, what: str, fn, *args) -> None:
        """``fn(*args)`` unless MLflow failed before; the first error warns and stops tracking."""
        if self.stopped:
            return
        try:
            with _mlflow_calls():
                fn(*args)
        except Exception as err:  # tracking must never cost the run: whatever MLflow raises, the run goes on
            self.stopped = (f"MLflow ({self.settings['uri']}): {what} failed ({_one_line(err)}); tracking stops "
                            f"for this run, whose folder is complete as always")
            if self.folder is not None and self.folder.is_dir():
                with contextlib.suppress(OSError):
                    self._write_record()
            if self.on_warning is not None:
                self.on_warning(self.stopped)

    def _open_run(self, record: dict, tags: dict) -> None:
        from mlflow.entities import RunTag

        if record.get("run_id") and record.get("uri") == self.settings["uri"]:
            try:
                run = self.client.get_run(record["run_id"])
            except Exception as err:
                if getattr(err, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
                    raise
                run = None  # deleted from the store since: a new MLflow run, given every epoch again
            if run is not None and run.info.lifecycle_stage == "active":
                self.run_id = run.info.run_id
                self.epochs_logged = int(record.get("epochs_logged", 0))
                self.client.update_run(self.run_id, status="RUNNING")
                self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in
                                                         {**tags, "cnncli.status": "running"}.items()])
                return
        import cnncli

        tags = {"cnncli.version": cnncli.__version__, "cnncli.status": "running", **tags}
        if self.settings.get("parent_run_id"):
            tags["mlflow.parentRunId"] = self.settings["parent_run_id"]
        run = self.client.create_run(self.experiment_id, run_name=self.folder.name, tags=tags)
        self.run_id = run.info.run_id
        self.epochs_logged = 0

    def _log_new_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        have = self.client.get_run(self.run_id).data.params
        new = [Param(k, v) for k, v in params.items() if k not in have]
        for start in range(0, len(new), PARAMS_PER_CALL):
            self.client.log_batch(self.run_id, params=new[start:start + PARAMS_PER_CALL])

    def _log_epochs(self, rows: list[dict]) -> None:
        """Every epoch row's metrics at ``step=epoch``; tracking.json then says how far."""
        if not rows or self.run_id is None or self.stopped:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(name, float(row[name]), now, int(row["epoch"]))
                   for row in rows for name in EPOCH_METRICS if row.get(name) is not None]

        def log():
            for start in range(0, len(metrics), METRICS_PER_CALL):
                self.client.log_batch(self.run_id, metrics=metrics[start:start + METRICS_PER_CALL])

        self._call(f"logging epoch {rows[-1]['epoch']}", log)
        if not self.stopped:
            self.epochs_logged = max(self.epochs_logged, *(int(row["epoch"]) for row in rows))
            self._write_record()

    def _log_end(self, status: str, metrics: dict) -> None:
        from mlflow.entities import Metric, RunTag

        evaluation = _read_json(self.folder / "eval.json")
        extra = {**{f"eval_{k}": evaluation[k] for k in ("loss", "accuracy")
                    if isinstance(evaluation.get(k), (int, float))}, **metrics}
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, self.epochs_logged)
                                                    for k, v in extra.items()],
                              tags=[RunTag("cnncli.status", status)])
        for name in self.artifacts:
            if (self.folder / name).is_file():
                self.client.log_artifact(self.run_id, str(self.folder / name))
        if self.settings.get("log_checkpoints") and (self.folder / "checkpoints").is_dir():
            self.client.log_artifacts(self.run_id, str(self.folder / "checkpoints"), "checkpoints")
        self.client.set_terminated(self.run_id, MLFLOW_STATUS.get(status, "FAILED"))

    def _write_record(self) -> None:
        record = {"backend": "mlflow", "uri": self.settings["uri"], "experiment": self.settings["experiment"],
                  "experiment_id": self.experiment_id, "run_id": self.run_id,
                  "parent_run_id": self.settings.get("parent_run_id"), "epochs_logged": self.epochs_logged}
        if self.stopped:
            record["stopped"] = self.stopped
        runs.write_json(self.folder / TRACKING_FILE, record)


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


@contextlib.contextmanager
def tracked(tracker: Tracker | None, run_dir: Path, params: dict, history=()):
    """Around a run's training: begin the MLflow run, yield the callbacks to add to the
    fit (none without a tracker), and end it however training ends, with the status the
    run folder's status.json then holds."""
    if tracker is None:
        yield ()
        return
    tracker.begin(run_dir, params_of(params), history, tags={"cnncli.run_dir": str(Path(run_dir).resolve())})
    try:
        yield (tracker,)
    finally:
        tracker.end()


def _on_recorded_run(folder: str | Path, act, failure: str, on_warning: Warn | None) -> None:
    """``act(client, run_id)`` on the MLflow run a folder's tracking.json names; nothing for a
    folder that logged nothing (or whose tracking stopped), and an error only warns
    (``failure``: what failed, for the warning)."""
    record = read_record(folder)
    if not record or not record.get("run_id") or record.get("stopped"):
        return
    try:
        client_class = _client_class()
        with _mlflow_calls():
            act(client_class(tracking_uri=record["uri"]), record["run_id"])
    except Exception as err:  # the run folder is complete; MLflow lacks something, and says so once
        if on_warning is not None:
            on_warning(f"MLflow ({record['uri']}): {failure.format(error=_one_line(err))}")


def log_files(folder: str | Path, paths, *, on_warning: Warn | None = None) -> None:
    """Add files written after a tracked run ended (``train.report``'s report.html) to its
    MLflow run; a folder without tracking.json has none, and an error only warns."""
    def add(client, run_id):
        for path in paths:
            client.log_artifact(run_id, str(path))

    names = ", ".join(Path(p).name for p in paths)
    _on_recorded_run(folder, add, f"adding {names} failed ({{error}}); the run folder has them", on_warning)


def abandon(folder: str | Path, *, on_warning: Warn | None = None) -> None:
    """End as KILLED the MLflow run of a run folder that is about to be thrown away (a
    sweep trial that was running when its sweep died, and runs again under a new number);
    nothing when the folder logged nothing, and an error only warns."""
    _on_recorded_run(folder, lambda client, run_id: client.set_terminated(run_id, status="KILLED"),
                     f"ending the run of {Path(folder).name} failed ({{error}})", on_warning)


# ------------------------------------------------------------------------------ sweeps
def start_parent(sweep_folder: str | Path, spec: dict, tracking: dict | None, *,
                 on_warning: Warn | None = None) -> str | None:
    """The MLflow run of a sweep, under which each trial's run is nested; its id (None
    when ``tracking`` logs nothing).

    Call it in the sweep's own process, before the first trial, with the resolved
    ``tracking`` of the trials' configs (the base config's) and the sweep's spec
    (``SweepSpec.as_dict()``): its keys become params (the trials and the base config's
    copy left out). It refuses in one line, as :func:`connect`, a store it cannot use. A
    resumed sweep (its folder's tracking.json) continues the same parent run.
    """
    tracker = connect(tracking, on_warning=on_warning)
    if tracker is None:
        return None
    shown = {k: v for k, v in spec.items() if k not in ("trials", "base_config")}
    params = {param_key(k): param_value(v) for k, v in _flat_two_levels(shown).items()}
    params["trials"] = str(len(spec.get("trials") or []))
    tracker.begin(Path(sweep_folder), params, tags={"cnncli.sweep_dir": str(Path(sweep_folder).resolve())},
                  artifacts=SWEEP_ARTIFACTS)
    return tracker.run_id


def finish_parent(sweep_folder: str | Path, parent_run_id: str | None, tracking: dict | None,
                  status: str = "completed", *, metrics: dict | None = None, on_warning: Warn | None = None) -> None:
    """End a sweep's MLflow run: ``metrics`` (say ``{"best_val_accuracy": 0.97}``), the sweep
    folder's files (:data:`SWEEP_ARTIFACTS`), and ``status`` (cnncli's word: completed,
    failed, interrupted) as MLflow's. Nothing with ``parent_run_id`` None; an error warns."""
    settings = settings_of(tracking)
    if parent_run_id is None or settings is None:
        return
    folder = Path(sweep_folder)
    record = read_record(folder) or {}
    if record.get("run_id") != parent_run_id or record.get("stopped"):
        return  # not this sweep's run, or MLflow failed earlier (and said so)
    tracker = Tracker(None, settings, record.get("experiment_id"), on_warning)
    tracker.folder, tracker.run_id, tracker.artifacts = folder, parent_run_id, SWEEP_ARTIFACTS
    tracker.epochs_logged = int(record.get("epochs_logged", 0))

    def open_client():
        tracker.client = _client_class()(tracking_uri=settings["uri"])

    tracker._call("reopening the sweep's run", open_client)
    tracker.end(status, metrics)


def _flat_two_levels(spec: dict) -> dict:
    """``{"grid": {"optimizer.lr": [...]}}`` -> ``{"grid.optimizer.lr": [...]}``: a sweep's
    keys are dotted already, so one level of nesting is all there is to undo."""
    out = {}
    for key, value in spec.items():
        if isinstance(value, dict) and value:
            out.update({f"{key}.{inner}": v for inner, v in value.items()})
        else:
            out[key] = value
    return out


__all__ = ["connect", "Tracker", "tracked", "params_of", "param_key", "param_value", "settings_of",
           "trial_tracking", "read_record", "log_files", "start_parent", "finish_parent", "TRACKING_FILE",
           "MLFLOW_STATUS"]
