"""Commands that look inside a network without training it: ``summary`` (the paper's
Table 5), ``explain`` (the equations), ``gradcheck`` (the gradients proven) and
``components`` (what can be named in a config, plugins included)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table
from rich.text import Text

from cnncli.cli.common import RUNS_DIR, SET, config_path, console, say, table, user_errors
from cnncli.errors import CnnCliError


def summary_table(summary, flops: bool = True) -> Table:
    """Table 5 as a rich table, with the totals and a caption of the memory and FLOPs."""
    from cnncli.summary import calculation_text, flops_text, human_bytes, human_flops, shape_text, undeclared_note

    columns = [("#", "right"), ("layer", "left"), ("output", "left"), ("calculation", "left"),
               ("weights", "right"), ("biases", "right"), ("parameters", "right"), ("forward FLOPs", "right")]
    columns += [("backward FLOPs", "right")] if flops else []
    rows = [[str(r.index), r.layer, shape_text(r.output_shape), calculation_text(r), f"{r.weights:,}",
             f"{r.biases:,}", f"{r.params:,}", flops_text(r.flops), *([flops_text(r.backward_flops)] if flops else [])]
            for r in summary.rows]
    out = table(f"input {shape_text(summary.input_shape)} ({summary.dtype})", columns, rows)
    out.add_section()
    out.add_row("", "total", "", "", f"{summary.weights:,}", f"{summary.biases:,}", f"{summary.params:,}",
                f"{summary.flops:,}", *([f"{summary.backward_flops:,}"] if flops else []), style="bold")
    caption = (f"{summary.params:,} parameters = {summary.weights:,} weights + {summary.biases:,} biases "
               f"({human_bytes(summary.param_bytes)})"
               + (f", {summary.trainable_text()}" if summary.non_trainable else "")
               + f"; activations {human_bytes(summary.activation_bytes)} "
               f"per example; forward {human_flops(summary.flops)} per example")
    if flops and summary.batch_size:
        update = ("n/a (the optimizer declares none)" if summary.update_flops is None
                  else human_flops(summary.update_flops))
        caption += (f"; backward {human_flops(summary.backward_flops)}; one {summary.optimizer} update "
                    f"{update} (at batch {summary.batch_size}: a training step is "
                    f"{human_flops(int(summary.step_flops_per_example))} per example)")
    out.caption = caption + (f". {undeclared_note(summary)}" if summary.undeclared else "")
    out.caption_justify = "left"
    return out


@user_errors
def summary(
    target: Optional[Path] = typer.Argument(None, help="A config file or a run folder (default: the most recent run)."),
    fmt: str = typer.Option("table", "--format", "-f", help="table, markdown, csv or json."),
    flops: bool = typer.Option(True, "--flops/--no-flops", help="Backward and update FLOPs of a training step."),
    set_: List[str] = SET,
    runs_dir: Path = RUNS_DIR,
) -> None:
    """The paper's Table 5 for a network: shapes, parameter arithmetic, FLOPs, memory."""
    from cnncli.config import build_network, load_config
    from cnncli.runs import resolve_run_dir
    from cnncli.summary import SOURCES, summarize, to_csv, to_json, to_markdown

    if fmt not in ("table", "markdown", "csv", "json"):
        raise CnnCliError(f"--format: expected table, markdown, csv or json; got {fmt!r}")
    if target is None or target.is_dir():
        target = resolve_run_dir(target, runs_dir) / "config.yaml"
    config = load_config(str(target), set_, check_paths=False, check_memory=False)
    network = build_network(config.values, allocate=False)  # shapes only: any size works
    s = summarize(network, config["optimizer"], config["train"]["batch_size"])
    if fmt != "table":
        print({"markdown": to_markdown, "csv": to_csv, "json": to_json}[fmt](s), end="" if fmt == "csv" else "\n")
        return
    console.print(summary_table(s, flops))
    if flops:
        console.print(SOURCES, style="dim", highlight=False)


@user_errors
def explain(
    config: Path = typer.Argument(..., help="Experiment config (YAML), or a run folder.", dir_okay=True),
    layer: Optional[int] = typer.Option(None, "--layer", "-l", help="Only this layer (0-based index)."),
    fmt: str = typer.Option("text", "--format", "-f", help="text, markdown or latex."),
    set_: List[str] = SET,
) -> None:
    """The forward and backward equations of every layer with this network's sizes,
    the loss and its derivative, the optimizer's update and the FLOPs."""
    from cnncli.config import build_network, load_config
    from cnncli.explain import explain as make, render_latex, render_markdown, render_text

    render = {"text": render_text, "markdown": render_markdown, "latex": render_latex}.get(fmt)
    if render is None:
        raise CnnCliError(f"--format: expected text, markdown or latex; got {fmt!r}")
    config = config_path(config)
    cfg = load_config(str(config), set_, check_paths=False, check_memory=False)
    network = build_network(cfg.values, allocate=False)
    if layer is not None and not 0 <= layer < len(network.layers):
        raise CnnCliError(f"--layer: expected 0..{len(network.layers) - 1}; got {layer}")
    print(render(make(cfg, network, layer), f"{cfg['name']}: the mathematics of {config}"))


def gradcheck_table(rows: list[dict], tolerance: float, title: str) -> Table:
    """One row per layer: what was checked, the largest local and end-to-end errors."""
    columns = [("#", "right"), ("layer", "left"), ("checked", "left"), ("entries", "right"), ("kinks", "right"),
               ("local error", "right"), ("end-to-end error", "right"), ("", "left")]
    body = []
    for r in rows:
        names = [f"{k} (local)" for k in r["local"]] + list(r["end_to_end"])
        local, end = max(r["local"].values(), default=0.0), max(r["end_to_end"].values(), default=0.0)
        body.append(["" if r["index"] is None else str(r["index"]), r["layer"], ", ".join(names) or "-",
                     str(r["entries"]), str(r["kinks"]), f"{local:.2e}" if r["local"] else "-",
                     f"{end:.2e}" if r["end_to_end"] else "-",
                     Text.from_markup("[green]pass[/]" if r["error"] < tolerance else "[bold red]FAIL[/]")])
    return table(title, columns, body)


def gradcheck_verdict(rows: list[dict], tolerance: float) -> str | None:
    """None when every layer passes; else which backward is broken and what it affects."""
    failed = [r for r in rows if r["error"] >= tolerance]
    if not failed:
        return None
    broken = [r for r in rows if max(r["local"].values(), default=0.0) >= tolerance]
    name = (lambda r: f"layers[{r['index']}] ({r['layer']})" if r["index"] is not None else "the input")
    if not broken:
        return f"gradient check failed (tolerance {tolerance:g}) end to end at {', '.join(map(name, failed))}"
    message = (f"gradient check failed (tolerance {tolerance:g}): broken backward in "
               f"{', '.join(map(name, broken))}")
    affected = [name(r) for r in failed if r not in broken]
    return message + (f"; affected through it: {', '.join(affected)}" if affected else "")


@user_errors
def gradcheck(
    config: Path = typer.Argument(..., help="Experiment config (YAML), or a run folder."),
    batch: int = typer.Option(4, "--batch", "-b", min=1, help="Examples in the checked batch."),
    seed: int = typer.Option(0, "--seed", help="Seed of the weights, the sampled entries and random data."),
    entries: int = typer.Option(20, "--entries", min=1, help="Entries checked per tensor (sampled when larger)."),
    tolerance: float = typer.Option(1e-6, "--tolerance", help="Largest relative error that passes."),
    random_inputs: bool = typer.Option(False, "--random", help="Random inputs and labels instead of examples of "
                                                               "the config's data (which is then not read)."),
    set_: List[str] = SET,
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Its .cache holds decoded images."),
) -> None:
    """Compare every analytic gradient with central differences, in float64, per layer.

    The inputs are a few examples of the config's data; random ones with --random, or
    when the data cannot be read (the "inputs:" line says which, and why). Exit code 1
    when any layer fails.
    """
    from cnncli.builder import build
    from cnncli.config import load_config
    from cnncli.experiment import gradcheck_batch
    from cnncli.nn.gradcheck import check_network

    config = config_path(config)
    cfg = load_config(str(config), [*set_, "train.dtype=float64", f"seed={seed}"], check_paths=False)
    network, loss, _ = build(cfg)
    x, y, source = gradcheck_batch(cfg, network, loss, batch, seed, runs_dir / ".cache", random_inputs)
    # On its own line, not in the table's title: random inputs the user did not ask for are
    # worth seeing (the check still proves the gradients, on other inputs than the data's).
    say(f"inputs: {source}")
    rows = check_network(network, loss, x, y, max_entries=entries, seed=seed)
    console.print(gradcheck_table(rows, tolerance, f"gradient check of {config}: float64, central "
                                                   "differences (h = 1e-6)"))
    say("local: the layer alone on its input with a random upstream gradient (dx and parameters); end to end: the "
        "loss's gradient with respect to the layer's parameters (or the input) through the whole network; kinks: "
        "entries left out because the step crossed a ReLU kink or a pooling tie.", style="dim")
    verdict = gradcheck_verdict(rows, tolerance)
    if verdict is not None:
        say(verdict, error=True)
        raise typer.Exit(1)
    say(f"all gradients agree to better than {tolerance:g}")


@user_errors
def components(
    kind: Optional[str] = typer.Argument(None, help="layer, activation, loss, optimizer, schedule or initializer "
                                                    "(default: all)."),
    config: Optional[Path] = typer.Option(None, "--config", help="Load this config's plugins first."),
) -> None:
    """What a config can name: every registered component, with its keys and origin."""
    from cnncli.components import describe_components

    if config is not None:
        from cnncli import plugins
        from cnncli.yamlfiles import read

        raw = read(config_path(config))
        plugins.resolve((raw or {}).get("plugins") if isinstance(raw, dict) else None, config_path(config).parent)
    console.print(table("components" + (f" ({kind})" if kind else ""),
                        [("kind", "left"), ("name", "left"), ("keys", "left"), ("from", "left"),
                         ("description", "left")], describe_components(kind)))


def add_commands(app: typer.Typer) -> None:
    for command in (summary, explain, gradcheck, components):
        app.command()(command)
