"""``cnncli data``: datasets by name: list, fetch, info, add (a local copy)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from cnncli.cli.common import console, say, table, user_errors

app = typer.Typer(help="Datasets by name: fetched, verified and cached (caltech101, mnist, fashion_mnist, cifar10).",
                  no_args_is_help=True)


class DownloadBar:
    """The progress-bar object pooch asks for (total, update, reset, close), drawn by rich."""

    def __init__(self) -> None:
        self.progress = Progress(TextColumn("downloading"), BarColumn(bar_width=30), DownloadColumn(),
                                 TransferSpeedColumn(), console=console, transient=True)
        self.task = None
        self.total = None

    def update(self, n: int) -> None:
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task("download", total=self.total)
        self.progress.update(self.task, advance=n, total=self.total)

    def reset(self) -> None:
        if self.task is not None:
            self.progress.reset(self.task)

    def close(self) -> None:
        self.progress.stop()


def announce_fetch(dataset):
    """``on_fetch`` for ``datasets.prepare``: say what is fetched, and draw a bar on a terminal."""
    from cnncli.data import datasets

    say(f"{dataset.name}: not in the cache ({datasets.cache_root()}); fetching it once "
        f"({', '.join(f.name for f in dataset.files)})")
    return DownloadBar() if console.is_terminal else None


@app.command("list")
@user_errors
def list_() -> None:
    """Every dataset cnncli can fetch: ready or not, where, and its size."""
    from cnncli.data import datasets

    rows = []
    for name in datasets.DATASETS:
        s = datasets.status(name)
        rows.append([name, "ready" if s["ready"] else "not fetched", f"{s['bytes'] / 2**20:,.1f} MiB",
                     s["where"], s["check"]])
    console.print(table(f"datasets (cache: {datasets.cache_root()})",
                        [("name", "left"), ("status", "left"), ("size", "right"), ("where", "left"),
                         ("checked", "left")], rows))


@app.command()
@user_errors
def fetch(name: str = typer.Argument(..., help="caltech101, mnist, fashion_mnist or cifar10.")) -> None:
    """Download, verify (the publisher's MD5) and unpack a dataset into the cache."""
    from cnncli.data import datasets

    root, info = datasets.prepare(name, on_fetch=announce_fetch)
    say(f"{name}: ready in {root} ({info['check']})")


@app.command()
@user_errors
def info(name: str = typer.Argument(..., help="caltech101, mnist, fashion_mnist or cifar10.")) -> None:
    """What a dataset is: files, counts, licence, citation."""
    from cnncli.data import datasets

    d = datasets.get(name, "NAME")
    say(f"{d.name}: {d.title}")
    say(f"licence: {d.license}")
    say(f"cite: {d.citation}")
    if d.counts:
        say("counts: " + ", ".join(f"{k} {v:,}" for k, v in d.counts.items()))
    for f in d.files:
        say(f"file: {f.name}  md5 {f.md5}  {f.url}")
    s = datasets.status(name)
    say(f"cache: {'ready in ' + s['where'] if s['ready'] else 'not fetched (cnncli data fetch ' + name + ')'}")
    names = datasets.classes(name)
    if names is not None:
        say(f"classes ({len(names)}): {', '.join(names)}")


@app.command()
@user_errors
def add(name: str = typer.Argument(..., help="caltech101, mnist, fashion_mnist or cifar10."),
        path: Path = typer.Argument(..., help="An official file, or the unpacked data (a folder).")) -> None:
    """Register a copy on disk, for a machine without internet (checked before use)."""
    from cnncli.data import datasets

    info = datasets.add_local(name, path)
    if not info.get("ready"):
        say(f"{name}: added {info['added']}; still missing: {', '.join(info['missing'])}")
        return
    say(f"{name}: ready in {info['root']} (checked: {info['check']})")


def add_commands(main: typer.Typer) -> None:
    main.add_typer(app, name="data")
