"""The ``cnncli`` command line: the only module that prints (Typer + rich).

User errors (:class:`~cnncli.errors.CnnCliError`) become one line on stderr,
``error: <file>: <key path>: ...``, and exit code 2; anything else keeps its traceback,
because a bug should look like a bug.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import cnncli
from cnncli.errors import CnnCliError

app = typer.Typer(
    name="cnncli",
    help="Configuration-driven CNN experiments on a from-scratch NumPy engine.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
console = Console()
err_console = Console(stderr=True)
# Piped or captured output has no terminal width: do not squeeze tables into 80 columns.
if not console.is_terminal:
    console = Console(width=160)
if not err_console.is_terminal:
    err_console = Console(stderr=True, width=160)


def _version(value: bool) -> None:
    if value:
        console.print(f"cnncli {cnncli.__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """Train, evaluate and inspect convolutional networks declared in YAML."""
    from cnncli.nn import parallel

    user_errors(parallel.threads_from_environment)()  # a bad CNNCLI_THREADS: one line, before any work


def user_errors(fn):
    """Turn CnnCliError into one line on stderr and its exit code (2)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CnnCliError as err:
            # The message is text, not markup: "[int, int]" must print as it is.
            err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, markup=True,
                              soft_wrap=True)
            raise typer.Exit(err.exit_code) from None

    return wrapper


# --------------------------------------------------------------------------- progress
class ProgressDisplay:
    """A rich progress bar per epoch with loss, accuracy and images/s."""

    def __init__(self) -> None:
        self.progress: Progress | None = None
        self.task = None
        self.epochs = 0
        self.steps = 0

    def on_train_start(self, epochs, steps_per_epoch, state):
        self.epochs, self.steps = epochs, steps_per_epoch

    def on_epoch_start(self, epoch):
        if not console.is_terminal:  # piped or captured: the per-epoch lines only
            self.progress = None
            return
        self.progress = Progress(
            TextColumn(f"epoch {epoch:>{len(str(self.epochs))}}/{self.epochs}"), BarColumn(bar_width=30),
            MofNCompleteColumn(), TextColumn("{task.fields[stats]}"), TimeElapsedColumn(),
            console=console, transient=True)
        self.progress.start()
        self.task = self.progress.add_task("train", total=self.steps, stats="")

    def on_batch_end(self, epoch, batch, loss, accuracy, images_per_second):
        if self.progress is None:
            return
        self.progress.update(self.task, completed=batch,
                             stats=f"loss {loss:.4f}  acc {accuracy:.3f}  {images_per_second:,.0f} img/s")

    def on_step_end(self, state):
        pass

    def on_interrupt(self, state):
        if self.progress is not None:
            self.progress.stop()

    def on_epoch_end(self, m, improved, state):
        if self.progress is not None:
            self.progress.stop()
        val = ""
        if m.val_loss is not None:
            val = f"  val_loss {m.val_loss:.4f}  val_acc {m.val_accuracy:.3f}"
        mark = " [green]*[/]" if improved else ""
        console.print(f"epoch {m.epoch:>{len(str(self.epochs))}}/{self.epochs}  loss {m.loss:.4f}  "
                      f"acc {m.accuracy:.3f}{val}  {m.seconds:.1f}s  {m.images_per_second:,.0f} img/s{mark}",
                      highlight=False, soft_wrap=True)

    def on_train_end(self, result):
        if self.progress is not None:
            self.progress.stop()


# ---------------------------------------------------------------------------- summary
def summary_table(summary, flops: bool = True) -> Table:
    from cnncli.summary import calculation_text, human_bytes, human_flops, shape_text

    table = Table(title=f"input {shape_text(summary.input_shape)} ({summary.dtype})", title_justify="left")
    columns = [("#", "right"), ("layer", "left"), ("output", "left"), ("calculation", "left"),
               ("weights", "right"), ("biases", "right"), ("parameters", "right"), ("forward FLOPs", "right")]
    if flops:
        columns.append(("backward FLOPs", "right"))
    for col, justify in columns:
        table.add_column(col, justify=justify)
    for r in summary.rows:
        table.add_row(str(r.index), r.layer, shape_text(r.output_shape), calculation_text(r), f"{r.weights:,}",
                      f"{r.biases:,}", f"{r.params:,}", f"{r.flops:,}", *([f"{r.backward_flops:,}"] if flops else []))
    table.add_section()
    table.add_row("", "total", "", "", f"{summary.weights:,}", f"{summary.biases:,}", f"{summary.params:,}",
                  f"{summary.flops:,}", *([f"{summary.backward_flops:,}"] if flops else []), style="bold")
    caption = (f"{summary.params:,} parameters = {summary.weights:,} weights + {summary.biases:,} biases "
               f"({human_bytes(summary.param_bytes)}); activations {human_bytes(summary.activation_bytes)} "
               f"per example; forward {human_flops(summary.flops)} per example")
    if flops and summary.batch_size:
        caption += (f"; backward {human_flops(summary.backward_flops)}; one {summary.optimizer} update "
                    f"{human_flops(summary.update_flops)} (at batch {summary.batch_size}: a training step is "
                    f"{human_flops(int(summary.step_flops_per_example))} per example)")
    table.caption = caption
    table.caption_justify = "left"
    return table


# ---------------------------------------------------------------------------- commands
@app.command()
@user_errors
def train(
    config: Optional[Path] = typer.Argument(None, help="Experiment config (YAML).", dir_okay=False),
    set_: List[str] = typer.Option([], "--set", "-s", metavar="KEY=VALUE",
                                   help="Override a config value (YAML), e.g. optimizer.lr=0.01. Repeatable."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Where run folders are created."),
    name: Optional[str] = typer.Option(None, "--name", help="Run name (default: the config's name)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue an interrupted run folder.",
                                          file_okay=False),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No summary table or progress bars."),
) -> None:
    """Train CONFIG into a new run folder under runs/ (or continue one with --resume).

    Ctrl-C (or SIGTERM) stops after the current step and writes a checkpoint; a second
    Ctrl-C stops at once. `cnncli train --resume RUN_DIR` then continues exactly.
    """
    from cnncli import experiment
    from cnncli.summary import summarize

    if (config is None) == (resume is None):
        raise CnnCliError("train: give a CONFIG file, or --resume RUN_DIR (not both)")
    if resume is not None and (set_ or name):
        raise CnnCliError("train --resume continues a run with its own config: --set and --name do not apply")

    def ready(run_dir, cfg, network, data):
        if quiet:
            return
        console.print(summary_table(summarize(network), flops=False))
        info = data.info
        extra = f", {len(info['skipped'])} unreadable skipped" if info.get("skipped") else ""
        cached = " (from cache)" if info.get("cached") else ""
        console.print(f"data: {cfg['data']['source']}{cached}, classes {', '.join(data.class_names)}; "
                      f"train {info['train']}, validation {info['validation']}, test {info['test']}{extra}",
                      highlight=False)
        for f in info.get("skipped", [])[:10]:
            err_console.print(f"warning: skipped unreadable image {f}", highlight=False)
        opt = cfg["optimizer"]
        console.print(f"seed {cfg['seed']}; loss {cfg['loss']['name']} ({cfg['loss']['reduction']}); optimizer "
                      f"{opt['name']} lr {opt['lr']:g}; {cfg['train']['epochs']} epochs of batch "
                      f"{cfg['train']['batch_size']}; run folder {run_dir}", highlight=False)

    callbacks = () if quiet else (ProgressDisplay(),)
    try:
        if resume is not None:
            run = experiment.resume(resume, callbacks=callbacks, on_ready=ready)
        else:
            run = experiment.train(str(config), overrides=set_, runs_dir=runs_dir, name=name, callbacks=callbacks,
                                   on_ready=ready)
    except KeyboardInterrupt:
        err_console.print("stopped at once: the last checkpoint and every finished epoch are kept "
                          "(status.json says interrupted); continue with cnncli train --resume RUN_DIR")
        raise typer.Exit(130) from None
    if run.status == "interrupted":
        from cnncli.runs import read_status

        status = read_status(run.path)
        err_console.print(f"interrupted in epoch {status.get('epoch', 0) + 1} after batch {status.get('batch')} "
                          f"(step {status.get('step')}); checkpoint written to {run.path / 'checkpoints' / 'last.npz'}"
                          f"\nresume with: cnncli train --resume {run.path}", highlight=False)
        raise typer.Exit(130)
    best = run.best
    if best is not None:
        val = (f"val_loss {best.val_loss:.4f}, val_accuracy {best.val_accuracy:.4f}" if best.val_loss is not None
               else f"loss {best.loss:.4f}, accuracy {best.accuracy:.4f}")
        console.print(f"best epoch {best.epoch} ({run.result.monitor}): {val}", highlight=False)
    if run.result.stopped_early:
        console.print(f"stopped early after epoch {run.history[-1].epoch}", highlight=False)
    console.print(f"run: {run.path}", highlight=False)


@app.command("eval")
@user_errors
def eval_(
    run_dir: Optional[Path] = typer.Argument(None, help="Run folder (default: the most recent under runs/)."),
    checkpoint: str = typer.Option("best", "--checkpoint", "-c", help="best or last."),
    data_path: Optional[Path] = typer.Option(None, "--data-path", help="Evaluate on other data of the same kind."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Where to look for the most recent run."),
) -> None:
    """Evaluate a run: loss, accuracy, confusion matrix, per-class precision/recall/F1."""
    from cnncli.experiment import evaluate_run
    from cnncli.runs import resolve_run_dir

    if checkpoint not in ("best", "last"):
        raise CnnCliError(f"--checkpoint: expected best or last; got {checkpoint!r}")
    path = resolve_run_dir(run_dir, runs_dir)
    report = evaluate_run(path, checkpoint=checkpoint, data_path=str(data_path) if data_path else None)
    if as_json:
        print(json.dumps(report, indent=2))
        return
    names = report["class_names"]
    console.print(f"{path} ({checkpoint} checkpoint, epoch {report['epoch']}) on {report['data']}: "
                  f"{report['examples']} examples", highlight=False)
    console.print(f"loss {report['loss']:.4f}   accuracy {report['accuracy']:.4f}", highlight=False)
    cm = Table(title="confusion matrix (rows: true, columns: predicted)", title_justify="left")
    cm.add_column("")
    for n in names:
        cm.add_column(n, justify="right")
    for n, row in zip(names, report["confusion_matrix"]):
        cm.add_row(n, *(str(v) for v in row))
    console.print(cm)
    scores = Table(title="per class", title_justify="left")
    for col in ("class", "precision", "recall", "F1", "support"):
        scores.add_column(col, justify="left" if col == "class" else "right")
    for i, n in enumerate(names):
        scores.add_row(n, f"{report['precision'][i]:.4f}", f"{report['recall'][i]:.4f}", f"{report['f1'][i]:.4f}",
                       str(report["support"][i]))
    console.print(scores)
    console.print(f"written to {path / 'eval.json'}", highlight=False)


@app.command()
@user_errors
def summary(
    target: Optional[Path] = typer.Argument(None, help="A config file or a run folder (default: the most recent run)."),
    fmt: str = typer.Option("table", "--format", "-f", help="table, markdown, csv or json."),
    flops: bool = typer.Option(True, "--flops/--no-flops", help="Backward and update FLOPs of a training step."),
    set_: List[str] = typer.Option([], "--set", "-s", metavar="KEY=VALUE", help="Override a config value."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Where to look for the most recent run."),
) -> None:
    """The paper's Table 5 for a network: shapes, parameter arithmetic, FLOPs, memory."""
    from cnncli.builder import build_network
    from cnncli.config import load_config
    from cnncli.runs import resolve_run_dir
    from cnncli.summary import summarize, to_csv, to_json, to_markdown

    if fmt not in ("table", "markdown", "csv", "json"):
        raise CnnCliError(f"--format: expected table, markdown, csv or json; got {fmt!r}")
    if target is None or target.is_dir():
        target = resolve_run_dir(target, runs_dir) / "config.yaml"
    config = load_config(str(target), set_, check_paths=False, check_memory=False)
    network = build_network(config.values, allocate=False)  # shapes only: any size works
    s = summarize(network, config["optimizer"], config["train"]["batch_size"])
    if fmt == "table":
        console.print(summary_table(s, flops))
        from cnncli.summary import SOURCES

        if flops:
            console.print(SOURCES, style="dim", highlight=False)
    else:
        print({"markdown": to_markdown, "csv": to_csv, "json": to_json}[fmt](s), end="" if fmt == "csv" else "\n")


@app.command()
@user_errors
def predict(
    paths: List[Path] = typer.Argument(..., help="[RUN_DIR] IMAGE...: a run folder (default: the most recent) "
                                            "and image files."),
    checkpoint: str = typer.Option("best", "--checkpoint", "-c", help="best or last."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Where to look for the most recent run."),
) -> None:
    """Class and probability for each image."""
    from cnncli.experiment import predict as run_predict
    from cnncli.runs import resolve_run_dir

    if checkpoint not in ("best", "last"):
        raise CnnCliError(f"--checkpoint: expected best or last; got {checkpoint!r}")
    if paths and paths[0].is_dir():
        run_dir, images = resolve_run_dir(paths[0], runs_dir), paths[1:]
    else:
        run_dir, images = resolve_run_dir(None, runs_dir), paths
    if not images:
        raise CnnCliError("predict: give at least one image file")
    results = run_predict(run_dir, [str(p) for p in images], checkpoint=checkpoint)
    if as_json:
        print(json.dumps(results, indent=2))
        return
    table = Table(title=f"{run_dir} ({checkpoint})", title_justify="left")
    table.add_column("image")
    table.add_column("class")
    table.add_column("probability", justify="right")
    for r in results:
        table.add_row(r["image"], r["class"], f"{r['probability']:.4f}")
    console.print(table)


@app.command()
@user_errors
def sweep(
    target: Optional[Path] = typer.Argument(None, help="A config file (with --grid) or a sweep file."),
    grid: List[str] = typer.Option([], "--grid", "-g", metavar="KEY=V1,V2",
                                   help="Values for one key (YAML, comma-separated). Repeatable: a cartesian grid."),
    set_: List[str] = typer.Option([], "--set", "-s", metavar="KEY=VALUE", help="Override for every trial."),
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
) -> None:
    """Grid or random search over a config: trials in parallel, resumable, with a leaderboard.

    Exit code 1 when any trial failed (each failure's reason is in results.csv).
    """
    from cnncli import sweep as sweeps

    if executor not in ("local", "dask"):
        raise CnnCliError(f"--executor: expected local or dask; got {executor!r}")
    if executor == "dask" and not address:
        raise CnnCliError("--executor dask needs --address tcp://HOST:PORT of a running Dask scheduler")
    if resume is not None:
        if target is not None or grid or set_:
            raise CnnCliError("sweep --resume continues a sweep as it was defined: no target, --grid or --set")
        sw = sweeps.Sweep.open(resume)
    else:
        if target is None:
            raise CnnCliError("sweep: give a config with --grid KEY=V1,V2, or a sweep file")
        spec = sweeps.make_spec(str(target), grid_options=grid, overrides=set_, name=name, metric=metric, mode=mode)
        sweeps.trial_configs(spec)  # every trial validated before the folder exists
        sw = sweeps.Sweep.create(spec, runs_dir)
    jobs = jobs or sw.spec.jobs or 1
    total = len(sw.spec.trials)
    done = total - len(sw.pending())
    console.print(f"sweep {sw.folder}: {total} trials ({done} already completed), "
                  f"{'dask at ' + str(address) if executor == 'dask' else f'{jobs} job(s)'}", highlight=False)
    counts = {"running": 0, "failed": 0, "done": done}
    progress = Progress(TextColumn("trials"), BarColumn(bar_width=30), MofNCompleteColumn(),
                        TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), console=console)

    def update(event, index, record):
        if event == "started":
            counts["running"] += 1
        else:
            counts["running"] -= 1
            counts["done"] += 1
            if record["status"] == "failed":
                counts["failed"] += 1
                progress.console.print(f"trial-{index:03d} failed: {record.get('reason')}", highlight=False,
                                       style="red")
        progress.update(task, completed=counts["done"],
                        stats=f"running {counts['running']}  failed {counts['failed']}")

    with progress:
        task = progress.add_task("sweep", total=total, completed=done, stats="")
        try:
            sweeps.run_sweep(sw, jobs=jobs, executor=executor, address=address, on_update=update)
        except KeyboardInterrupt:
            err_console.print(f"interrupted; continue with: cnncli sweep --resume {sw.folder}")
            raise typer.Exit(130) from None
    header, body = sw.leaderboard_rows()
    table = Table(title=f"leaderboard ({sw.spec.metric}, {sw.spec.mode})", title_justify="left")
    for col in header:
        table.add_column(col, justify="left" if col in ("trial", "status") else "right")
    for row in body:
        table.add_row(*row)
    console.print(table)
    best = sw.best_trial()
    if best is not None:
        console.print(f"best: {sw.folder / sw.records[best]['path']}", highlight=False)
    console.print(f"results: {sw.folder / 'results.csv'}", highlight=False)
    failed = [i for i, r in sw.records.items() if r.get("status") != "completed"]
    if failed:
        err_console.print(f"{len(failed)} trial(s) failed: " + ", ".join(f"trial-{i:03d}" for i in failed))
        raise typer.Exit(1)


@app.command("runs")
@user_errors
def runs_(
    runs_dir: Path = typer.Argument(Path("runs"), help="Folder of runs (default: runs)."),
) -> None:
    """Every run with its status, age and key metrics (and the sweeps)."""
    from cnncli import runs as rs

    found = rs.list_runs(runs_dir)
    sweeps_dir = runs_dir / "sweeps"
    if not found and not sweeps_dir.is_dir():
        console.print(f"no runs in {runs_dir}/", highlight=False)
        return
    table = Table(title=str(runs_dir), title_justify="left")
    for col in ("run", "status", "age", "epochs", "best val_acc", "best val_loss", "final acc"):
        table.add_column(col, justify="left" if col in ("run", "status") else "right")
    for path in found:
        status = rs.read_status(path)
        rows = rs.read_metrics(path)
        vals = [r["val_accuracy"] for r in rows if r.get("val_accuracy") is not None]
        losses = [r["val_loss"] for r in rows if r.get("val_loss") is not None]
        table.add_row(path.name, status.get("status", "?"), _age(path), str(len(rows)),
                      f"{max(vals):.4f}" if vals else "", f"{min(losses):.4f}" if losses else "",
                      f"{rows[-1]['accuracy']:.4f}" if rows else "")
    console.print(table)
    if sweeps_dir.is_dir():
        for sw in sorted(p for p in sweeps_dir.iterdir() if (p / "sweep.yaml").is_file()):
            trials = json.loads((sw / "trials.json").read_text()) if (sw / "trials.json").is_file() else {}
            states = [t.get("status") for t in trials.values()]
            console.print(f"sweep {sw.name}: {states.count('completed')} completed, {states.count('failed')} "
                          f"failed, {states.count('running')} running", highlight=False)


def _age(path: Path) -> str:
    import time

    seconds = time.time() - path.stat().st_mtime
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


@app.command()
@user_errors
def compare(
    run_dirs: List[Path] = typer.Argument(..., help="Two or more run folders."),
) -> None:
    """Metrics side by side, and the config keys that differ."""
    import yaml

    from cnncli import runs as rs

    if len(run_dirs) < 2:
        raise CnnCliError("compare: give at least two run folders")
    paths = [rs.resolve_run_dir(p) for p in run_dirs]
    table = Table(title="metrics", title_justify="left")
    table.add_column("")
    for p in paths:
        table.add_column(p.name, justify="right")
    per_run = []
    for p in paths:
        rows = rs.read_metrics(p)
        status = rs.read_status(p)
        final = rows[-1] if rows else {}
        vals = [r["val_accuracy"] for r in rows if r.get("val_accuracy") is not None]
        losses = [r["val_loss"] for r in rows if r.get("val_loss") is not None]
        per_run.append({"status": status.get("status", "?"), "epochs": str(len(rows)),
                        "best val_accuracy": f"{max(vals):.4f}" if vals else "",
                        "best val_loss": f"{min(losses):.4f}" if losses else "",
                        "final accuracy": f"{final['accuracy']:.4f}" if final else "",
                        "final loss": f"{final['loss']:.4f}" if final else "",
                        "seconds": f"{sum(r['seconds'] for r in rows):.1f}" if rows else ""})
    for key in per_run[0]:
        table.add_row(key, *(r[key] for r in per_run))
    console.print(table)
    configs = [_flatten(yaml.safe_load((p / "config.yaml").read_text())) for p in paths]
    keys = sorted(set().union(*configs))
    diff = Table(title="config differences", title_justify="left")
    diff.add_column("key")
    for p in paths:
        diff.add_column(p.name)
    differing = [k for k in keys if len({json.dumps(c.get(k)) for c in configs}) > 1 and k != "name"]
    for k in differing:
        diff.add_row(k, *(json.dumps(c.get(k)) if k in c else "-" for c in configs))
    console.print(diff if differing else "configs are identical (but for the name)")


def _flatten(obj, prefix: str = "") -> dict:
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, list) and obj and all(isinstance(v, dict) for v in obj):
        for i, v in enumerate(obj):
            out.update(_flatten(v, f"{prefix}[{i}]"))
    else:
        out[prefix] = obj
    return out


@app.command()
@user_errors
def explain(
    config: Path = typer.Argument(..., help="Experiment config (YAML), or a run folder.", dir_okay=True),
    layer: Optional[int] = typer.Option(None, "--layer", "-l", help="Only this layer (0-based index)."),
    fmt: str = typer.Option("text", "--format", "-f", help="text, markdown or latex."),
    set_: List[str] = typer.Option([], "--set", "-s", metavar="KEY=VALUE", help="Override a config value."),
) -> None:
    """The forward and backward equations of every layer with this network's sizes,
    the loss and its derivative, the optimizer's update and the FLOPs."""
    from cnncli.builder import build_network
    from cnncli.config import load_config
    from cnncli.explain import explain as make, render_latex, render_markdown, render_text

    if fmt not in ("text", "markdown", "latex"):
        raise CnnCliError(f"--format: expected text, markdown or latex; got {fmt!r}")
    if config.is_dir():
        config = config / "config.yaml"
    cfg = load_config(str(config), set_, check_paths=False, check_memory=False)
    network = build_network(cfg.values, allocate=False)
    if layer is not None and not 0 <= layer < len(network.layers):
        raise CnnCliError(f"--layer: expected 0..{len(network.layers) - 1}; got {layer}")
    sections = make(cfg, network, layer)
    title = f"{cfg['name']}: the mathematics of {config}"
    render = {"text": render_text, "markdown": render_markdown, "latex": render_latex}[fmt]
    print(render(sections, title))


@app.command()
@user_errors
def gradcheck(
    config: Path = typer.Argument(..., help="Experiment config (YAML), or a run folder."),
    batch: int = typer.Option(4, "--batch", "-b", min=1, help="Examples in the checked batch."),
    seed: int = typer.Option(0, "--seed", help="Seed of the weights, the sampled entries and random data."),
    entries: int = typer.Option(20, "--entries", min=1, help="Entries checked per tensor (sampled when larger)."),
    tolerance: float = typer.Option(1e-6, "--tolerance", help="Largest relative error that passes."),
    set_: List[str] = typer.Option([], "--set", "-s", metavar="KEY=VALUE", help="Override a config value."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Its .cache holds decoded images."),
) -> None:
    """Compare every analytic gradient with central differences, in float64, per layer.

    Exit code 1 when any layer fails.
    """
    import numpy as np

    from cnncli.builder import build_network
    from cnncli.config import load_config
    from cnncli.data import load_dataset
    from cnncli.nn.gradcheck import check_network
    from cnncli.nn.losses import make_loss
    from cnncli.training import targets_for

    if config.is_dir():
        config = config / "config.yaml"
    cfg = load_config(str(config), [*set_, "train.dtype=float64", f"seed={seed}"], check_paths=False)
    network = build_network(cfg.values)
    loss = make_loss(cfg["loss"])
    rng = np.random.default_rng(seed)
    source = "random inputs"
    try:
        data = load_dataset({**cfg.values, "train": {**cfg["train"], "validation_split": 0.0}},
                            cache_dir=runs_dir / ".cache", outputs=int(np.prod(network.output_shape)))
        pick = rng.choice(len(data.train), size=min(batch, len(data.train)), replace=False)
        x, labels = data.train.x[pick], data.train.y[pick]
        source = f"{len(pick)} examples of the configured data ({cfg['data']['source']})"
    except CnnCliError:
        x = rng.random((batch, *network.input_shape))
        classes = max(int(np.prod(network.output_shape)), 2)
        labels = rng.integers(0, classes, batch)
    rows = check_network(network, loss, x, targets_for(network, labels, loss), max_entries=entries, seed=seed)
    table = Table(title=f"gradient check of {config}: float64, {source}, central differences (h = 1e-6)",
                  title_justify="left")
    for col, justify in (("#", "right"), ("layer", "left"), ("checked", "left"), ("entries", "right"),
                         ("kinks", "right"), ("local error", "right"), ("end-to-end error", "right"),
                         ("", "left")):
        table.add_column(col, justify=justify)
    failed, broken = [], []
    for r in rows:
        names = [f"{k} (local)" for k in r["local"]] + [f"{k}" for k in r["end_to_end"]]
        local = max(r["local"].values(), default=0.0)
        end = max(r["end_to_end"].values(), default=0.0)
        ok = r["error"] < tolerance
        if not ok:
            failed.append(r)
        if local >= tolerance:
            broken.append(r)
        table.add_row("" if r["index"] is None else str(r["index"]), r["layer"], ", ".join(names) or "-",
                      str(r["entries"]), str(r["kinks"]), f"{local:.2e}" if r["local"] else "-",
                      f"{end:.2e}" if r["end_to_end"] else "-", "[green]pass[/]" if ok else "[bold red]FAIL[/]")
    console.print(table)
    console.print("local: the layer alone on its input with a random upstream gradient (dx and parameters); "
                  "end to end: the loss's gradient with respect to the layer's parameters (or the input) "
                  "through the whole network; kinks: entries left out because the step crossed a ReLU kink or "
                  "a pooling tie.", style="dim", highlight=False)
    if failed:
        name = (lambda r: f"layers[{r['index']}] ({r['layer']})" if r["index"] is not None else "the input")
        if broken:
            culprits = ", ".join(name(r) for r in broken)
            affected = [name(r) for r in failed if r not in broken]
            message = f"gradient check failed (tolerance {tolerance:g}): broken backward in {culprits}"
            if affected:
                message += f"; affected through it: {', '.join(affected)}"
        else:
            message = (f"gradient check failed (tolerance {tolerance:g}) end to end at "
                       f"{', '.join(name(r) for r in failed)}")
        err_console.print(message, highlight=False)
        raise typer.Exit(1)
    console.print(f"all gradients agree to better than {tolerance:g}", highlight=False)


@app.command()
@user_errors
def visualize(
    run_dir: Optional[Path] = typer.Argument(None, help="Run folder (default: the most recent under runs/)."),
    image: Optional[Path] = typer.Option(None, "--image", help="Image for the feature maps (default: a validation "
                                                               "example)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: RUN_DIR/visualize)."),
    checkpoint: str = typer.Option("best", "--checkpoint", "-c", help="best or last."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Where to look for the most recent run."),
) -> None:
    """PNGs of the first layer's kernels, each conv layer's feature maps, and the training curves."""
    from cnncli.data import apply_normalization, load_dataset
    from cnncli.data.image_folder import load_image
    from cnncli.experiment import load_run, write_curves
    from cnncli.runs import read_metrics, resolve_run_dir
    from cnncli.training import EpochMetrics
    from cnncli.visualize import feature_maps_png, kernels_png

    path = resolve_run_dir(run_dir, runs_dir)
    cfg, network, _, info, _ = load_run(path, checkpoint)
    out = out or path / "visualize"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    try:
        written.append(kernels_png(network, out / "kernels.png"))
    except ValueError as err:
        err_console.print(f"warning: {err}; no kernel picture", highlight=False)
    shape = tuple(cfg["model"]["input_shape"])
    if image is not None:
        try:
            raw = load_image(image, *shape)
        except (OSError, ValueError, SyntaxError) as err:
            raise CnnCliError(f"{image}: not a readable image ({err})") from None
        x = apply_normalization(raw[None], info.get("normalization", {"mode": "scale", "scale": 255.0}),
                                network.dtype.type)[0]
    else:
        data = load_dataset(cfg.values, cache_dir=path.parent / ".cache")
        split = data.evaluation or data.train
        x = split.x[0]
    written += feature_maps_png(network, x, out)
    history = [EpochMetrics(**{k: v for k, v in r.items() if k in EpochMetrics.__dataclass_fields__})
               for r in read_metrics(path)]
    if history:
        write_curves(out, history)
        written.append(out / "curves.png")
    for p in written:
        console.print(f"wrote {p}", highlight=False)


@app.command()
@user_errors
def plot(
    kind: str = typer.Argument(..., help="activation or loss."),
    names: List[str] = typer.Argument(None, help="Names (default: all of Table 2 or Table 1)."),
    out: Path = typer.Option(Path("plots"), "--out", help="Output folder."),
) -> None:
    """PNG of the paper's activations (Table 2) or losses (Table 1) with their derivatives."""
    from cnncli.nn.activations import ACTIVATIONS
    from cnncli.nn.losses import LOSSES
    from cnncli.visualize import function_plot_png

    registry = {"activation": ACTIVATIONS, "loss": LOSSES}.get(kind)
    if registry is None:
        raise CnnCliError(f"plot: expected activation or loss; got {kind!r}")
    names = names or registry.names()
    for name in names:
        registry.get(name, kind)
    out.mkdir(parents=True, exist_ok=True)
    label = "all" if sorted(set(names)) == registry.names() else "_".join(names)
    path = function_plot_png(kind, names, out / f"{kind}_{label}.png")
    console.print(f"wrote {path}", highlight=False)


if __name__ == "__main__":  # pragma: no cover
    app()
