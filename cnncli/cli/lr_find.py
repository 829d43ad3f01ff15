"""``cnncli lr-find``: the learning-rate range test of a config, and the rate it suggests."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import List, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cnncli.cli.common import SET, console, err_console, say, user_errors
from cnncli.cli.data import announce_fetch


class RangeTestProgress:
    """One rich progress bar over the test's steps, with the rate and the smoothed loss;
    nothing when the output is not a terminal."""

    def __init__(self) -> None:
        self.progress: Progress | None = None
        self.task = None

    def __enter__(self):
        return self

    def on_step(self, step: int, steps: int, lr: float, loss: float, smoothed: float) -> None:
        if self.progress is None:
            self.progress = Progress(TextColumn("lr-find"), BarColumn(bar_width=30), MofNCompleteColumn(),
                                     TextColumn("{task.fields[stats]}"), TimeElapsedColumn(),
                                     console=console, transient=True)
            self.progress.start()
            self.task = self.progress.add_task("lr-find", total=steps, stats="")
        self.progress.update(self.task, completed=step, stats=f"lr {lr:.1e}  smoothed loss {smoothed:.4f}")

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()


@user_errors
def lr_find(
    config: Path = typer.Argument(..., help="Experiment config (YAML).", dir_okay=False),
    start: float = typer.Option(1e-7, "--start", help="The first (lowest) learning rate."),
    end: float = typer.Option(10.0, "--end", help="The last (highest) learning rate."),
    steps: int = typer.Option(100, "--steps", help="Mini-batches (one update each) from --start to --end; "
                                                   "at least 20."),
    set_: List[str] = SET,
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Where the test's folder is created."),
    name: Optional[str] = typer.Option(None, "--name", help="Name of the folder (default: the config's name), "
                                                             "followed by -lr-find."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Find a learning rate for CONFIG: the range test of Smith (2017), as
    fastai and PyTorch Lightning run it.

    The rate grows exponentially from --start to --end, one mini-batch of a
    fresh network per rate; the test stops early when the smoothed loss
    exceeds 4x its lowest. The suggestion is the rate where the smoothed loss
    falls fastest. The weights are thrown away; the folder
    <runs-dir>/<time>-<name>-lr-find/ keeps config.yaml, lr_find.csv,
    lr_find.json and lr_find.png.
    """
    from cnncli import lr_find as range_test

    # Bad settings are refused before the config is read or anything written.
    range_test.check_settings(start, end, steps)
    display = RangeTestProgress() if not quiet and console.is_terminal else None
    try:
        with display or contextlib.nullcontext():
            result = range_test.find_lr(str(config), overrides=set_, runs_dir=runs_dir, name=name, start=start,
                                        end=end, steps=steps, on_notice=lambda line: say(f"note: {line}", error=True),
                                        on_fetch=announce_fetch, on_step=display.on_step if display else None)
    except KeyboardInterrupt:
        err_console.print("stopped: the range test was interrupted; nothing of it is kept but its folder's "
                          "status.json")
        raise typer.Exit(130) from None
    say(f"range test: {result.stopped}")
    say(result.rationale)
    if result.suggestion is not None:
        say(f"train with it: cnncli train {config} --set optimizer.lr={range_test.set_value(result.suggestion)}")
    say(f"wrote {result.path / 'lr_find.png'}")


def add_commands(app: typer.Typer) -> None:
    app.command("lr-find")(lr_find)
