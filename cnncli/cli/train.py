"""``cnncli train``: a config into a new run folder, or ``--resume`` a run folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cnncli import tracking
from cnncli.cli.common import SET, console, err_console, say, user_errors, warn
from cnncli.cli.data import announce_fetch
from cnncli.cli.inspect import summary_table
from cnncli.errors import CnnCliError
from cnncli.training import Callback
from cnncli.transfer import parse_spec


class ProgressDisplay(Callback):
    """A rich progress bar per epoch with loss, accuracy and images/s; one line per
    epoch when the output is not a terminal."""

    def __init__(self) -> None:
        self.progress: Progress | None = None
        self.task = None
        self.epochs = 0
        self.steps = 0

    def on_train_start(self, epochs, steps_per_epoch, state):
        self.epochs, self.steps = epochs, steps_per_epoch

    def on_epoch_start(self, epoch):
        if not console.is_terminal:  # piped or captured: the per-epoch lines only
            self.progress = None
            return
        self.progress = Progress(
            TextColumn(f"epoch {epoch:>{len(str(self.epochs))}}/{self.epochs}"), BarColumn(bar_width=30),
            MofNCompleteColumn(), TextColumn("{task.fields[stats]}"), TimeElapsedColumn(),
            console=console, transient=True)
        self.progress.start()
        self.task = self.progress.add_task("train", total=self.steps, stats="")

    def on_batch_end(self, epoch, batch, loss, accuracy, images_per_second):
        if self.progress is not None:
            self.progress.update(self.task, completed=batch,
                                 stats=f"loss {loss:.4f}  acc {accuracy:.3f}  {images_per_second:,.0f} img/s")

    def on_interrupt(self, state):
        self._stop()

    def on_epoch_end(self, m, improved, state):
        self._stop()
        val = f"  val_loss {m.val_loss:.4f}  val_acc {m.val_accuracy:.3f}" if m.val_loss is not None else ""
        mark = " [green]*[/]" if improved else ""
        console.print(f"epoch {m.epoch:>{len(str(self.epochs))}}/{self.epochs}  loss {m.loss:.4f}  "
                      f"acc {m.accuracy:.3f}{val}  {m.seconds:.1f}s  {m.images_per_second:,.0f} img/s{mark}",
                      highlight=False, soft_wrap=True)

    def on_train_end(self, result):
        self._stop()

    def _stop(self):
        if self.progress is not None:
            self.progress.stop()


def plural(count: int, noun: str) -> str:
    """``1 epoch``, ``2 epochs``."""
    return f"{count} {noun}" + ("" if count == 1 else "s")


def print_data_warnings(run_dir, cfg, network, data) -> None:
    """What the data reading left out or read only in part (printed with --quiet too)."""
    info = data.info
    for f in info.get("skipped", [])[:10]:
        warn(f"skipped unreadable image {f}")
    if info.get("animated"):
        from cnncli.data.images import animated_note

        warn(animated_note(info["animated"]))


def print_ready(run_dir, cfg, network, data) -> None:
    """What a run is about to do: the parameter table, the data, the settings."""
    from cnncli.summary import summarize

    console.print(summary_table(summarize(network), flops=False))
    info = data.info
    extra = f", {len(info['skipped'])} unreadable skipped" if info.get("skipped") else ""
    cached = " (from cache)" if info.get("cached") else ""
    say(f"data: {cfg['data']['source']}{cached}, classes {', '.join(data.class_names)}; train {info['train']}, "
        f"validation {info['validation']}, test {info['test']}{extra}")
    print_data_warnings(run_dir, cfg, network, data)
    if cfg["plugins"]:
        say("plugins: " + ", ".join(p.get("origin", p["file"]) for p in cfg["plugins"]))
    opt = cfg["optimizer"]
    say(f"seed {cfg['seed']}; loss {cfg['loss']['name']} ({cfg['loss']['reduction']}); optimizer {opt['name']} "
        f"lr {opt['lr']:g}; {plural(cfg['train']['epochs'], 'epoch')} of batch {cfg['train']['batch_size']}; "
        f"run folder {run_dir}")


def print_init(rows: list[dict], record: dict) -> None:
    """What --init-from loaded, layer by layer, and what kept its initialization."""
    from cnncli.cli.common import table

    title = f"weights from {record['path']}" + (f" ({record['checkpoint']}, epoch {record['epoch']})"
                                                if record.get("checkpoint") else "")
    say(title)
    console.print(table("", [("#", "right"), ("layer", "left"), ("", "left"), ("", "left")],
                        [[str(r["layer"]), r["label"], "loaded" if r["loaded"] else
                          ("-" if r["why"] == "no parameters" else "initialized"), r["why"]] for r in rows]))


def print_outcome(run) -> None:
    """How a run ended: interrupted (exit 130, with how to go on), or its best epoch."""
    if run.status == "interrupted":
        from cnncli.runs import read_status

        status = read_status(run.path)
        where = (f"in epoch {status['current_epoch']} after batch {status.get('batch')}" if "current_epoch" in status
                 else f"after epoch {status.get('epochs_completed', 0)}")
        say(f"interrupted {where} (step {status.get('step')}); checkpoint written to "
            f"{run.path / 'checkpoints' / 'last.npz'}\n"
            f"resume with: cnncli train --resume {run.path}", error=True)
        raise typer.Exit(130)
    best = run.best
    if best is not None:
        val = (f"val_loss {best.val_loss:.4f}, val_accuracy {best.val_accuracy:.4f}" if best.val_loss is not None
               else f"loss {best.loss:.4f}, accuracy {best.accuracy:.4f}")
        say(f"best epoch {best.epoch} ({run.result.monitor}): {val}")
    if run.result.stopped_early:
        say(f"stopped early after epoch {run.history[-1].epoch}")
    say(f"run: {run.path}")
    logged = tracking.read_record(run.path)  # tracked in MLflow, and it kept working to the end
    if logged and logged.get("run_id") and not logged.get("stopped"):
        say(f"mlflow: run {logged['run_id']} in experiment '{logged['experiment']}' ({logged['uri']})")
    if run.config["train"]["report"]:
        from cnncli.report import run_report

        written, notes = run_report(run.path)
        for line in notes:
            say(f"note: {line}", error=True)
        say(f"report: {written}")
        tracking.log_files(run.path, [written], on_warning=warn)  # the MLflow run ended before the report


@user_errors
def train(
    config: Optional[Path] = typer.Argument(None, help="Experiment config (YAML).", dir_okay=False),
    set_: List[str] = SET,
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Where run folders are created."),
    name: Optional[str] = typer.Option(None, "--name", help="Run name (default: the config's name)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue a run folder: an interrupted one, or "
                                          "a completed one with --set train.epochs=MORE.", file_okay=False),
    init_from: Optional[str] = typer.Option(None, "--init-from", metavar="RUN_DIR[:best|last]|FILE.npz",
                                            help="Start from another run's weights, matched layer by layer."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No summary table or progress bars."),
    track: Optional[str] = typer.Option(None, "--track", metavar="mlflow",
                                        help="Log the run to MLflow too (tracking.mlflow, its defaults for what "
                                             "the config leaves out; the store: $CNNCLI_MLFLOW_URI, else "
                                             "$MLFLOW_TRACKING_URI, else sqlite:///mlflow.db). Needs pip install "
                                             "'cnncli[mlflow]'."),
) -> None:
    """Train CONFIG into a new run folder under runs/ (or continue one with --resume).

    Ctrl-C (or SIGTERM) stops after the current step and writes a checkpoint; a second
    Ctrl-C stops at once. `cnncli train --resume RUN_DIR` then continues exactly.
    """
    from cnncli import experiment

    if (config is None) == (resume is None):
        raise CnnCliError("train: give a CONFIG file, or --resume RUN_DIR (not both)")
    if resume is not None and (name or init_from):
        raise CnnCliError("train --resume continues a run in its own folder from its own weights: --name and "
                          "--init-from do not apply")
    if track is not None and track != "mlflow":
        raise CnnCliError(f"--track {track}: the tracker cnncli knows is mlflow")
    if track is not None and resume is not None:
        raise CnnCliError("train --resume logs where the run's config.yaml says (its tracking section): --track "
                          "applies to a new run")
    shown = {"on_ready": print_data_warnings if quiet else print_ready, "callbacks": () if quiet else (ProgressDisplay(),),
             "on_fetch": announce_fetch, "on_warning": warn}
    try:
        if resume is not None:
            run = experiment.resume(resume, overrides=set_, on_notice=lambda line: say(f"note: {line}", error=True),
                                    **shown)
        else:
            overrides = list(set_)
            if init_from is not None:  # relative to where the command runs, as any path given on the command line
                path, which = parse_spec(init_from)
                overrides.append(f"init_from={json.dumps(str(path.resolve()) + (f':{which}' if which else ''))}")
            if track == "mlflow":  # on, with the config's own tracking.mlflow keys kept
                overrides.append("tracking.mlflow.enabled=true")
            run = experiment.train(str(config), overrides=overrides, runs_dir=runs_dir, name=name,
                                   on_init=None if quiet else print_init,
                                   on_notice=lambda line: say(f"note: {line}", error=True), **shown)
    except KeyboardInterrupt:
        err_console.print("stopped at once: the last checkpoint and every finished epoch are kept "
                          "(status.json says interrupted); continue with cnncli train --resume RUN_DIR")
        raise typer.Exit(130) from None
    print_outcome(run)


def add_commands(app: typer.Typer) -> None:
    app.command()(train)
