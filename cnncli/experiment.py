"""Experiments end to end: a config becomes a run folder; a run folder is evaluated or asked.

This is the Python API behind the CLI (``cnncli.train``, ``cnncli.evaluate_run``,
``cnncli.predict``). It writes files but never prints; the CLI passes callbacks for
its progress display.

Order of work in :func:`train`: validate the config, build the network, load the data
(so that every config or data error is reported before a run folder exists), then
create the folder and train. A run that fails or is interrupted keeps what it wrote and
says so in ``status.json``.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnncli import plugins, runs, tracking, yamlfiles
from cnncli.builder import build
from cnncli.config import Config, load_config
from cnncli.data import (Dataset, Split, apply_normalization, class_weights, load_dataset, normalization_of,
                         seeded_rng, undo_normalization)
from cnncli.errors import CheckpointError, ConfigError, DataError, RunFolderError
from cnncli.metrics import (class_probabilities, classification_scores, confusion_matrix, per_class_scores,
                            predicted_classes)
from cnncli.resources import check_disk
from cnncli.summary import summarize, to_markdown
from cnncli.training import (Callback, DynamicsSchedule, EpochMetrics, FitResult, TrainState, TrialPruned, evaluate,
                             fit, monitored_metric)
from cnncli.visualize import curves_png, optimizer_label

SHUFFLE_STREAM = 3
AUGMENT_STREAM = 4


@dataclass
class Run:
    """A finished (or stopped) training run."""

    path: Path
    config: Config
    result: FitResult | None = None
    status: str = "running"
    evaluation: dict = field(default_factory=dict)

    @property
    def history(self) -> list[EpochMetrics]:
        return self.result.history if self.result else []

    @property
    def best(self) -> EpochMetrics | None:
        return self.result.best if self.result else None


def checkpoint_interval(value) -> tuple[int, str]:
    """``train.checkpoint_every``: an int (epochs), or ``"N epochs"`` / ``"N steps"``."""
    if isinstance(value, int):
        return value, "epochs"
    count, unit = str(value).split()
    return int(count), ("steps" if unit.startswith("step") else "epochs")


class RunWriter(Callback):
    """Writes metrics rows, checkpoints and status as training goes."""

    def __init__(self, run_dir: Path, network, optimizer, config: dict, shuffle_rng: np.random.Generator,
                 history: list[dict] = (), monitor: str = "val_loss"):
        self.run_dir = run_dir
        self.network = network
        self.optimizer = optimizer
        self.log = runs.MetricsLog(run_dir, list(history))
        self.dynamics_log = runs.DynamicsLog(run_dir, since_step=optimizer.t)
        self.every, self.unit = checkpoint_interval(config["train"]["checkpoint_every"])
        self.epochs = config["train"]["epochs"]
        self.monitor = monitor
        self.shuffle_rng = shuffle_rng
        self.best_state: dict | None = None
        self.steps_per_epoch = 0
        self.last_saved: dict | None = None

    def _meta(self, state: TrainState) -> dict:
        return {"epoch": state.epoch, "batch": state.batch, "step": self.optimizer.t,
                "train_state": state.as_dict(), "shuffle_rng": self.shuffle_rng.bit_generator.state,
                "schedule_state": self.optimizer.schedule.state_dict(),
                "layer_rngs": {str(i): l.rng.bit_generator.state for i, l in enumerate(self.network.layers)
                               if getattr(l, "rng", None) is not None}}

    def save_last(self, state: TrainState) -> None:
        runs.save_checkpoint(self.run_dir / "checkpoints" / "last.npz", self.network, self.optimizer,
                             self._meta(state))
        self.last_saved = {"epochs_completed": state.epoch, "batch": state.batch, "step": self.optimizer.t}

    def on_train_start(self, epochs, steps_per_epoch, state):
        self.steps_per_epoch = steps_per_epoch

    def on_step_end(self, state: TrainState) -> None:
        if self.unit == "steps" and self.optimizer.t % self.every == 0 and state.batch < self.steps_per_epoch:
            self.save_last(state)

    def on_epoch_end(self, metrics: EpochMetrics, improved: bool, state: TrainState) -> None:
        self.log.append(metrics.as_dict())
        if improved:
            runs.save_checkpoint(self.run_dir / "checkpoints" / "best.npz", self.network, self.optimizer,
                                 self._meta(state))
            self.best_state = self.network.state_dict()
        if self.unit == "steps" or metrics.epoch % self.every == 0 or metrics.epoch == self.epochs:
            self.save_last(state)
        # The best epoch so far, as fit chose it: what runs, compare and the pictures show.
        runs.write_status(self.run_dir, "running", epochs_completed=metrics.epoch, step=metrics.step,
                          best_epoch=state.best_epoch, monitor=self.monitor)

    def on_dynamics(self, record: dict) -> None:
        self.dynamics_log.append(record)

    def on_interrupt(self, state: TrainState) -> None:
        self.save_last(state)

    def on_train_end(self, result: FitResult) -> None:
        if result.stopped_early and result.state is not None:
            self.save_last(result.state)  # last.npz at the stopping epoch


@contextlib.contextmanager
def graceful_interrupts():
    """Yield ``should_stop()``: the first SIGINT/SIGTERM asks the loop to stop after the
    current step (and checkpoint); a second one raises KeyboardInterrupt at once.

    Outside the main thread (where signals cannot be handled) nothing is installed.
    """
    requested = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return

    def handler(signum, frame):
        if requested["stop"]:
            raise KeyboardInterrupt
        requested["stop"] = True

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: requested["stop"]
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def prepare(config: Config | dict | str, overrides=(), runs_dir: str | Path = "runs", on_fetch=None):
    """Validate, build and load the data of a config, before any run folder exists.

    Decoded images are cached in ``<runs_dir>/.cache``, keyed by the files and settings;
    a dataset by name not yet cached is fetched (``on_fetch``: see ``datasets.prepare``).
    """
    if not isinstance(config, Config) or overrides:
        config = load_config(config, overrides)
    built = build(config)
    try:
        data = load_dataset(config.values, cache_dir=Path(runs_dir) / ".cache",
                            outputs=int(np.prod(built.network.output_shape)), on_fetch=on_fetch)
        # Weights per class, from the training split: checked before a run folder exists, kept with the data.
        weights = class_weights(config["loss"].get("class_weight"), data.train.y, data.class_names)
        data.info["class_weights"] = None if weights is None else weights.tolist()
    except DataError as err:
        raise DataError(f"{config.source}: data: {err}" if config.source else f"data: {err}") from None
    return config, built, data


def schedule_notes(optimizer, values: dict, train_examples: int) -> list[str]:
    """What the schedule has to say about a run of this length (a warmup longer than it)."""
    steps_per_epoch = -(-train_examples // values["train"]["batch_size"])
    return optimizer.schedule.run_notes(values["train"]["epochs"] * steps_per_epoch)


def train(config: Config | dict | str, *, overrides=(), runs_dir: str | Path = "runs", name: str | None = None,
          callbacks: tuple[Callback, ...] = (), on_ready=None, handle_signals: bool = True,
          exact_name: bool = False, on_fetch=None, on_init=None, on_notice=None, on_warning=None) -> Run:
    """Train a config into a new run folder and return the :class:`Run`.

    With ``init_from`` in the config, the network starts from another run's weights
    (:func:`start_from`); ``on_init(rows, record)`` hears what was loaded, layer by layer.
    ``on_ready(run_dir, config, network, dataset)`` is called once the folder exists,
    before the first epoch (the CLI prints the summary there). With ``handle_signals``,
    Ctrl-C or SIGTERM stops after the current step with a checkpoint (``run.status`` is
    then ``interrupted``; :func:`resume` continues it). With ``tracking`` in the config the
    run is logged to MLflow too (cnncli.tracking); ``on_warning(line)`` hears, once, that
    MLflow failed mid-run (the run goes on).
    """
    config, built, data = prepare(config, overrides, runs_dir, on_fetch)
    network, loss, optimizer = built
    values = config.values
    loaded = None
    if values.get("init_from"):  # checked and loaded before any folder exists
        loaded = start_from(network, values["init_from"])
        values = config.values = {**values, "init_from": loaded["record"]}
    slots = len(optimizer.slots)
    check_disk(runs_dir, (1 + slots) * network.parameter_count() * network.dtype.itemsize)
    # MLflow tracking (cnncli.tracking): a store it cannot use is refused before the folder exists.
    tracker = tracking.connect(values.get("tracking"), source=config.source, on_warning=on_warning)
    run_dir = runs.create_run_dir(runs_dir, name or values["name"], exact=exact_name)
    runs.write_status(run_dir, "running", epochs_completed=0, step=0)
    # The run keeps its own copy of every plugin, and its config names the copies.
    in_folder = {**values, "plugins": plugins.copy_into(run_dir, values["plugins"])}
    runs.atomic_write_text(run_dir / "config.yaml", yamlfiles.dump(in_folder))
    runs.write_json(run_dir / "env.json", runs.environment())
    runs.write_json(run_dir / "data.json", {"class_names": data.class_names, "normalization": data.normalization,
                                            **{k: v for k, v in data.info.items() if k != "classes"}})
    runs.atomic_write_text(run_dir / "summary.md", "# Summary\n\n" + to_markdown(summarize(network)))
    if loaded is not None and on_init is not None:
        on_init(loaded["rows"], loaded["record"])
    for line in schedule_notes(optimizer, values, len(data.train)) if on_notice is not None else ():
        on_notice(line)
    if on_ready is not None:
        on_ready(run_dir, config, network, data)
    shuffle_rng = seeded_rng(values["seed"], SHUFFLE_STREAM)
    # MLflow tracking: its run begins here and ends with whatever status the run ends with.
    with tracking.tracked(tracker, run_dir, flat_values(in_folder)) as tracker_callbacks:
        return _run_fit(Run(run_dir, config), network, loss, optimizer, data, shuffle_rng, TrainState(),
                        (*callbacks, *tracker_callbacks), handle_signals)


def start_from(network, init: dict) -> dict:
    """Load the weights ``init`` (``{path, checkpoint}``) names into ``network``, layer by
    layer (``cnncli.transfer``): ``{"rows": per layer, "record": what config.yaml keeps}``."""
    from cnncli.transfer import load_matching, open_source

    spec = init["path"] + (f":{init['checkpoint']}" if init.get("checkpoint") else "")
    source = open_source(spec)
    rows = load_matching(network, source)
    origin = source.checkpoint.parent.parent if source.types is not None else source.checkpoint  # run or file
    record = {"path": str(origin.resolve()), "checkpoint": init.get("checkpoint")
              or ("best" if source.types is not None else None), "epoch": source.epoch,
              "loaded": [r["layer"] for r in rows if r["loaded"]],
              "kept": [r["layer"] for r in rows if not r["loaded"] and r["why"] != "no parameters"]}
    return {"rows": rows, "record": record}


#: What a resume may change (``--set``): keys that change neither the network nor the data.
RESUME_KEYS = ("train.epochs", "optimizer.lr", "optimizer.schedule", "train.early_stopping",
               "train.checkpoint_every", "train.dynamics", "train.report")


def changed_keys(before: dict, after: dict) -> dict[str, tuple]:
    """Dotted key -> (before, after) for every resolved value that differs."""
    a, b = flat_values(before), flat_values(after)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if json.dumps(a.get(k)) != json.dumps(b.get(k))}


def flat_values(obj, prefix: str = "") -> dict:
    """Nested values as ``{"optimizer.lr": 0.01, "model.layers[0].filters": 8}``."""
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flat_values(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, list) and obj and all(isinstance(v, dict) for v in obj):
        for i, v in enumerate(obj):
            out.update(flat_values(v, f"{prefix}[{i}]"))
    else:
        out[prefix] = obj
    return out


def resume(run_dir: str | Path, *, overrides=(), callbacks: tuple[Callback, ...] = (), on_ready=None,
           handle_signals: bool = True, on_notice=None, on_fetch=None, on_warning=None) -> Run:
    """Continue a run from ``checkpoints/last.npz``: an interrupted (or failed, or killed)
    one, or a completed one given more ``train.epochs``.

    Same data order, generator states, optimizer state and schedule: without
    ``overrides`` the finished run is identical, bit for bit, to one that was never
    interrupted. ``overrides`` (``--set``) may change only :data:`RESUME_KEYS`; the run's
    config.yaml records them under ``history`` with the epoch they took effect, and
    ``on_notice`` says once that the run takes a new trajectory from there (or, for
    ``train.epochs`` alone, how far it now goes). Plugins run from the run folder's
    copies; ``on_notice(line)`` also hears of originals edited since. A run tracked in
    MLflow continues its MLflow run (its tracking.json); ``on_warning`` as in :func:`train`.
    """
    run_dir = runs.resolve_run_dir(run_dir)
    status = runs.read_status(run_dir)
    recorded = load_config(run_dir / "config.yaml", check_paths=True)
    config = load_config(recorded, overrides, check_paths=True) if overrides else recorded
    changed = {k: v for k, v in changed_keys(recorded.values, config.values).items() if not k.startswith("history")}
    for key in changed:
        if not any(key == allowed or key.startswith(allowed + ".") for allowed in RESUME_KEYS):
            raise ConfigError(key, "", None, raw=f"--set {key}: a resume cannot change it (it changes the network "
                                                 "or the data); it may change " + ", ".join(RESUME_KEYS))
    for line in plugins.changed_originals(config["plugins"], run_dir):
        if on_notice is not None:
            on_notice(line)
    if status.get("status") == "completed":
        done = runs.epochs_completed(status)
        if status.get("stopped_early") and not any(k.startswith("train.early_stopping") for k in changed):
            raise RunFolderError(f"{run_dir}: the run stopped early at epoch {done}; continue it with --set "
                                 "train.early_stopping=null (or a larger train.early_stopping.patience)")
        if not status.get("stopped_early") and config["train"]["epochs"] <= done:
            raise RunFolderError(f"{run_dir}: the run has completed its {done} epochs; continue it with --set "
                                 f"train.epochs={2 * done} (any number above {done})")
    config, built, data = prepare(config, (), run_dir.parent, on_fetch)
    network, loss, optimizer = built
    last = run_dir / "checkpoints" / "last.npz"
    if not last.is_file():
        raise CheckpointError(f"{last}: no checkpoint to resume from; the run stopped before its first one "
                              "(train it again)")
    params, optim_state, meta = runs.load_checkpoint(last)
    try:
        network.load_state_dict(params)
        optimizer.load_state_dict(optim_state, network.trainable_parameters())
    except CheckpointError as err:
        raise CheckpointError(f"{last}: {err}") from None
    shuffle_rng = seeded_rng(config["seed"], SHUFFLE_STREAM)
    try:
        shuffle_rng.bit_generator.state = meta["shuffle_rng"]
        for i, state in meta.get("layer_rngs", {}).items():
            network.layers[int(i)].rng.bit_generator.state = state
        train_state = TrainState.from_dict(meta["train_state"])
        resumed_from = meta["step"]
        if meta.get("schedule_state") and not any(k.startswith("optimizer.schedule") for k in changed):
            optimizer.schedule.load_state_dict(meta["schedule_state"])
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
        raise CheckpointError(f"{last}: its meta data does not hold a training state to resume from "
                              f"({type(err).__name__}: {err})") from None
    # best.npz is checked now, not when (or if) the best weights are restored at the end.
    writer_best = run_dir / "checkpoints" / "best.npz"
    best_state = runs.load_checkpoint(writer_best)[0] if writer_best.is_file() else None
    if best_state is not None:
        try:
            network.check_state(best_state)
        except CheckpointError as err:
            raise CheckpointError(f"{writer_best}: {err}") from None
    # MLflow tracking (cnncli.tracking): a store it cannot use is refused before the folder changes.
    tracker = tracking.connect(config.get("tracking"), source=str(run_dir / "config.yaml"), on_warning=on_warning)
    if changed:
        history = list(config.values.get("history") or [])
        history.append({"epoch": train_state.epoch, "step": optimizer.t,
                        "set": {k: {"from": a, "to": b} for k, (a, b) in changed.items()}})
        config.values = {**config.values, "history": history}
        runs.atomic_write_text(run_dir / "config.yaml", yamlfiles.dump(config.values))
        if on_notice is not None:
            what = ", ".join(f"{k} {json.dumps(a)} -> {json.dumps(b)}" for k, (a, b) in changed.items())
            if set(changed) == {"train.epochs"}:
                on_notice(f"continuing to epoch {config['train']['epochs']} ({what}); the epochs done stay as "
                          "they were")
            else:
                on_notice(f"resuming after epoch {train_state.epoch} (step {optimizer.t}) with {what}: from "
                          "here the run takes a new trajectory (a run with these settings from the start would "
                          "differ); config.yaml records it under history")
    for line in schedule_notes(optimizer, config.values, len(data.train)) if on_notice is not None else ():
        on_notice(line)
    runs.write_status(run_dir, "running", epochs_completed=train_state.epoch, step=optimizer.t,
                      resumed_from=resumed_from)
    if on_ready is not None:
        on_ready(run_dir, config, network, data)
    run = Run(run_dir, config)
    # MLflow tracking: the same MLflow run goes on, given first any finished epoch it missed.
    with tracking.tracked(tracker, run_dir, flat_values(config.values), train_state.history) as tracker_callbacks:
        return _run_fit(run, network, loss, optimizer, data, shuffle_rng, train_state,
                        (*callbacks, *tracker_callbacks), handle_signals, best_state=best_state)


def _run_fit(run: Run, network, loss, optimizer, data: Dataset, shuffle_rng, state: TrainState,
             callbacks, handle_signals: bool, best_state=None) -> Run:
    values = run.config.values
    run_dir = run.path
    from cnncli.data.augment import Augmenter

    augment = Augmenter.from_config(values["data"]["augment"], values["model"]["input_shape"])
    # What picks the best epoch (fit's own rule): every status written below names it.
    monitor = monitored_metric(values["train"]["early_stopping"], data.validation is not None and len(data.validation) > 0)
    writer = RunWriter(run_dir, network, optimizer, values, shuffle_rng, state.history, monitor)
    writer.best_state = best_state
    guard = graceful_interrupts() if handle_signals else contextlib.nullcontext(lambda: False)
    try:
        with guard as should_stop:
            result = fit(network, loss, optimizer, data.train, data.validation, epochs=values["train"]["epochs"],
                         batch_size=values["train"]["batch_size"], shuffle=values["train"]["shuffle"],
                         rng=shuffle_rng, early_stopping=values["train"]["early_stopping"],
                         callbacks=(writer, *callbacks), eval_batch_size=values["eval"]["batch_size"],
                         on_nan=values["train"].get("on_nan", "stop"), state=state, should_stop=should_stop,
                         augment=augment, augment_seed=seeded_rng(values["seed"], AUGMENT_STREAM).integers(2**63),
                         class_weights=None if data.info["class_weights"] is None
                         else np.asarray(data.info["class_weights"]),
                         dynamics=DynamicsSchedule.from_config(values["train"]["dynamics"]))
    except TrialPruned as pruned:  # a sweep's pruner stopped it: what it finished stays
        runs.write_status(run_dir, "pruned", epochs_completed=len(runs.read_metrics(run_dir)), step=optimizer.t,
                          checkpoint=writer.last_saved, reason=str(pruned), **best_so_far(state, monitor))
        raise
    except KeyboardInterrupt:
        saved = writer.last_saved or {}
        runs.write_status(run_dir, "interrupted", **runs.epoch_fields(state.epoch, state.batch), step=optimizer.t,
                          checkpoint=saved or None, **best_so_far(state, monitor),
                          reason="stopped at once by a second interrupt; resume continues from the last "
                                 "checkpoint")
        raise
    except BaseException as err:
        runs.write_status(run_dir, "failed", **runs.epoch_fields(state.epoch, state.batch), step=optimizer.t,
                          checkpoint=writer.last_saved, reason=f"{type(err).__name__}: {err}",
                          **best_so_far(state, monitor))
        raise
    run.result = result
    if result.interrupted:
        run.status = "interrupted"
        runs.write_status(run_dir, "interrupted", **runs.epoch_fields(state.epoch, state.batch), step=optimizer.t,
                          checkpoint=writer.last_saved, **best_so_far(state, monitor),
                          reason="interrupted; the checkpoint holds every finished step")
        return run
    try:  # the end of a run (best weights, evaluation, curves) can fail or be interrupted too
        # The run's own evaluation uses the weights eval.checkpoint names, as cnncli eval does.
        which = values["eval"]["checkpoint"]
        evaluated_epoch = result.history[-1].epoch if result.history else 0
        if which == "best" and writer.best_state is not None:
            network.load_state_dict(writer.best_state)
            evaluated_epoch = result.best_epoch
        elif which == "best":
            which = "last"  # no epoch was ever the best (every monitored value NaN): the final weights
        evaluation = data.evaluation
        if evaluation is not None:
            run.evaluation = evaluation_report(network, loss, evaluation, data.class_names,
                                               values["eval"]["batch_size"])
            run.evaluation.update(checkpoint=which, epoch=evaluated_epoch, data=data.evaluation_name)
            runs.write_json(run_dir / "eval.json", run.evaluation)
        write_curves(run_dir, values["optimizer"])
        best = result.best
        last_epoch = result.history[-1].epoch if result.history else 0
        runs.write_status(run_dir, "completed", epochs_completed=last_epoch, step=optimizer.t,
                          stopped_early=result.stopped_early, best_epoch=result.best_epoch, monitor=result.monitor,
                          best=best.as_dict() if best else None)
    except KeyboardInterrupt:
        runs.write_status(run_dir, "interrupted", **runs.epoch_fields(state.epoch, state.batch), step=optimizer.t,
                          checkpoint=writer.last_saved, **best_so_far(state, monitor),
                          reason="stopped at once after the last epoch; resume finishes the run")
        raise
    except BaseException as err:
        runs.write_status(run_dir, "failed", **runs.epoch_fields(state.epoch, state.batch), step=optimizer.t,
                          checkpoint=writer.last_saved, **best_so_far(state, monitor),
                          reason=f"{type(err).__name__}: {err}")
        raise
    run.status = "completed"
    return run


def evaluation_report(network, loss, split: Split, class_names: list[str], batch_size: int = 256) -> dict:
    """Loss, accuracy, confusion matrix, per-class precision, recall and F1 and their
    macro and weighted averages, top-k accuracy (more than two classes), ROC AUC and
    curve (two classes) on ``split``."""
    return evaluate_split(network, loss, split, class_names, batch_size)[0]


def evaluate_split(network, loss, split: Split, class_names: list[str], batch_size: int = 256):
    """(:func:`evaluation_report`, the outputs (N, ...)): the outputs draw the pictures."""
    value, acc, outputs = evaluate(network, loss, split, batch_size)
    pred = predicted_classes(outputs)
    matrix = confusion_matrix(split.y, pred, len(class_names))
    report = {"examples": len(split), "loss": value, "accuracy": acc, "class_names": class_names,
              "confusion_matrix": matrix.tolist(), **per_class_scores(matrix),
              **classification_scores(split.y, class_probabilities(outputs), matrix)}
    return report, outputs


#: The pictures ``cnncli eval`` writes beside eval.json.
EVAL_PICTURES = ("confusion.png", "roc.png", "misclassified.png")


def evaluation_pictures(out_dir: Path, report: dict, split: Split, outputs: np.ndarray, normalization: dict,
                        title: str, split_name: str = "validation") -> list[Path]:
    """confusion.png; roc.png for two classes; misclassified.png for image data (the most
    confident mistakes first, at most 16). Pictures of an earlier evaluation that do not
    apply to this one are removed, so the folder never mixes two evaluations."""
    from cnncli.evaluation_pictures import confusion_png, misclassified_png, roc_png

    names = report["class_names"]
    written = [confusion_png(np.asarray(report["confusion_matrix"]), names, out_dir / "confusion.png",
                             f"{title}: confusion matrix")]
    if report.get("roc_curve"):
        curve = report["roc_curve"]
        written.append(roc_png(np.asarray(curve["fpr"]), np.asarray(curve["tpr"]), report["roc_auc"],
                               out_dir / "roc.png", f"ROC, {names[1] if len(names) > 1 else 'class 1'} positive ({split_name})"))
    x = split.x
    if x.ndim == 4 and x.shape[-1] in (1, 3):
        probabilities = class_probabilities(outputs)
        predicted = probabilities.argmax(axis=1)
        wrong = np.flatnonzero(predicted != split.y)
        confidence = probabilities[wrong, predicted[wrong]]
        pick = wrong[np.argsort(-confidence, kind="stable")][:16]
        written.append(misclassified_png(np.clip(undo_normalization(x[pick], normalization), 0, 1), split.y[pick],
                                         predicted[pick], probabilities[pick, predicted[pick]], names,
                                         out_dir / "misclassified.png",
                                         f"{title}: {len(wrong)} misclassified of {len(split)}"))
    for name in EVAL_PICTURES:
        if out_dir / name not in written:
            (out_dir / name).unlink(missing_ok=True)
    return written


def best_so_far(state: TrainState, monitor: str) -> dict:
    """The status fields that say which epoch is best so far, and by what."""
    return {"best_epoch": state.best_epoch, "monitor": monitor}


def write_curves(run_dir: Path, optimizer: dict, path: Path | None = None) -> Path | None:
    """``path`` (default RUN_DIR/curves.png): the run's loss and accuracy against epoch,
    training and validation, the run and its optimizer in the title and its best epoch
    (:func:`runs.best_epoch`, the epoch training chose) marked; None before any epoch."""
    history = runs.read_metrics(run_dir)
    if not history:
        return None
    monitor, best = runs.best_epoch(run_dir, history)
    return curves_png(history, path or run_dir / "curves.png", run_name=run_dir.name,
                      optimizer=optimizer_label(optimizer), best_epoch=best["epoch"] if best else None,
                      monitor=monitor)


# ------------------------------------------------------------------------ using a run
def run_checkpoint(run_dir: str | Path, which: str | None = None) -> str:
    """``which`` (checked), or the run's own ``eval.checkpoint`` from its config.yaml
    (``best`` when it names none): the checkpoint every command uses unless told."""
    if which is not None:
        return runs.checkpoint_name(which)
    try:
        named = (yamlfiles.read(Path(run_dir) / "config.yaml").get("eval") or {}).get("checkpoint")
    except Exception:  # an unreadable config is reported by whoever loads it next
        named = None
    return named if named in runs.CHECKPOINTS else "best"


def load_run(run_dir: str | Path, checkpoint: str | None = None):
    """(config, network with the checkpoint's weights, loss, data.json contents, the
    checkpoint's meta) of a run; ``checkpoint`` None: the run's ``eval.checkpoint``."""
    run_dir = Path(run_dir)
    path = runs.checkpoint_file(run_dir, run_checkpoint(run_dir, checkpoint))
    config = load_config(run_dir / "config.yaml", check_paths=False)
    built = build(config)
    params, _, meta = runs.load_checkpoint(path)
    try:
        built.network.load_state_dict(params)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    info = json.loads((run_dir / "data.json").read_text()) if (run_dir / "data.json").is_file() else {}
    return config, built.network, built.loss, info, meta


def read_run_dynamics(run_dir: Path) -> list[dict]:
    """The rows of a run's ``dynamics.jsonl``; a run without any is refused in one line."""
    rows = runs.read_dynamics(run_dir)
    if rows:
        return rows
    if not (run_dir / "dynamics.jsonl").is_file():
        raise RunFolderError(f"{run_dir}: no dynamics.jsonl: the run was made before cnncli recorded training "
                             "dynamics, or with train.dynamics: false")
    raise RunFolderError(f"{run_dir}: dynamics.jsonl holds no record yet (the first is written at the end of "
                         "the first epoch, or after train.dynamics.every steps)")


#: The splits ``cnncli eval --split`` can score.
EVAL_SPLITS = ("test", "validation", "train")


def evaluation_file(checkpoint: str, data_path: str | None = None, split: str | None = None) -> str:
    """``eval-best.json``, ``eval-last.json``, ``eval-best-<data>.json``,
    ``eval-best-<split>.json``: what ``cnncli eval`` writes, beside (never over) the
    ``eval.json`` of the run's own evaluation."""
    suffix = f"-{runs.sanitize_name(Path(data_path).name)}" if data_path else (f"-{split}" if split else "")
    return f"eval-{checkpoint}{suffix}.json"


def evaluate_run(run_dir: str | Path, *, checkpoint: str | None = None, data_path: str | None = None,
                 split: str | None = None, pictures: bool = True) -> dict:
    """Evaluate a run's checkpoint (None: its ``eval.checkpoint``) on its evaluation data:
    the test split when the run has one (``data.test_path``, IDX's t10k files), else the
    validation split; or on ``split`` (test, validation or train, as training split the
    data), or on ``data_path``. Writes :func:`evaluation_file` and (``pictures``)
    confusion.png, roc.png and misclassified.png beside it; the report's ``data`` names
    the split, ``pictures`` lists the pictures written and ``file`` the JSON's name.
    Nothing is printed (``cnncli eval`` prints the report)."""
    if split is not None and split not in EVAL_SPLITS:
        raise DataError(f"--split: expected {', '.join(EVAL_SPLITS)}; got {split!r}")
    if split is not None and data_path is not None:
        raise DataError("give --split or --data-path, not both (--data-path scores all of the data it names)")
    run_dir = Path(run_dir)
    checkpoint = run_checkpoint(run_dir, checkpoint)
    config, network, loss, info, meta = load_run(run_dir, checkpoint)
    values = json.loads(json.dumps(config.values))
    if data_path is not None:
        if not Path(data_path).exists():
            raise DataError(f"{data_path}: does not exist")
        if values["data"]["source"] == "synthetic":
            raise DataError("--data-path needs a run whose data source reads files (image_folder, npz, idx)")
        values["data"]["path"] = data_path
        values["data"]["test_path"] = None
        values["train"]["validation_split"] = 0.0
        if values["data"]["source"] == "idx":
            values["data"]["use_test"] = False
    outputs = int(np.prod(network.output_shape))
    if data_path is not None:
        # The new data gets the run's own normalization, not statistics of its own.
        values["data"]["normalize"] = "none"
        data = load_dataset(values, cache_dir=run_dir.parent / ".cache", outputs=outputs)
        split = Split(apply_normalization(data.train.x, normalization_of(info), network.dtype.type),
                      data.train.y)
        which = data_path
    else:
        # The same config and seed give the same split and statistics as in training.
        data = load_dataset(values, cache_dir=run_dir.parent / ".cache", outputs=outputs)
        which = split or data.evaluation_name
        split = {"test": data.test, "validation": data.validation, "train": data.train}[which]
        if split is None or not len(split):
            if which == "test":
                raise DataError(f"{run_dir}: this run has no test split (data.test_path, or IDX's t10k files); "
                                "use --split validation or --data-path")
            raise DataError(f"{run_dir}: this run has no {which} split; pass --data-path")
    names = info.get("class_names", data.class_names)
    report, outputs = evaluate_split(network, loss, split, names, values["eval"]["batch_size"])
    report.update(checkpoint=checkpoint, epoch=meta.get("epoch"), data=which)
    if pictures:
        written = evaluation_pictures(run_dir, report, split, outputs, normalization_of(info),
                                      f"{run_dir.name} ({checkpoint}, {which})", Path(which).name)
        report["pictures"] = [p.name for p in written]
    report["file"] = evaluation_file(checkpoint, data_path, which if data_path is None and
                                     which != data.evaluation_name else None)
    runs.write_json(run_dir / report["file"], report)
    return report


def image_files(paths: list[str | Path]) -> list[Path]:
    """The files ``predict`` reads: each path as given; a folder's files (and its
    subfolders', sorted; hidden ones left out); a glob pattern's matches (``*.png``,
    ``shots/**/*.jpg``) when no file has that name. A path that names nothing, a pattern
    that matches nothing and a folder with no image file are refused in one line."""
    import glob

    from cnncli.data.image_folder import EXTENSIONS

    files: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file()
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not any(p.suffix.lower() in EXTENSIONS for p in found):
                raise DataError(f"{path}: a folder with no image file ({', '.join(EXTENSIONS)})")
            files += found
        elif path.exists():
            files.append(path)
        elif glob.has_magic(str(given)):
            matches = sorted(Path(m) for m in glob.glob(str(given), recursive=True) if Path(m).is_file())
            if not matches:
                raise DataError(f"{given}: the pattern matches no file")
            files += matches
        else:
            raise DataError(f"{given}: no such file")
    return files


@dataclass
class Predictions:
    """What :func:`predict` found: one row per image read, and the files it skipped."""

    rows: list[dict]
    class_names: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why)
    animated: list[str] = field(default_factory=list)  # files read as their first frame

    def __iter__(self):  # the rows, as a list of predictions reads
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)


def image_input(config: Config, refusal: str) -> tuple[tuple[int, int, int], int]:
    """(input shape (H, W, C), pixel limit) for reading image files into a run's model;
    ``refusal`` starts the one-line error for a model whose input is not an image. A run
    whose data were not image files (npz, idx) reads them under the default limit."""
    from cnncli.data.images import DEFAULT_MAX_IMAGE_PIXELS

    shape = tuple(config["model"]["input_shape"])
    if len(shape) != 3 or shape[2] not in (1, 3):
        raise DataError(f"{refusal}; this model's input_shape is {list(shape)}")
    return shape, config["data"].get("max_image_pixels", DEFAULT_MAX_IMAGE_PIXELS)


def predict(run_dir: str | Path, images: list[str | Path], *, checkpoint: str | None = None,
            strict: bool = False) -> Predictions:
    """Class and probabilities of each image file (folders and glob patterns expanded by
    :func:`image_files`), with the run's preprocessing, in batches of ``eval.batch_size``.

    A file that is not a readable image, or that the image policy refuses (an image
    larger than the run's ``data.max_image_pixels``: see :mod:`cnncli.data.images`), is
    skipped and listed in ``skipped``; with ``strict`` it is refused in one line instead.
    """
    from cnncli.data.images import BadImageError, load_image

    config, network, loss, info, _ = load_run(run_dir, checkpoint)
    shape, max_pixels = image_input(config, "predict reads image files")
    normalization = normalization_of(info)
    files = image_files(images)
    names = list(info.get("class_names") or [])
    result = Predictions([], names)
    batch = config["eval"]["batch_size"]
    for start in range(0, len(files), batch):
        arrays, read = [], []
        for path in files[start:start + batch]:
            try:
                arrays.append(load_image(path, *shape, max_pixels=max_pixels, animated=result.animated))
                read.append(path)
            except BadImageError as err:
                if strict:
                    raise
                result.skipped.append((str(path), err.reason))
        if not arrays:
            continue
        x = apply_normalization(np.stack(arrays), normalization, network.dtype.type)  # (B, H, W, C)
        probs = class_probabilities(network.predict(x, loss=loss))  # (B, K)
        for path, p in zip(read, probs):
            k = int(np.argmax(p))
            result.rows.append({"image": str(path), "class": names[k] if k < len(names) else str(k), "index": k,
                                "probability": float(p[k]), "probabilities": [float(v) for v in p]})
    if not result.class_names and result.rows:
        result.class_names = [str(i) for i in range(len(result.rows[0]["probabilities"]))]
    if not result.rows:
        path, why = result.skipped[0]
        others = f"; nor are the other {len(files) - 1} files given" if len(files) > 1 else ""
        raise DataError(f"{path}: not a readable image ({why}){others}")
    return result


def predictions_csv(predictions: Predictions) -> str:
    """``path,class,probability`` and one probability column per class, a row per image."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "class", "probability", *predictions.class_names])
    for row in predictions.rows:
        writer.writerow([row["image"], row["class"], f"{row['probability']:.6g}",
                         *(f"{v:.6g}" for v in row["probabilities"])])
    return buf.getvalue()


def gradcheck_batch(config: Config, network, loss, batch: int, seed: int, cache_dir: Path,
                    random_inputs: bool = False):
    """(x, targets, where they came from) for ``cnncli gradcheck``: ``batch`` examples of
    the config's data; or random inputs, when ``random_inputs`` asks for them (the data is
    then not read at all) or when the data cannot be read (the third value says why)."""
    from cnncli.training import targets_for

    rng = np.random.default_rng(seed)
    data_source = config["data"]["source"]
    if not random_inputs:
        try:
            data = load_dataset({**config.values, "train": {**config["train"], "validation_split": 0.0}},
                                cache_dir=cache_dir, outputs=int(np.prod(network.output_shape)))
            pick = rng.choice(len(data.train), size=min(batch, len(data.train)), replace=False)
            where = f" at {config['data']['path']}" if config["data"].get("path") else ""
            source = f"{len(pick)} examples of the configured data ({data_source}{where}), drawn with seed {seed}"
            return data.train.x[pick], targets_for(network, data.train.y[pick], loss), source
        except DataError as err:
            why = f"the {data_source} data could not be read: {err}"
    x = rng.random((batch, *network.input_shape))
    labels = rng.integers(0, max(int(np.prod(network.output_shape)), 2), batch)
    what = f"random ({batch} inputs uniform in [0, 1) and random labels, seed {seed})"
    return x, targets_for(network, labels, loss), (f"{what}, as asked" if random_inputs else f"{what}: {why}")


def visualize_run(run_dir: Path, out: Path, *, image: Path | None = None, checkpoint: str | None = None,
                  kernels: str = "change", on_note=None):
    """``cnncli visualize``: kernels.png, feature_maps_layer<i>.png and curves.png in ``out``;
    returns (files written, warnings). ``kernels``: ``change`` (W - W0, the start rebuilt
    from the config and its seed, as ``train`` built it) or ``weights``. ``on_note(line)``
    hears which example the feature maps show."""
    from cnncli.data.augment import Augmenter
    from cnncli.data.images import animated_note, load_image
    from cnncli.errors import InputError
    from cnncli.visualize import KERNEL_VIEWS, Example, augmented_png, feature_maps_png, kernels_png

    if kernels not in KERNEL_VIEWS:
        raise InputError(f"kernels: expected {' or '.join(KERNEL_VIEWS)}; got {kernels!r}")
    cfg, network, loss, info, _ = load_run(run_dir, checkpoint)
    written, warnings = [], []
    raw = None
    if image is not None:  # read, or refused in one line naming it, before anything is written
        shape, max_pixels = image_input(cfg, f"{image}: --image needs a model that reads images")
        animated: list[str] = []
        raw = load_image(image, *shape, max_pixels=max_pixels, animated=animated)
        if animated:
            warnings.append(animated_note(animated))
    out.mkdir(parents=True, exist_ok=True)
    start = None
    if kernels == "change":
        # The network as train built it before its first step: the config's seed builds the
        # same weights again, and init_from loads its source again (unless it is gone or changed).
        start = build(cfg).network
        init = cfg.values.get("init_from")
        if init:
            try:
                now = f"epoch {start_from(start, init)['record'].get('epoch')}"
            except (InputError, OSError) as err:
                now = f"nothing readable ({err})"
            if now != f"epoch {init.get('epoch')}":
                warnings.append(f"the run started from epoch {init.get('epoch')} of {init.get('path')}, which now "
                                f"holds {now}; kernels.png shows the weights, not their change")
                start = None
    try:
        written.append(kernels_png(network, out / "kernels.png", initial=start))
    except ValueError as err:
        warnings.append(f"{err}; no kernel picture")
    names = list(info.get("class_names") or [])
    if raw is not None:
        x = apply_normalization(raw[None], normalization_of(info), network.dtype.type)[0]
        data = None
        normalization, source, label = normalization_of(info), str(image), None
    else:
        data = load_dataset(cfg.values, cache_dir=run_dir.parent / ".cache")
        split_name, split = next((n, s) for n, s in (("test", data.test), ("validation", data.validation),
                                                     ("training", data.train)) if s is not None and len(s))
        normalization = data.normalization
        x, source, label = split.x[0], f"{split_name} example 0", int(split.y[0])
    probabilities = class_probabilities(network.predict(x[None], loss=loss))[0]
    guess = int(np.argmax(probabilities))
    example = Example(np.clip(undo_normalization(x[None], normalization)[0], 0, 1), source,
                      None if label is None else (names[label] if label < len(names) else str(label)),
                      names[guess] if guess < len(names) else str(guess), float(probabilities[guess]))
    if on_note is not None:
        on_note(f"feature maps of {example.describe(', ')}" + ("; --image FILE shows another" if image is None else ""))
    written += feature_maps_png(network, x, out, example)
    augment = Augmenter.from_config(cfg["data"]["augment"], cfg["model"]["input_shape"])
    if augment.enabled:  # what the network sees while it trains
        data = data or load_dataset(cfg.values, cache_dir=run_dir.parent / ".cache")
        examples = data.train.x[:6]
        rng = np.random.default_rng(0)
        variants = [undo_normalization(augment(examples, rng), data.normalization) for _ in range(4)]
        written.append(augmented_png(undo_normalization(examples, data.normalization), variants,
                                     out / "augmented.png"))
    curves = write_curves(run_dir, cfg["optimizer"], out / "curves.png")
    if curves is not None:
        written.append(curves)
    return written, warnings
