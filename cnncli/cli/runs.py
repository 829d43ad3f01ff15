"""Looking over runs: ``runs`` (every run with its status and metrics, and the sweeps)
and ``compare`` (metrics side by side, and the config keys that differ)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import List, Optional

import typer

from cnncli.cli.common import console, say, table, user_errors
from cnncli.errors import CnnCliError


def _age(path: Path) -> str:
    seconds = time.time() - path.stat().st_mtime
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _figure(row: dict | None, key: str) -> str:
    value = (row or {}).get(key)
    return f"{value:.4f}" if isinstance(value, (int, float)) else ""


def _best_label(monitor: str, row: dict | None) -> str:
    return f"{row['epoch']} ({monitor})" if row else ""


@user_errors
def runs_(folder: Optional[Path] = typer.Argument(None, help="Folder of runs (default: runs)."),
          runs_dir: Optional[Path] = typer.Option(None, "--runs-dir", help="The same, as every other command "
                                                                           "names it.")) -> None:
    """Every run with its status, age and key metrics (and the sweeps)."""
    from cnncli import runs as rs

    if folder is not None and runs_dir is not None and folder != runs_dir:
        raise CnnCliError(f"runs: give the folder once (got {folder} and --runs-dir {runs_dir})")
    runs_dir = folder or runs_dir or Path("runs")
    found = rs.list_runs(runs_dir)
    sweeps_dir = runs_dir / "sweeps"
    if not found and not sweeps_dir.is_dir():
        say(f"no runs in {runs_dir}/")
        return
    body = []
    for path in found:
        rows = rs.read_metrics(path)
        monitor, best = rs.best_epoch(path, rows)
        body.append([path.name, rs.read_status(path).get("status", "?"), _age(path), str(len(rows)),
                     _best_label(monitor, best), _figure(best, "val_accuracy"), _figure(best, "val_loss"),
                     _figure(rows[-1] if rows else None, "accuracy")])
    if body:  # a folder of sweeps only has no run table to show
        # "best" means what training means by it: the epoch of the best monitored value
        # (the one best.npz holds), and that epoch's figures, not each column's own maximum.
        console.print(table(str(runs_dir), [(c, "left" if c in ("run", "status") else "right") for c in
                                            ("run", "status", "age", "epochs", "best epoch (by)", "val_acc there",
                                             "val_loss there", "final acc")], body))
    else:
        say(f"no runs in {runs_dir}/ outside its sweeps")
    if sweeps_dir.is_dir():
        for sw in sorted(p for p in sweeps_dir.iterdir() if (p / "sweep.yaml").is_file()):
            trials = json.loads((sw / "trials.json").read_text()) if (sw / "trials.json").is_file() else {}
            states = [t.get("status") for t in trials.values()]
            pruned = f"{states.count('pruned')} pruned, " if "pruned" in states else ""
            say(f"sweep {sw.name}: {states.count('completed')} completed, {pruned}{states.count('failed')} failed, "
                f"{states.count('running')} running")


def run_figures(path: Path) -> dict[str, str]:
    """The figures ``compare`` shows for one run."""
    from cnncli import runs as rs

    rows = rs.read_metrics(path)
    final = rows[-1] if rows else {}
    monitor, best = rs.best_epoch(path, rows)
    return {"status": rs.read_status(path).get("status", "?"), "epochs": str(len(rows)),
            "best epoch (by)": _best_label(monitor, best), "val_accuracy at the best epoch": _figure(best, "val_accuracy"),
            "val_loss at the best epoch": _figure(best, "val_loss"),
            "final accuracy": _figure(final, "accuracy"), "final loss": _figure(final, "loss"),
            "seconds": f"{sum(r['seconds'] for r in rows):.1f}" if rows else ""}


@user_errors
def compare(run_dirs: List[Path] = typer.Argument(..., help="Two or more run folders."),
            dynamics: bool = typer.Option(False, "--dynamics", help="Also overlay the runs' training dynamics "
                                                                    "in one PNG."),
            out: Optional[Path] = typer.Option(None, "--out", help="With --dynamics: the PNG file (default: "
                                                                   "dynamics_compare.png in the first run's folder).")
            ) -> None:
    """Metrics side by side, and the config keys that differ; --dynamics overlays the
    runs' training dynamics (for example SGD against Adam on the same network)."""
    from cnncli import runs as rs
    from cnncli.experiment import flat_values
    from cnncli.yamlfiles import read

    if len(run_dirs) < 2:
        raise CnnCliError("compare: give at least two run folders")
    paths = [rs.resolve_run_dir(p) for p in run_dirs]
    if dynamics:  # checked before anything is printed: a run without dynamics is one line
        from cnncli.cli.pictures import plot_dynamics

        written = plot_dynamics(paths, out, Path("runs"))
    per_run = [run_figures(p) for p in paths]
    columns = [("", "left")] + [(p.name, "right") for p in paths]
    console.print(table("metrics", columns, [[key, *(r[key] for r in per_run)] for key in per_run[0]]))
    configs = [flat_values(read(p / "config.yaml")) for p in paths]
    differing = [k for k in sorted(set().union(*configs))
                 if k != "name" and len({json.dumps(c.get(k)) for c in configs}) > 1]
    if not differing:
        say("configs are identical (but for the name)")
    else:
        console.print(table("config differences", [("key", "left")] + [(p.name, "left") for p in paths],
                            [[k, *(json.dumps(c.get(k)) if k in c else "-" for c in configs)] for k in differing]))
    if dynamics:
        say(f"wrote {written}")


def add_commands(app: typer.Typer) -> None:
    app.command("runs")(runs_)
    app.command()(compare)
