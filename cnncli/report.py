"""One self-contained HTML page per run or per sweep (``cnncli report``).

A run's page puts side by side what its folder holds: the outcome and evaluation
(per-class and averaged scores, confusion matrix, ROC curve, the most confident
mistakes), the learning curves, the training dynamics with what they say, the Table 5
summary, the config, the data and the environment. A sweep's page has the leaderboard,
every trial's learning curve on one plot, the metric against each key the sweep varied,
and a link to each trial's own page.

The page is plain HTML and CSS: pictures are PNGs embedded as ``data:`` URIs, so the one
file can be mailed or archived and opens without a network or a server. Nothing runs
in the page (no JavaScript).

Pictures the page shows are written to the folder too (``curves.png``, ``dynamics.png``,
``eval``'s pictures), so they can be opened on their own.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

from cnncli import runs
from cnncli.errors import CnnCliError, RunFolderError
from cnncli.yamlfiles import read as read_yaml

STYLE = """
body { font-family: -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #1d2330;
       max-width: 1180px; margin: 0 auto; padding: 24px 28px 60px; line-height: 1.45; background: #fff; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 34px 0 10px; padding-bottom: 4px; border-bottom: 2px solid #e3e7ef; }
h3 { font-size: 15px; margin: 18px 0 6px; }
.sub { color: #5b6475; margin: 0 0 16px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 14px 0; }
.card { border: 1px solid #dfe4ee; border-radius: 8px; padding: 10px 14px; min-width: 140px; background: #f8fafd; }
.card .k { font-size: 12px; color: #5b6475; text-transform: uppercase; letter-spacing: .04em; }
.card .v { font-size: 21px; font-weight: 600; }
.card .n { font-size: 12px; color: #5b6475; }
.status-completed { color: #19733a; } .status-failed { color: #b42318; } .status-interrupted { color: #b54708; }
table { border-collapse: collapse; margin: 8px 0 14px; font-size: 13.5px; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e6e9f0; text-align: right; vertical-align: top; }
th { background: #f1f4f9; font-weight: 600; }
td.l, th.l { text-align: left; }
tr:nth-child(even) td { background: #fafbfd; }
img { max-width: 100%; height: auto; border: 1px solid #eef1f6; border-radius: 4px; }
img.half { max-width: 560px; width: 100%; }
img.grid { max-width: 720px; width: 100%; }
.pair { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
.pair > div { flex: 1 1 420px; }
pre { background: #f6f8fb; border: 1px solid #e3e7ef; border-radius: 6px; padding: 10px 12px; font-size: 12.5px;
      overflow-x: auto; }
ul.findings li { margin: 3px 0; }
.note { color: #5b6475; font-size: 13px; }
a { color: #1f5fbf; }
"""


# --------------------------------------------------------------------------- HTML pieces
def esc(value) -> str:
    return html.escape(str(value), quote=True)


def image(path: Path, alt: str, size: str = "") -> str:
    """An <img> with the PNG embedded (no file needed beside the page); ``size``: a CSS
    class (``half``, ``grid``) for pictures that should not fill the page's width."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    css = f' class="{size}"' if size else ""
    return f'<img{css} src="data:image/png;base64,{data}" alt="{esc(alt)}">'


def table(header: list[str], rows: list[list], left: int = 1) -> str:
    """A table; the first ``left`` columns are text (left-aligned), the rest figures."""
    def cells(values, tag):
        return "".join(f'<{tag}{" class=l" if i < left else ""}>{v}</{tag}>' for i, v in enumerate(values))
    body = "".join(f"<tr>{cells(r, 'td')}</tr>" for r in rows)
    return f"<table><tr>{cells([esc(h) for h in header], 'th')}</tr>{body}</table>"


def card(key: str, value: str, note: str = "") -> str:
    return (f'<div class="card"><div class="k">{esc(key)}</div><div class="v">{value}</div>'
            + (f'<div class="n">{esc(note)}</div>' if note else "") + "</div>")


def fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.{digits}f}" if 1e-3 <= abs(value) < 1e5 or value == 0 else f"{value:.3g}"
    return esc(value)


def page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>\n{body}\n"
            f'<p class="note">Written by cnncli {esc(_version())} (<code>cnncli report</code>).</p></body></html>\n')


def _version() -> str:
    import cnncli

    return cnncli.__version__


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


# --------------------------------------------------------------------------- a run
def dynamics_findings(rows: list[dict]) -> list[str]:
    """Plain sentences about the last record of a run's dynamics: where the delta became
    small, saturated and dead units, update-to-weight ratios far from 1e-3."""
    if not rows:
        return []
    last = rows[-1]
    layers = last["layers"]
    found = []
    deltas = [(l["layer"], l["label"], l["delta_norm"]) for l in layers if l.get("delta_norm")]
    if len(deltas) >= 2:
        (i0, label0, first), (il, labell, top) = deltas[0], deltas[-1]
        ratio = first / top
        how = ("vanishes toward the input" if ratio < 1e-2 else "shrinks toward the input" if ratio < 0.2
               else "explodes toward the input" if ratio > 1e2 else "grows toward the input" if ratio > 5
               else "keeps about its size from the output to the input")
        found.append(f"At step {last['step']} (epoch {last['epoch']}) the delta reaching layers[{i0}] {label0} is "
                     f"{ratio:.2g} times the one reaching layers[{il}] {labell}: the back-propagated signal {how}.")
    for layer in layers:
        act = layer.get("activation") or {}
        where = f"layers[{layer['layer']}] {layer['label']}"
        output_layer = layer is layers[-1]
        if act.get("saturated") is not None and act["saturated"] >= 0.1:
            found.append(f"{where}: {act['saturated']:.0%} of the outputs are within 1% of a bound (saturated), "
                         + ("that is, confident predictions (for the output layer; a loss computed from the "
                            "logits, such as yhat - y, keeps its gradient there)." if output_layer else
                            "where the derivative is nearly 0 and little delta passes back."))
        if act.get("dead") is not None and act["dead"] >= 0.1:
            found.append(f"{where}: {act['dead']:.0%} of the units are 0 for the whole batch (dead): no gradient "
                         "reaches their weights.")
        kernel = (layer.get("params") or {}).get("kernel") or {}
        ratio = kernel.get("update_ratio")
        if ratio is not None and (ratio > 1e-1 or ratio < 1e-4):
            found.append(f"{where}: one update moves the kernel by {ratio:.2g} of its norm ("
                         + ("large: the rate may be too high for it" if ratio > 1e-1
                            else "small: this layer learns slowly")
                         + "; about 1e-3 is usual).")
    return found


def dynamics_table(rows: list[dict]) -> str:
    first, last = rows[0], rows[-1]
    body = []
    for a, b in zip(first["layers"], last["layers"]):
        kernel_a = (a.get("params") or {}).get("kernel") or {}
        kernel_b = (b.get("params") or {}).get("kernel") or {}
        act = b.get("activation") or {}
        health = act.get("saturated") if act.get("saturated") is not None else act.get("dead")
        kind = "saturated" if act.get("saturated") is not None else "dead" if act.get("dead") is not None else ""
        body.append([f"{b['layer']}", esc(b["label"]), fmt(a.get("delta_norm")), fmt(b.get("delta_norm")),
                     fmt(kernel_b.get("grad_norm")), fmt(kernel_a.get("update_ratio")),
                     fmt(kernel_b.get("update_ratio")), fmt(act.get("mean"), 3) if act else "-",
                     fmt(act.get("std"), 3) if act else "-", f"{health:.1%} {kind}" if health is not None else "-"])
    header = ["#", "layer", f"delta, step {first['step']}", f"delta, step {last['step']}", "kernel gradient",
              f"update/weight, step {first['step']}", f"update/weight, step {last['step']}", "activation mean",
              "activation std", "saturated / dead"]
    return table(header, body, left=2)


def evaluation_section(report: dict) -> str:
    names = report["class_names"]
    parts = [f"<p>{esc(report.get('data', 'validation'))} split, {report['examples']} examples, "
             f"{esc(report.get('checkpoint', ''))} checkpoint"
             + (f" (epoch {report['epoch']})" if report.get("epoch") is not None else "") + ".</p>"]
    rows = [[esc(n), fmt(report["precision"][i]), fmt(report["recall"][i]), fmt(report["f1"][i]),
             str(report["support"][i])] for i, n in enumerate(names) if i < len(report["precision"])]
    for kind in ("macro", "weighted"):
        if kind in report:
            rows.append([f"<b>{kind} average</b>", *(fmt(report[kind][m]) for m in ("precision", "recall", "f1")),
                         str(sum(report["support"]))])
    parts.append(table(["class", "precision", "recall", "F1", "support"], rows))
    extra = [f"top-{k} accuracy {fmt(v)}" for k, v in (report.get("top_k_accuracy") or {}).items()]
    if report.get("roc_auc") is not None:
        extra.append(f"ROC AUC {fmt(report['roc_auc'])} ({esc(names[1] if len(names) > 1 else 'class 1')} positive)")
    if extra:
        parts.append("<p>" + " &middot; ".join(extra) + "</p>")
    return "".join(parts)


def run_report(run_dir: str | Path, out: str | Path | None = None, *, checkpoint: str | None = None,
               evaluate: bool = True) -> tuple[Path, list[str]]:
    """Write ``report.html`` (or ``out``) for a run; returns (the file, notes to say once).

    ``evaluate`` scores the checkpoint again (``cnncli eval``'s figures and pictures);
    when the data cannot be read any more, the page shows the run's last ``eval.json``.
    """
    from cnncli.errors import InputError
    from cnncli.experiment import evaluate_run, load_run, write_curves
    from cnncli.summary import summarize
    from cnncli.visualize import dynamics_png, kernels_png

    run_dir = runs.resolve_run_dir(run_dir)
    out = Path(out) if out is not None else run_dir / "report.html"
    notes: list[str] = []
    status = runs.read_status(run_dir)
    config = read_yaml(run_dir / "config.yaml")
    checkpoint = checkpoint or (config.get("eval") or {}).get("checkpoint", "best")
    history = runs.read_metrics(run_dir)
    dynamics = runs.read_dynamics(run_dir)
    network = None
    try:
        _, network, _, _, _ = load_run(run_dir, checkpoint)
    except InputError as err:
        notes.append(f"no network picture or summary: {err}")
    evaluation = None
    if evaluate and network is not None:
        try:
            evaluation = evaluate_run(run_dir, checkpoint=checkpoint)
        except InputError as err:
            notes.append(f"the evaluation was not run again ({err}); showing the run's eval.json")
    if evaluation is None:
        evaluation = _json(run_dir / f"eval-{checkpoint}.json") or _json(run_dir / "eval.json") or None

    name = run_dir.name
    state = status.get("status", "unknown")
    best = status.get("best") or {}
    body = [f"<h1>{esc(config.get('name', name))}</h1>",
            f'<p class="sub">run folder <code>{esc(run_dir)}</code></p><div class="cards">',
            card("status", f'<span class="status-{esc(state)}">{esc(state)}</span>',
                 f"{len(history)} epochs, {status.get('step', 0)} steps")]
    if best:
        monitor = status.get("monitor", "val_loss")
        body.append(card(f"best epoch ({monitor})", str(status.get("best_epoch")),
                         f"val_accuracy {fmt(best.get('val_accuracy'))}, val_loss {fmt(best.get('val_loss'))}"))
    if evaluation:
        body.append(card(f"accuracy ({evaluation.get('data', 'validation')})", fmt(evaluation["accuracy"]),
                         f"loss {fmt(evaluation['loss'])}, {evaluation['examples']} examples"))
        if evaluation.get("roc_auc") is not None:
            body.append(card("ROC AUC", fmt(evaluation["roc_auc"])))
    optimizer = config.get("optimizer") or {}
    body.append(card("optimizer", esc(optimizer.get("name", "?")), f"lr {optimizer.get('lr')}"))
    if history:
        body.append(card("training time", f"{sum(r['seconds'] for r in history):.1f} s",
                         f"{history[-1]['images_per_second']:,.0f} images/s in the last epoch"))
    body.append("</div>")
    if status.get("reason"):
        body.append(f"<p>{esc(status['reason'])}</p>")

    if evaluation:
        body.append("<h2>Evaluation</h2>" + evaluation_section(evaluation))
        pictures = [p for p in ("confusion.png", "roc.png") if (run_dir / p).is_file()]
        if pictures:
            body.append('<div class="pair">' + "".join(
                f"<div>{image(run_dir / p, p, 'half')}</div>" for p in pictures) + "</div>")
        if (run_dir / "misclassified.png").is_file():
            body.append("<h3>The most confident mistakes</h3>" + image(run_dir / "misclassified.png",
                                                                       "misclassified examples", "grid"))

    body.append("<h2>Learning curves</h2>")
    if history:
        write_curves(run_dir, config.get("optimizer") or {})
        body.append(image(run_dir / "curves.png", "loss and accuracy against epoch"))
        body.append(table(["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"],
                          [[str(r["epoch"]), fmt(r["loss"]), fmt(r["accuracy"]), fmt(r.get("val_loss")),
                            fmt(r.get("val_accuracy")), fmt(r.get("lr"), 6), f"{r['seconds']:.1f}"]
                           for r in history]))
    else:
        body.append('<p class="note">No epoch finished.</p>')

    body.append("<h2>Training dynamics</h2>")
    if dynamics:
        dynamics_png([(name, dynamics)], run_dir / "dynamics.png")
        findings = dynamics_findings(dynamics)
        if findings:
            body.append('<ul class="findings">' + "".join(f"<li>{esc(f)}</li>" for f in findings) + "</ul>")
        body.append(image(run_dir / "dynamics.png", "training dynamics per layer"))
        body.append("<p class=note>delta: the norm of dL/da that reaches each layer's output; update/weight: "
                    "||W<sub>t+1</sub> - W<sub>t</sub>|| / ||W<sub>t</sub>|| of one step; saturated: tanh or "
                    "sigmoid outputs within 1% of a bound; dead: relu units 0 for the whole batch. Each record "
                    "is one training batch (see docs/MATH.md, training dynamics).</p>")
        body.append(dynamics_table(dynamics))
    else:
        body.append('<p class="note">No dynamics.jsonl: the run was made before cnncli recorded training dynamics, '
                    "or with <code>train.dynamics: false</code>.</p>")

    if network is not None:
        body.append("<h2>Network (the paper's Table 5)</h2>")
        s = summarize(network)
        body.append(table(["#", "layer", "output", "calculation", "parameters"],
                          [[str(r.index), esc(r.layer), esc("x".join(map(str, r.output_shape))),
                            esc(r.calculation), f"{r.params:,}"] for r in s.rows]
                          + [["", "<b>total</b>", "", "", f"<b>{s.params:,}</b>"]], left=4))
        try:
            kernels_png(network, run_dir / "kernels.png")
            body.append("<h3>First convolution's kernels</h3>" + image(run_dir / "kernels.png", "kernels", "half"))
        except ValueError:
            pass

    body.append("<h2>Configuration</h2><pre>" + esc((run_dir / "config.yaml").read_text()) + "</pre>")
    data = _json(run_dir / "data.json")
    if data:
        shown = {k: v for k, v in data.items() if k not in ("skipped",)}
        body.append("<h2>Data</h2><pre>" + esc(json.dumps(shown, indent=2)) + "</pre>")
    env = _json(run_dir / "env.json")
    if env:
        body.append("<h2>Environment</h2>" + table(["", "value"], [[esc(k), esc(json.dumps(v) if isinstance(
            v, (dict, list)) else v)] for k, v in env.items()], left=2))
    runs.atomic_write_text(out, page(f"cnncli run {name}", "\n".join(body)))
    return out, notes


# --------------------------------------------------------------------------- a sweep
def sweep_report(sweep_dir: str | Path, out: str | Path | None = None, *,
                 trial_reports: bool = True) -> tuple[Path, list[str]]:
    """Write ``report.html`` (or ``out``) for a sweep folder, and each trial's own page."""
    from cnncli.sweep import Sweep
    from cnncli.visualize import metric_by_key_png, sweep_curves_png

    sweep = Sweep.open(sweep_dir)
    folder = sweep.folder
    out = Path(out) if out is not None else folder / "report.html"
    notes: list[str] = []
    metric = sweep.spec.metric
    varying = sweep.varying_keys()
    links, series = {}, []
    for i in range(len(sweep.spec.trials)):
        record = sweep.records.get(i, {})
        trial_dir = folder / record.get("path", f"trial-{i:03d}")
        if not (trial_dir / "config.yaml").is_file():
            continue
        rows = runs.read_metrics(trial_dir)
        if rows:
            label = f"trial-{i:03d}" + "".join(f", {k}={sweep.spec.trials[i].get(k)}" for k in varying)
            series.append((label, rows))
        if trial_reports:
            try:
                page_path, trial_notes = run_report(trial_dir)
                notes += [f"trial-{i:03d}: {n}" for n in trial_notes]
            except CnnCliError as err:
                notes.append(f"trial-{i:03d}: no report ({err})")
                continue
        if (trial_dir / "report.html").is_file():
            links[i] = (trial_dir / "report.html").relative_to(folder).as_posix()
    header, body_rows = sweep.leaderboard_rows()
    ranked = sweep.ranked()
    rows = []
    for row, i in zip(body_rows, ranked):
        cells = [esc(c) for c in row]
        if i in links:
            cells[1] = f'<a href="{esc(links[i])}">{cells[1]}</a>'
        rows.append(cells)
    best = sweep.best_trial()
    states = [r.get("status") for r in sweep.records.values()]
    body = [f"<h1>Sweep {esc(sweep.spec.name)}</h1>",
            f'<p class="sub">sweep folder <code>{esc(folder)}</code>; base config <code>{esc(sweep.spec.base)}</code>;'
            f" ranked by {esc(metric)} ({esc(sweep.spec.mode)})</p>", '<div class="cards">',
            card("trials", str(len(sweep.spec.trials)),
                 f"{states.count('completed')} completed, {states.count('failed')} failed"),
            card("varying", str(len(varying)), ", ".join(varying))]
    if best is not None:
        score = sweep.score(sweep.records[best])
        body.append(card(f"best {metric}", fmt(score), f"trial-{best:03d}"))
    body.append("</div><h2>Leaderboard</h2>" + table(header, rows, left=2 + len(varying)))
    if series:
        body.append("<h2>Learning curves of every trial</h2>")
        sweep_curves_png(series, metric, folder / "curves.png")
        body.append(image(folder / "curves.png", "learning curves of every trial"))
    scored = [(sweep.spec.trials[i], sweep.score(sweep.records.get(i, {}))) for i in range(len(sweep.spec.trials))]
    scored = [(t, s) for t, s in scored if s is not None]
    if varying and scored:
        body.append(f"<h2>{esc(metric)} against each varying key</h2>")
        metric_by_key_png(scored, varying, f"best {metric}", folder / "by_key.png")
        body.append(image(folder / "by_key.png", f"{metric} against each key"))
    failed = [(i, r) for i, r in sorted(sweep.records.items()) if r.get("status") == "failed"]
    if failed:
        body.append("<h2>Failed trials</h2><ul>" + "".join(
            f"<li>trial-{i:03d}: {esc(r.get('reason'))}</li>" for i, r in failed) + "</ul>")
    body.append("<h2>Sweep file</h2><pre>" + esc((folder / "sweep.yaml").read_text()) + "</pre>")
    runs.atomic_write_text(out, page(f"cnncli sweep {sweep.spec.name}", "\n".join(body)))
    return out, notes


def write_report(target: str | Path, out: str | Path | None = None, **options) -> tuple[Path, list[str]]:
    """``cnncli report``: a sweep folder (it has sweep.yaml) or a run folder."""
    path = Path(target)
    if (path / "sweep.yaml").is_file():
        return sweep_report(path, out, **{k: v for k, v in options.items() if k == "trial_reports"})
    if path.is_dir() and not ((path / "config.yaml").is_file() and (path / "status.json").is_file()):
        raise RunFolderError(f"{path}: neither a run folder (config.yaml and status.json) nor a sweep folder "
                             "(sweep.yaml)")
    return run_report(path, out, **{k: v for k, v in options.items() if k in ("checkpoint", "evaluate")})
