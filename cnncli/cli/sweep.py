"""``cnncli sweep``: grid or random search over a config, in parallel, resumable."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cnncli.cli.common import SET, console, say, table, user_errors, warn
from cnncli.errors import CnnCliError


class SweepProgress:
    """A bar of finished trials, with how many run and failed; failures named as they come."""

    def __init__(self, total: int, done: int):
        self.counts = {"running": 0, "failed": 0, "done": done}
        self.progress = Progress(TextColumn("trials"), BarColumn(bar_width=30), MofNCompleteColumn(),
                                 TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), console=console)
        self.task = self.progress.add_task("sweep", total=total, completed=done, stats="")

    def __call__(self, event: str, index: int, record: dict | None) -> None:
        counts = self.counts
        if event == "requeued":
            self.progress.console.print(f"trial-{index:03d} was running when the sweep stopped: its values run again",
                                        highlight=False, markup=False)
            return
        if event == "started":
            counts["running"] += 1
        else:
            counts["running"] -= 1
            counts["done"] += 1
            if record["status"] == "pruned":
                counts["pruned"] = counts.get("pruned", 0) + 1
            if record["status"] == "failed":
                counts["failed"] += 1
                self.progress.console.print(f"trial-{index:03d} failed: {record.get('reason')}", highlight=False,
                                            style="red", markup=False)
        self.progress.update(self.task, completed=counts["done"],
                             stats=f"running {counts['running']}  pruned {counts.get('pruned', 0)}  "
                                   f"failed {counts['failed']}")


def open_or_create(target, grid, set_, name, metric, mode, runs_dir, resume):
    """The sweep to run: the one in ``resume``, or a new one (every trial validated first)."""
    from cnncli import sweep as sweeps

    if resume is not None:
        if target is not None or grid or set_:
            raise CnnCliError("sweep --resume continues a sweep as it was defined: no target, --grid or --set")
        return sweeps.Sweep.open(resume)
    if target is None:
        raise CnnCliError("sweep: give a config with --grid KEY=V1,V2, or a sweep file")
    spec = sweeps.make_spec(str(target), grid_options=grid, overrides=set_, name=name, metric=metric, mode=mode)
    sweeps.trial_configs(spec)  # every trial validated before the folder exists
    if spec.sampled:  # trials are sampled later: the base config (and its overrides) must hold now
        sweeps.trial_config(spec, {}, 0)
    return sweeps.Sweep.create(spec, runs_dir)


def print_dry_run(target, grid, set_, name, metric, mode, resume) -> None:
    """What a sweep would run: its search, each key's values or range, how many trials."""
    from cnncli import sweep as sweeps
    from cnncli.search import describe_space

    if resume is not None:
        spec = sweeps.Sweep.open(resume).spec
    elif target is None:
        raise CnnCliError("sweep --dry-run: give a config with --grid KEY=V1,V2, or a sweep file")
    else:
        spec = sweeps.make_spec(str(target), grid_options=grid, overrides=set_, name=name, metric=metric, mode=mode)
    for line in describe_space(spec):
        say(f"  {line}")
    if spec.sampled:
        pruner = (spec.pruner or {}).get("name", "none")
        say(f"search {spec.search}: {spec.n_trials} trials, sampled; pruner {pruner}; ranked by {spec.metric} "
            f"({spec.mode})")
    else:
        say(f"search {spec.search}: {len(spec.trials)} trials; ranked by {spec.metric} ({spec.mode})")


def print_leaderboard(sw) -> None:
    header, body = sw.leaderboard_rows()
    console.print(table(f"leaderboard ({sw.spec.metric}, {sw.spec.mode})",
                        [(c, "left" if c in ("trial", "status") else "right") for c in header], body))
    best = sw.best_trial()
    if best is not None:
        say(f"best: {sw.folder / sw.records[best]['path']}")
    say(f"results: {sw.folder / 'results.csv'}")


@user_errors
def sweep(
    target: Optional[Path] = typer.Argument(None, help="A config file (with --grid) or a sweep file."),
    grid: List[str] = typer.Option([], "--grid", "-g", metavar="KEY=V1,V2",
                                   help="Values for one key (YAML, comma-separated). Repeatable: a cartesian grid."),
    set_: List[str] = SET,
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", min=1,
                                       help="Trials run in parallel (worker processes; default: the sweep "
                                            "file's jobs, or 1)."),
    name: Optional[str] = typer.Option(None, "--name", help="Sweep name (default: the file's stem)."),
    metric: Optional[str] = typer.Option(None, "--metric", help="Ranking metric: val_accuracy, val_loss, accuracy, loss."),
    mode: Optional[str] = typer.Option(None, "--mode", help="max or min (default: by the metric)."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Sweeps go to RUNS_DIR/sweeps/."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue a sweep folder.", file_okay=False),
    executor: str = typer.Option("local", "--executor", help="local (worker processes) or dask."),
    address: Optional[str] = typer.Option(None, "--address", help="Dask scheduler, e.g. tcp://HOST:8786."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the search space and the number of trials; "
                                                          "run nothing."),
) -> None:
    """Grid, random or sampled (Optuna: tpe, cmaes, qmc, with pruners) search over a config:
    trials in parallel, resumable, with a leaderboard.

    Exit code 1 when any trial failed (each failure's reason is in results.csv); pruned
    trials are not failures.
    """
    from cnncli.search import run_any

    if executor not in ("local", "dask"):
        raise CnnCliError(f"--executor: expected local or dask; got {executor!r}")
    if executor == "dask" and not address:
        raise CnnCliError("--executor dask needs --address tcp://HOST:PORT of a running Dask scheduler")
    if dry_run:
        print_dry_run(target, grid, set_, name, metric, mode, resume)
        return
    sw = open_or_create(target, grid, set_, name, metric, mode, runs_dir, resume)
    jobs = jobs or sw.spec.jobs or 1
    if sw.spec.sampled and not any(k != "n_trials" for k in sw.spec.random):
        say(f"note: every key of the space is a list: {sw.spec.search} samples {sw.spec.n_trials} combinations "
            "among them (search: grid would run each combination once)", error=True)
    if sw.spec.sampled:
        total = sw.spec.n_trials
        done = sum(1 for r in sw.records.values() if r.get("status") in ("completed", "pruned", "failed"))
        what = f"{sw.spec.search} samples {total} trials ({done} already finished)"
    else:
        total, done = len(sw.spec.trials), len(sw.spec.trials) - len(sw.pending())
        what = f"{total} trials ({done} already completed)"
    say(f"sweep {sw.folder}: {what}, "
        f"{'dask at ' + str(address) if executor == 'dask' else f'{jobs} job(s)'}")
    progress = SweepProgress(total, done)
    with progress.progress:
        try:
            run_any(sw, jobs=jobs, executor=executor, address=address, on_update=progress,
                    on_warning=warn)
        except KeyboardInterrupt:
            say(f"interrupted; continue with: cnncli sweep --resume {sw.folder}", error=True)
            raise typer.Exit(130) from None
    print_leaderboard(sw)
    failed = [i for i, r in sw.records.items() if r.get("status") not in ("completed", "pruned", "requeued")]
    if failed:
        say(f"{len(failed)} trial(s) failed: " + ", ".join(f"trial-{i:03d}" for i in failed), error=True)
        raise typer.Exit(1)


def add_commands(app: typer.Typer) -> None:
    app.command()(sweep)
