"""``cnncli export``: a run's checkpoint as an ONNX graph or as plain arrays with a JSON
description (``cnncli.export`` says what each holds)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cnncli.cli.common import CHECKPOINT, RUNS_DIR, say, user_errors


@user_errors
def export(
    run_dir: Optional[Path] = typer.Argument(None, help="Run folder (default: the most recent under runs/)."),
    fmt: str = typer.Option("onnx", "--format", "-f", help="onnx (a graph for onnxruntime and other runtimes) "
                                                           "or npz (weights.npz and model.json)."),
    checkpoint: Optional[str] = CHECKPOINT,
    out: Optional[Path] = typer.Option(None, "--out", help="onnx: a .onnx file or an existing folder; npz: "
                                                                 "a folder (default: RUN_DIR/export/). Its "
                                                                 "parent folder must exist."),
    layout: str = typer.Option("nhwc", "--layout", help="onnx: the input's layout, nhwc (cnncli's) or nchw."),
    include_preprocessing: bool = typer.Option(False, "--include-preprocessing",
                                               help="onnx: put the run's normalization into the graph, which "
                                                    "then takes raw pixel values (0-255) as float32."),
    runs_dir: Path = RUNS_DIR,
) -> None:
    """Export a run for other programs: ONNX (opset 17) or weights.npz + model.json."""
    from cnncli.export import OPSET, check_options, export_run
    from cnncli.experiment import run_checkpoint
    from cnncli.runs import checkpoint_name, resolve_run_dir

    check_options(fmt, layout, include_preprocessing)  # refused before anything is read
    if checkpoint is not None:
        checkpoint_name(checkpoint)
    path = resolve_run_dir(run_dir, runs_dir)
    checkpoint = run_checkpoint(path, checkpoint)
    done = export_run(path, fmt=fmt, checkpoint=checkpoint, out=out, layout=layout,
                      include_preprocessing=include_preprocessing)
    dims = lambda d: "(" + ", ".join(str(v) for v in d) + ")"  # noqa: E731
    if done.format == "onnx":
        takes = "raw pixel values 0-255" if include_preprocessing else "normalized values (metadata: normalization)"
        say(f"wrote {done.files[0]} (ONNX opset {OPSET}, {checkpoint} checkpoint)")
        say(f"input '{done.input_name}' {dims(done.input_dims)} {done.layout} float32, {takes}; "
            f"output '{done.output_name}' {dims(done.output_dims)}")
    else:
        say(f"wrote {done.files[0]} and {done.files[1].name} ({checkpoint} checkpoint; NHWC, "
            f"output '{done.output_name}' {dims(done.output_dims)})")
    for note in done.notes:
        say(f"note: {note}")


def add_commands(app: typer.Typer) -> None:
    app.command()(export)
