"""Pictures: ``visualize`` (what a trained network learned) and ``plot`` (the paper's
activations and losses with their derivatives)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from cnncli.cli.common import CHECKPOINT, RUNS_DIR, say, user_errors
from cnncli.errors import CnnCliError


@user_errors
def visualize(
    run_dir: Optional[Path] = typer.Argument(None, help="Run folder (default: the most recent under runs/)."),
    image: Optional[Path] = typer.Option(None, "--image", help="Image for the feature maps (default: a validation "
                                                               "example)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: RUN_DIR/visualize)."),
    checkpoint: str = CHECKPOINT,
    runs_dir: Path = RUNS_DIR,
) -> None:
    """PNGs of the first layer's kernels, each conv layer's feature maps, and the training curves."""
    from cnncli.experiment import visualize_run
    from cnncli.runs import resolve_run_dir

    path = resolve_run_dir(run_dir, runs_dir)
    written, warnings = visualize_run(path, out or path / "visualize", image=image, checkpoint=checkpoint)
    for line in warnings:
        say(f"warning: {line}", error=True)
    for p in written:
        say(f"wrote {p}")


@user_errors
def plot(
    kind: str = typer.Argument(..., help="activation or loss."),
    names: List[str] = typer.Argument(None, help="Names (default: every one registered, without aliases)."),
    out: Path = typer.Option(Path("plots"), "--out", help="Output folder."),
) -> None:
    """PNG of the paper's activations (Table 2) or losses (Table 1) with their derivatives."""
    from cnncli.nn.activations import ACTIVATIONS
    from cnncli.nn.losses import LOSSES
    from cnncli.visualize import function_plot_png

    registry = {"activation": ACTIVATIONS, "loss": LOSSES}.get(kind)
    if registry is None:
        raise CnnCliError(f"plot: expected activation or loss; got {kind!r}")
    every = [n for n, obj in registry.items() if getattr(obj, "name", n) == n]  # swish is silu: once
    names = names or every
    for name in names:
        registry.get(name, kind)
    out.mkdir(parents=True, exist_ok=True)
    label = "all" if sorted(set(names)) == every else "_".join(names)
    say(f"wrote {function_plot_png(kind, names, out / f'{kind}_{label}.png')}")


def add_commands(app: typer.Typer) -> None:
    app.command()(visualize)
    app.command()(plot)
