"""Seeing a run: ``cnncli report`` (run and sweep pages), ``plot dynamics``, ``compare
--dynamics``, eval's pictures and richer scores, ``predict`` on folders and patterns."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import shutil
import subprocess

import pytest
import yaml
from PIL import Image

from tests.helpers import TINY, assert_ok, assert_user_error, invoke

PNG = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    cfg = root / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "data": {**TINY["data"], "num_classes": 3, "num_samples": 240},
                                   "model": {**TINY["model"], "layers": TINY["model"]["layers"][:-1] + [
                                       {"type": "dense", "units": 3, "activation": "softmax"}]},
                                   "train": {"epochs": 3, "batch_size": 32}}))
    assert_ok(invoke("train", cfg, "--runs-dir", root / "runs", "-q"))
    (run,) = [p for p in (root / "runs").iterdir() if not p.name.startswith(".")]
    return root, run


def embedded_pictures(page: str) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(data))) for data in PNG.findall(page)]


# --------------------------------------------------------------------------- report
def test_a_run_report_is_one_self_contained_page_with_every_section(trained):
    _, run = trained
    res = invoke("report", run)
    assert_ok(res)
    assert res.stdout.strip() == f"wrote {run / 'report.html'}"
    page = (run / "report.html").read_text()
    for heading in ("Evaluation", "The most confident mistakes", "Learning curves", "Training dynamics",
                    "Network (the paper's Table 5)", "Configuration", "Data", "Environment"):
        assert f">{heading}<" in page, heading
    assert "[(3x3x3)+1]x4" in page  # Table 5's calculation
    assert "macro average" in page and "top-2 accuracy" in page
    pictures = embedded_pictures(page)
    # confusion, misclassified, curves, dynamics, kernels: each a real PNG of a sensible size
    assert len(pictures) == 5 and all(p.format == "PNG" and p.size[0] >= 150 for p in pictures)
    # nothing to fetch, nothing that runs
    assert "<script" not in page.lower() and not re.search(r'(src|href)="(https?:)?//', page)
    for name in ("curves.png", "dynamics.png", "confusion.png", "misclassified.png", "eval.json", "eval-best.json"):
        assert (run / name).is_file(), name


def test_a_binary_run_report_shows_the_roc_curve_and_its_area(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    assert_ok(invoke("train", cfg, "--runs-dir", tmp_path / "runs", "-q"))
    (run,) = [p for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")]
    res = invoke("eval", run)
    assert_ok(res)
    report = json.loads((run / "eval-best.json").read_text())
    assert report["roc_auc"] is not None and "ROC AUC" in res.stdout
    assert report["pictures"] == ["confusion.png", "roc.png", "misclassified.png"]
    assert_ok(invoke("report", run, "--out", tmp_path / "page.html"))
    page = (tmp_path / "page.html").read_text()
    assert "ROC AUC" in page and len(embedded_pictures(page)) == 6


def test_report_without_evaluating_again_shows_the_runs_eval_json(trained, tmp_path):
    _, run = trained
    copy = tmp_path / run.name
    shutil.copytree(run, copy)
    for name in ("eval.json", "eval-best.json", "confusion.png", "misclassified.png"):
        (copy / name).unlink(missing_ok=True)
    assert_ok(invoke("report", copy, "--no-eval"))
    page = (copy / "report.html").read_text()
    assert ">Evaluation<" not in page and ">Training dynamics<" in page


def test_a_run_without_dynamics_says_so_in_its_report_and_plot_refuses_in_one_line(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], "dynamics": False}}))
    assert_ok(invoke("train", cfg, "--runs-dir", tmp_path / "runs", "-q"))
    (run,) = [p for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")]
    assert not (run / "dynamics.jsonl").exists()
    assert_user_error(invoke("plot", "dynamics", run), "no dynamics.jsonl", "train.dynamics: false")
    assert not (run / "dynamics.png").exists()
    assert_ok(invoke("report", run))
    assert "No dynamics.jsonl" in (run / "report.html").read_text()


def test_report_on_a_folder_that_is_neither_a_run_nor_a_sweep(tmp_path):
    assert_user_error(invoke("report", tmp_path), str(tmp_path), "neither a run folder", "sweep folder")
    assert_user_error(invoke("report", tmp_path / "missing"), "no such folder")
    assert_user_error(invoke("report", tmp_path, "--out", tmp_path / "page.txt"), "--out", ".html")
    assert list(tmp_path.iterdir()) == []


def test_a_sweep_report_ranks_overlays_and_links_every_trials_page(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    assert_ok(invoke("sweep", cfg, "--grid", "optimizer.lr=0.001,0.01,0.1", "--runs-dir", tmp_path / "runs"))
    (sweep,) = (tmp_path / "runs" / "sweeps").iterdir()
    res = invoke("report", sweep)
    assert_ok(res)
    page = (sweep / "report.html").read_text()
    assert ">Leaderboard<" in page and ">Learning curves of every trial<" in page
    assert "against each varying key" in page
    links = re.findall(r'<a href="([^"]+)">trial-\d{3}</a>', page)
    assert sorted(links) == [f"trial-{i:03d}/report.html" for i in range(3)]
    for link in links:
        assert ">Training dynamics<" in (sweep / link).read_text()
    assert len(embedded_pictures(page)) == 2


# ------------------------------------------------------------------ dynamics pictures
def test_plot_dynamics_writes_into_the_run_and_compare_overlays_two_runs(trained, tmp_path):
    root, run = trained
    res = invoke("plot", "dynamics", run)
    assert_ok(res)
    assert res.stdout.strip() == f"wrote {run / 'dynamics.png'}"
    assert Image.open(run / "dynamics.png").size == (1600, 850)
    cfg = tmp_path / "sgd.yaml"
    spec = yaml.safe_load((run / "config.yaml").read_text())
    spec.update(name="sgd", optimizer={"name": "sgd", "lr": 0.05})
    cfg.write_text(yaml.safe_dump(spec))
    assert_ok(invoke("train", cfg, "--runs-dir", tmp_path / "runs", "-q"))
    (other,) = [p for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")]
    res = invoke("compare", run, other, "--dynamics", "--out", tmp_path / "both.png")
    assert_ok(res)
    assert "optimizer.name" in res.stdout and f"wrote {tmp_path / 'both.png'}" in res.stdout
    assert Image.open(tmp_path / "both.png").size == (1600, 850)
    assert_user_error(invoke("plot", "dynamics", run, "--out", tmp_path / "x.jpg"), "--out", ".png")
    assert_user_error(invoke("plot", "histogram"), "activation, loss or dynamics")


# ------------------------------------------------------------------ predict
@pytest.fixture()
def images(tmp_path):
    folder = tmp_path / "shots"
    (folder / "more").mkdir(parents=True)
    Image.new("RGB", (8, 8), (200, 10, 10)).save(folder / "a.png")
    Image.new("RGB", (12, 9), (10, 200, 10)).save(folder / "more" / "b.jpg")
    (folder / "notes.txt").write_text("not an image")
    (folder / ".hidden.png").write_text("ignored")
    return folder


def test_predict_reads_folders_and_patterns_and_writes_a_csv(trained, images, tmp_path):
    _, run = trained
    out = tmp_path / "predictions.csv"
    res = invoke("predict", run, images, "--out", out)
    assert_ok(res)
    assert "skipped" in res.stderr and "notes.txt" in res.stderr and ".hidden" not in res.stderr
    rows = list(csv.DictReader(out.open()))
    assert [r["path"] for r in rows] == [str(images / "a.png"), str(images / "more" / "b.jpg")]
    names = ["circle", "square", "triangle"]
    assert list(rows[0]) == ["path", "class", "probability", *names]
    for r in rows:
        probs = [float(r[n]) for n in names]
        assert abs(sum(probs) - 1) < 1e-4 and r["class"] == names[probs.index(max(probs))]
        assert float(r["probability"]) == pytest.approx(max(probs), abs=1e-5)
    res = invoke("predict", run, str(images / "**" / "*.jpg"), "--json")
    assert_ok(res)
    assert [r["image"] for r in json.loads(res.stdout)] == [str(images / "more" / "b.jpg")]


def test_predict_refuses_what_it_cannot_read_in_one_line(trained, images, tmp_path):
    _, run = trained
    assert_user_error(invoke("predict", run, images, "--strict"), "notes.txt", "not a readable image")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no pictures here")
    assert_user_error(invoke("predict", run, empty), "empty", "no image file")
    assert_user_error(invoke("predict", run, str(tmp_path / "*.webp")), "matches no file")
    assert_user_error(invoke("predict", run, images / "a.png", "--out", tmp_path / "x.json"), "--out", ".csv")
    assert not (tmp_path / "x.json").exists()


# ------------------------------------------------------------------ the page in a browser
@pytest.mark.slow
def test_the_report_renders_in_a_real_browser_with_its_pictures(trained, tmp_path):
    """Headless Chromium loads the page and draws it: the screenshot holds the pictures'
    colours (matplotlib's blue lines, the confusion matrix's blues), not only text."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium here (.ci/run installs Debian's chromium)")
    _, run = trained
    assert_ok(invoke("report", run))
    page = run / "report.html"
    shot = tmp_path / "shot.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={tmp_path}/p"]
    dom = subprocess.run([browser, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120)
    assert "Training dynamics" in dom.stdout and dom.stdout.count("data:image/png") == 5
    subprocess.run([browser, *flags, "--window-size=1280,6000", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    pixels = Image.open(shot).convert("RGB")
    colours = pixels.getcolors(maxcolors=1 << 20)
    assert len(colours) > 2000  # text alone gives a few hundred greys
    blue = sum(n for n, (r, g, b) in colours if abs(r - 31) < 12 and abs(g - 119) < 12 and abs(b - 180) < 12)
    assert blue > 500, blue  # the curves' and markers' tab:blue


def test_train_report_true_ends_the_run_with_its_page(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], "report": True}}))
    res = invoke("train", cfg, "--runs-dir", tmp_path / "runs", "-q")
    assert_ok(res)
    (run,) = [p for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")]
    assert f"report: {run / 'report.html'}" in res.stdout
    assert ">Training dynamics<" in (run / "report.html").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], "report": "yes"}}))
    assert_user_error(invoke("train", bad, "--runs-dir", tmp_path / "other"), "train.report", "true or false")


def test_dynamics_findings_say_where_the_delta_vanished_and_which_units_are_dead():
    from cnncli.report import dynamics_findings

    def layer(i, label, delta, **extra):
        return {"layer": i, "label": label, "delta_norm": delta, **extra}

    rows = [{"epoch": 3, "step": 30, "layers": [
        layer(0, "dense (sigmoid)", 1e-7, activation={"name": "sigmoid", "mean": 0.5, "std": 0.1, "saturated": 0.4,
                                                      "dead": None},
              params={"kernel": {"norm": 1.0, "grad_norm": 1e-8, "update_norm": 1e-9, "update_ratio": 1e-9}}),
        layer(1, "dense (relu)", 1e-3, activation={"name": "relu", "mean": 0.0, "std": 0.0, "saturated": None,
                                                   "dead": 0.75}),
        layer(2, "dense (sigmoid)", 1e-1, activation={"name": "sigmoid", "mean": 0.5, "std": 0.4, "saturated": 0.9,
                                                      "dead": None})]}]
    text = " ".join(dynamics_findings(rows))
    assert "1e-06 times" in text and "vanishes toward the input" in text
    assert "layers[0] dense (sigmoid): 40% of the outputs" in text and "little delta passes back" in text
    assert "layers[1] dense (relu): 75% of the units are 0" in text
    assert "1e-09 of its norm (small: this layer learns slowly" in text
    assert "layers[2] dense (sigmoid): 90%" in text and "confident predictions" in text
    assert dynamics_findings([]) == []
