"""What every command shares: the consoles, the one-line error form, common options.

The command line is the only part of cnncli that prints. User errors
(:class:`~cnncli.errors.CnnCliError`) become one line on stderr,
``error: <file>: <key path>: ...``, and exit code 2; anything else keeps its traceback,
because a bug should look like a bug.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from cnncli.errors import CnnCliError, CnnCliWarning

console = Console()
err_console = Console(stderr=True)
# Piped or captured output has no terminal width: do not squeeze tables into 80 columns.
if not console.is_terminal:
    console = Console(width=160)
if not err_console.is_terminal:
    err_console = Console(stderr=True, width=160)


def _show_warning(message, category, filename, lineno, file=None, line=None, _python=warnings.showwarning):
    """cnncli's own warnings (CnnCliWarning) as one ``warning: ...`` line on stderr; others as Python shows them."""
    if issubclass(category, CnnCliWarning):
        warn(str(message))
    else:
        _python(message, category, filename, lineno, file, line)


def user_errors(fn):
    """Turn CnnCliError into one line on stderr and its exit code (2); print the library's
    CnnCliWarnings as ``warning: ...`` lines while the command runs."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always", CnnCliWarning)  # the library says each once itself
                warnings.showwarning = _show_warning
                return fn(*args, **kwargs)
        except CnnCliError as err:
            # The message is text, not markup: "[int, int]" must print as it is.
            err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, markup=True,
                              soft_wrap=True)
            raise typer.Exit(err.exit_code) from None

    return wrapper


def say(text: str, *, error: bool = False, style: str | None = None) -> None:
    """One line of plain text (no markup, no highlighting), on stdout or stderr."""
    (err_console if error else console).print(text, highlight=False, markup=False, style=style, soft_wrap=True)


def table(title: str, columns: list[tuple[str, str]], rows: list[list]) -> Table:
    """A rich table; ``columns`` are (name, justify). A ``str`` cell is text, not markup
    (a class name or a value such as ``[relu, tanh]`` prints as it is); pass a rich
    ``Text`` for a styled cell."""
    out = Table(title=title, title_justify="left")
    for name, justify in columns:
        out.add_column(name, justify=justify)
    for row in rows:
        out.add_row(*(Text(cell) if isinstance(cell, str) else cell for cell in row))
    return out


def warn(line: str) -> None:
    """One ``warning: ...`` line on stderr."""
    say(f"warning: {line}", error=True)


def config_path(target: Path) -> Path:
    """A config file, or a run folder's config.yaml."""
    return target / "config.yaml" if target.is_dir() else target


# Options that several commands take, declared once.
RUNS_DIR = typer.Option(Path("runs"), "--runs-dir", help="Where to look for the most recent run.")
CHECKPOINT = typer.Option(None, "--checkpoint", "-c", help="best or last (default: the run's eval.checkpoint, "
                                                           "best unless it says last).")
SET = typer.Option([], "--set", "-s", metavar="KEY=VALUE", help="Override a config value (YAML).")
