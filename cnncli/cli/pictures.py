"""Pictures: ``visualize`` (what a trained network learned) and ``plot`` (the paper's
activations and losses with their derivatives)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from cnncli.cli.common import CHECKPOINT, RUNS_DIR, say, user_errors, warn
from cnncli.errors import CnnCliError


@user_errors
def visualize(
    run_dir: Optional[Path] = typer.Argument(None, help="Run folder (default: the most recent under runs/)."),
    image: Optional[Path] = typer.Option(None, "--image", help="Image for the feature maps (default: the first "
                                                               "example of the test split, else the validation split, "
                                                               "else the training split)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: RUN_DIR/visualize)."),
    kernels: str = typer.Option("change", "--kernels", help="kernels.png shows change (W - W0: what training "
                                                            "changed since the start) or weights (W); either on "
                                                            "one colour scale for every kernel."),
    checkpoint: Optional[str] = CHECKPOINT,
    runs_dir: Path = RUNS_DIR,
) -> None:
    """PNGs of the first layer's kernels, each conv layer's feature maps, and the training curves."""
    from cnncli.experiment import visualize_run
    from cnncli.runs import resolve_run_dir
    from cnncli.visualize import KERNEL_VIEWS

    if kernels not in KERNEL_VIEWS:
        raise CnnCliError(f"--kernels: expected {' or '.join(KERNEL_VIEWS)}; got {kernels!r}")
    path = resolve_run_dir(run_dir, runs_dir)
    written, warnings = visualize_run(path, out or path / "visualize", image=image, checkpoint=checkpoint,
                                      kernels=kernels, on_note=say)
    for line in warnings:
        warn(line)
    for p in written:
        say(f"wrote {p}")


@user_errors
def plot(
    kind: str = typer.Argument(..., help="activation, loss, or dynamics."),
    names: List[str] = typer.Argument(None, help="activation or loss: names (default: every one registered, "
                                                 "without aliases); dynamics: run folders (default: the most "
                                                 "recent run; several are overlaid)."),
    out: Optional[Path] = typer.Option(None, "--out", help="activation or loss: output folder (default: "
                                                           "RUNS_DIR/plots); dynamics: the PNG file (default: "
                                                           "RUN_DIR/dynamics.png, or dynamics_compare.png in the "
                                                           "first run's folder)."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Where runs are: dynamics reads the most recent; "
                                                                   "activation and loss write into its plots/ folder "
                                                                   "unless --out says."),
) -> None:
    """PNG of the paper's activations (Table 2) or losses (Table 1) with their derivatives,
    or of a run's training dynamics (per layer: delta, gradient and update norms, saturation)."""
    if kind == "dynamics":
        say(f"wrote {plot_dynamics([Path(n) for n in names or []], out, runs_dir)}")
        return
    from cnncli.nn.activations import ACTIVATIONS
    from cnncli.nn.losses import LOSSES
    from cnncli.visualize import function_plot_png

    registry = {"activation": ACTIVATIONS, "loss": LOSSES}.get(kind)
    if registry is None:
        raise CnnCliError(f"plot: expected activation, loss or dynamics; got {kind!r}")
    every = [n for n, obj in registry.items() if getattr(obj, "name", n) == n]  # swish is silu: once
    names = names or every
    for name in names:
        registry.get(name, kind)
    # A picture of no run goes beside the runs (a folder a clone already ignores), not into
    # whatever folder the command happens to run in.
    out = out or runs_dir / "plots"
    out.mkdir(parents=True, exist_ok=True)
    label = "all" if sorted(set(names)) == every else "_".join(names)
    say(f"wrote {function_plot_png(kind, names, out / f'{kind}_{label}.png')}")


def plot_dynamics(run_dirs: list[Path], out: Optional[Path], runs_dir: Path) -> Path:
    """dynamics.png of one run, or the runs overlaid (``plot dynamics``, ``compare --dynamics``)."""
    from cnncli.experiment import read_run_dynamics
    from cnncli.runs import resolve_run_dir
    from cnncli.visualize import dynamics_png

    paths = [resolve_run_dir(p, runs_dir) for p in run_dirs] or [resolve_run_dir(None, runs_dir)]
    series = [(p.name, read_run_dynamics(p)) for p in paths]
    if out is None:
        out = paths[0] / ("dynamics.png" if len(paths) == 1 else "dynamics_compare.png")
    elif out.is_dir():
        out = out / ("dynamics.png" if len(paths) == 1 else "dynamics_compare.png")
    if out.suffix.lower() != ".png":
        raise CnnCliError(f"--out: expected a .png file or a folder; got {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    return dynamics_png(series, out)


@user_errors
def report(
    target: Optional[Path] = typer.Argument(None, help="A run folder or a sweep folder (default: the most recent "
                                                       "run)."),
    out: Optional[Path] = typer.Option(None, "--out", help="The HTML file (default: TARGET/report.html)."),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", "-c", help="best or last (default: the "
                                                                              "config's eval.checkpoint)."),
    no_eval: bool = typer.Option(False, "--no-eval", help="Show the run's eval.json instead of evaluating again."),
    runs_dir: Path = RUNS_DIR,
) -> None:
    """One self-contained HTML page of a run (evaluation, curves, dynamics, Table 5, config)
    or of a sweep (leaderboard, every trial's curves, the metric against each key)."""
    from cnncli.report import write_report
    from cnncli.runs import checkpoint_name, resolve_run_dir

    if checkpoint is not None:
        checkpoint_name(checkpoint)
    if out is not None and out.suffix.lower() not in (".html", ".htm"):
        raise CnnCliError(f"--out: expected an .html file; got {out}")
    if target is None:
        target = resolve_run_dir(None, runs_dir)
    elif not target.is_dir():
        raise CnnCliError(f"{target}: no such folder (give a run folder or a sweep folder)")
    written, notes = write_report(target, out, checkpoint=checkpoint, evaluate=not no_eval)
    for line in notes:
        say(f"note: {line}", error=True)
    say(f"wrote {written}")


def add_commands(app: typer.Typer) -> None:
    app.command()(visualize)
    app.command()(plot)
    app.command()(report)
