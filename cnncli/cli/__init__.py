"""The ``cnncli`` command line (Typer + rich), one module per group of commands:

=============  ==================================================
module         commands
=============  ==================================================
train.py       train (and --resume)
lr_find.py     lr-find (the learning-rate range test)
evaluate.py    eval, predict
export.py      export (ONNX, or weights.npz + model.json)
inspect.py     summary, explain, gradcheck, components
pictures.py    visualize, plot, report
sweep.py       sweep
runs.py        runs, compare (--dynamics)
data.py        data list, data fetch, data info, data add
common.py      consoles, the one-line error form, shared options
=============  ==================================================

Each command is a thin layer of printing over the Python API; the command line is the
only part of cnncli that prints.
"""

from __future__ import annotations

import typer

import cnncli
from cnncli.cli import data, evaluate, export, inspect, lr_find, pictures, runs, sweep, train
from cnncli.cli.common import console, user_errors

app = typer.Typer(
    name="cnncli",
    help="Configuration-driven CNN experiments on a from-scratch NumPy engine.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        console.print(f"cnncli {cnncli.__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """Train, evaluate and inspect convolutional networks declared in YAML."""
    from cnncli.nn import parallel
    from cnncli.nn.layers import conv

    user_errors(parallel.threads_from_environment)()  # a bad CNNCLI_THREADS: one line, before any work
    user_errors(conv.memory_budget)()  # and a bad CNNCLI_CONV_MEMORY_MB


for _module in (train, lr_find, evaluate, export, inspect, pictures, sweep, runs, data):
    _module.add_commands(app)

__all__ = ["app"]

if __name__ == "__main__":  # pragma: no cover
    app()
