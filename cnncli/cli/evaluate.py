"""Using a trained run: ``eval`` (loss, accuracy, confusion matrix, per-class scores) and
``predict`` (the class of image files)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from cnncli.cli.common import CHECKPOINT, RUNS_DIR, console, say, table, user_errors, warn
from cnncli.errors import CnnCliError


def print_report(path: Path, checkpoint: str, report: dict) -> None:
    names = report["class_names"]
    data = report["data"]
    what = f"the {data} split" if data in ("test", "validation", "train") else data
    say(f"{path} ({checkpoint} checkpoint, epoch {report['epoch']}) on {what}: {report['examples']} examples")
    if data == "validation" and checkpoint == "best":
        say("(the validation split chose this checkpoint, so its scores here are optimistic; a test split, "
            "data.test_path, gives an unbiased figure)")
    elif data == "train":
        say("(the training split: these examples were learned; compare with --split validation)")
    say(f"loss {report['loss']:.4f}   accuracy {report['accuracy']:.4f}")
    console.print(table("confusion matrix (rows: true, columns: predicted)",
                        [("", "left")] + [(n, "right") for n in names],
                        [[n, *(str(v) for v in row)] for n, row in zip(names, report["confusion_matrix"])]))
    console.print(table("per class", [("class", "left")] + [(c, "right") for c in ("precision", "recall", "F1",
                                                                                      "support")],
                        [[n, f"{report['precision'][i]:.4f}", f"{report['recall'][i]:.4f}", f"{report['f1'][i]:.4f}",
                          str(report["support"][i])] for i, n in enumerate(names)]))
    averages = [[kind, *(f"{report[kind][m]:.4f}" for m in ("precision", "recall", "f1"))]
                for kind in ("macro", "weighted")]
    console.print(table("averages", [("", "left")] + [(c, "right") for c in ("precision", "recall", "F1")], averages))
    extra = [f"top-{k} accuracy {v:.4f}" for k, v in report.get("top_k_accuracy", {}).items()]
    if report.get("roc_auc") is not None:
        extra.append(f"ROC AUC {report['roc_auc']:.4f} ({names[1] if len(names) > 1 else 'class 1'} positive)")
    if extra:
        say("   ".join(extra))
    say(f"written to {path / report.get('file', 'eval.json')}"
        + "".join(f", {path / p}" for p in report.get("pictures", [])))


@user_errors
def eval_(
    run_dir: Optional[Path] = typer.Argument(None, help="Run folder (default: the most recent under runs/)."),
    checkpoint: Optional[str] = CHECKPOINT,
    data_path: Optional[Path] = typer.Option(None, "--data-path", help="Evaluate on other data of the same kind."),
    split: Optional[str] = typer.Option(None, "--split", help="test, validation or train, as training split the "
                                                             "data (default: test when the run has a test split, "
                                                             "else validation)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    runs_dir: Path = RUNS_DIR,
) -> None:
    """Evaluate a run: loss, accuracy, confusion matrix, per-class precision/recall/F1, on
    the test split when the run has one, else the validation split (--split, --data-path)."""
    from cnncli.experiment import evaluate_run
    from cnncli.experiment import run_checkpoint
    from cnncli.runs import checkpoint_name, resolve_run_dir

    if checkpoint is not None:
        checkpoint_name(checkpoint)  # best or last, checked before anything is read
    path = resolve_run_dir(run_dir, runs_dir)
    checkpoint = run_checkpoint(path, checkpoint)
    report = evaluate_run(path, checkpoint=checkpoint, data_path=str(data_path) if data_path else None, split=split)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print_report(path, checkpoint, report)


@user_errors
def predict(
    paths: List[Path] = typer.Argument(..., help="[RUN_DIR] IMAGE...: a run folder (default: the most recent) "
                                            "and image files, folders of images or glob patterns."),
    checkpoint: Optional[str] = CHECKPOINT,
    out: Optional[Path] = typer.Option(None, "--out", help="Write a CSV: path, class, probability and one "
                                                           "probability column per class."),
    strict: bool = typer.Option(False, "--strict", help="Refuse a file that is not a readable image (default: "
                                                        "skip it and list it)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    runs_dir: Path = RUNS_DIR,
) -> None:
    """Class and probability for each image (files, folders, or glob patterns such as 'shots/*.jpg')."""
    from cnncli.experiment import predict as run_predict
    from cnncli.experiment import predictions_csv
    from cnncli.experiment import run_checkpoint
    from cnncli.runs import atomic_write_text, checkpoint_name, resolve_run_dir

    if checkpoint is not None:
        checkpoint_name(checkpoint)
    if out is not None and out.suffix.lower() != ".csv":
        raise CnnCliError(f"--out: expected a .csv file; got {out}")
    given = paths[0] if paths and (paths[0] / "config.yaml").is_file() else None
    images = paths[1:] if given is not None else paths
    run_dir = resolve_run_dir(given, runs_dir)
    checkpoint = run_checkpoint(run_dir, checkpoint)
    if not images:
        raise CnnCliError("predict: give at least one image file, folder or pattern")
    found = run_predict(run_dir, [str(p) for p in images], checkpoint=checkpoint, strict=strict)
    for path, why in found.skipped:
        say(f"skipped {path}: not a readable image ({why})", error=True)
    if found.animated:
        from cnncli.data.images import animated_note

        warn(animated_note(found.animated))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, predictions_csv(found))
    if as_json:
        print(json.dumps(found.rows, indent=2))
    else:
        console.print(table(f"{run_dir} ({checkpoint})", [("image", "left"), ("class", "left"),
                                                          ("probability", "right")],
                            [[r["image"], r["class"], f"{r['probability']:.4f}"] for r in found.rows]))
    if found.skipped:
        say(f"{len(found.rows)} images predicted, {len(found.skipped)} files skipped (--strict refuses them)",
            error=True)
    if out is not None:
        say(f"wrote {out}", error=as_json)


def add_commands(app: typer.Typer) -> None:
    app.command("eval")(eval_)
    app.command()(predict)
