"""``python -m cnncli.cli``: the command line."""

from cnncli.cli import app

app()
