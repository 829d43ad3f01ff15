"""Pictures that show something (issue 17): ``visualize``'s kernels (their change since the
start on one colour scale), feature maps (every channel, the input and its classes),
curves (whole epochs, the run, its optimizer, the best epoch as training chose it),
``plot``'s coinciding curves named together with the legend off the axes, and where
every picture goes.

The pictures are checked through the figures their ``*_figure`` functions draw, and the
PNG files through the same functions' output byte for byte. (The pictures' functions
are imported inside each test: a test of one fails on its own, not the whole file.)"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import cnncli
from cnncli import experiment
from cnncli.builder import build
from cnncli.config import load_config
from cnncli.nn import Network
from tests.helpers import assert_ok, assert_user_error, invoke

RUN = {
    "name": "pics",
    "seed": 3,
    "data": {"source": "synthetic", "num_samples": 64, "num_classes": 3, "noise": 0.1},
    "model": {
        "input_shape": [12, 12, 3],
        "layers": [
            {"type": "conv2d", "filters": 5, "kernel_size": 3, "activation": "relu"},
            {"type": "max_pool2d", "pool_size": 2},
            {"type": "conv2d", "filters": 6, "kernel_size": 3, "padding": "same", "activation": "relu"},
            {"type": "flatten"},
            {"type": "dense", "units": 3, "activation": "softmax"},
        ],
    },
    "loss": "categorical_crossentropy",
    "optimizer": {"name": "sgd", "lr": 0.05},
    "train": {"epochs": 3, "batch_size": 16, "validation_split": 0.25},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(run folder, its network's state just before the first step, as train built it)."""
    started = {}

    def keep_the_start(run_dir, config, network, dataset):
        started.update(network.state_dict())

    done = cnncli.train(RUN, runs_dir=tmp_path_factory.mktemp("pictures") / "runs", handle_signals=False,
                        on_ready=keep_the_start)
    assert done.status == "completed" and started
    return done.path, started


def _network(layers, input_shape, seed=0) -> Network:
    return Network(layers).build(input_shape, seed=seed, dtype="float64")


def _colour_bars(fig) -> list:
    """The axes that hold a colour bar (matplotlib keeps the bar on its axes)."""
    return [ax for ax in fig.axes if getattr(ax, "_colorbar", None) is not None]


# ============================================================================= kernels
def test_kernels_show_the_change_since_the_start_on_one_scale_with_a_colour_bar():
    from cnncli.visualize import kernels_figure

    start = _network([{"type": "conv2d", "filters": 4, "kernel_size": 3}, {"type": "flatten"},
                      {"type": "dense", "units": 2}], (6, 6, 3))
    trained = _network([{"type": "conv2d", "filters": 4, "kernel_size": 3}, {"type": "flatten"},
                        {"type": "dense", "units": 2}], (6, 6, 3))
    change = np.random.default_rng(1).normal(0, 0.01, start.layers[0].params["kernel"].shape)
    change[0, 0, 0, 3] = 0.5  # one weight moved far: the scale every tile shares
    trained.layers[0].params["kernel"][...] += change
    fig = kernels_figure(trained, initial=start)
    tiles = [ax for ax in fig.axes if ax.images and ax not in _colour_bars(fig)]
    assert len(tiles) == 4 and len(_colour_bars(fig)) == 1
    for k, ax in enumerate(tiles):
        shown = np.ma.filled(ax.images[0].get_array().astype(float), np.nan)
        d = change[:, :, :, k]
        gap = np.full((3, 1), np.nan)
        expected = np.concatenate([d[:, :, 0], gap, d[:, :, 1], gap, d[:, :, 2]], axis=1)  # channels side by side
        np.testing.assert_allclose(shown, expected, atol=1e-12, equal_nan=True)
        assert ax.images[0].get_clim() == pytest.approx((-0.5, 0.5))  # one scale, symmetric about 0
        assert ax.get_title() == str(k)
    assert "W - W0" in fig._suptitle.get_text()
    assert "weights W" in kernels_figure(trained)._suptitle.get_text()


def test_visualize_kernels_change_uses_the_runs_real_start(run, tmp_path):
    from cnncli.visualize import kernels_png

    run_dir, started = run
    config = load_config(run_dir / "config.yaml", check_paths=False)
    real_start = build(config).network
    real_start.load_state_dict(started)
    _, trained, *_ = experiment.load_run(run_dir)
    change, weights = tmp_path / "change", tmp_path / "weights"
    assert_ok(invoke("visualize", run_dir, "--out", change))
    assert_ok(invoke("visualize", run_dir, "--out", weights, "--kernels", "weights"))
    expected = kernels_png(trained, tmp_path / "expected.png", initial=real_start).read_bytes()
    assert (change / "kernels.png").read_bytes() == expected
    assert (weights / "kernels.png").read_bytes() == kernels_png(trained, tmp_path / "w.png").read_bytes()
    assert expected != (weights / "kernels.png").read_bytes()
    assert_user_error(invoke("visualize", run_dir, "--out", tmp_path / "x", "--kernels", "both"), "--kernels",
                      "change or weights")


def test_a_fine_tuned_runs_change_is_from_the_weights_it_loaded(run, tmp_path):
    """With init_from the start is the source's weights, loaded again; when the source is
    gone, visualize says so and shows the weights."""
    from cnncli.visualize import kernels_png

    source = tmp_path / "source"
    shutil.copytree(run[0], source)
    tuned = cnncli.train({**RUN, "name": "tuned", "init_from": {"path": str(source)}, "train": {**RUN["train"],
                          "epochs": 1}}, runs_dir=tmp_path / "runs", handle_signals=False)
    _, loaded, *_ = experiment.load_run(source)
    _, trained, *_ = experiment.load_run(tuned.path)
    res = invoke("visualize", tuned.path, "--out", tmp_path / "a")
    assert_ok(res)
    assert "warning" not in res.stderr
    assert (tmp_path / "a" / "kernels.png").read_bytes() == kernels_png(trained, tmp_path / "e.png",
                                                                        initial=loaded).read_bytes()
    best = json.loads((source / "status.json").read_text())["best_epoch"]  # what init_from loaded
    shutil.rmtree(source)
    res = invoke("visualize", tuned.path, "--out", tmp_path / "b")
    assert_ok(res)
    assert f"the run started from epoch {best} of {source.resolve()}" in res.stderr
    assert "kernels.png shows the weights" in " ".join(res.stderr.split())
    assert (tmp_path / "b" / "kernels.png").read_bytes() == kernels_png(trained, tmp_path / "w.png").read_bytes()


# ======================================================================== feature maps
def test_feature_maps_show_every_channel_numbered_the_input_and_its_classes():
    from cnncli.visualize import Example, feature_maps_figures

    net = _network([{"type": "conv2d", "filters": 40, "kernel_size": 3, "activation": "relu"}, {"type": "flatten"},
                    {"type": "dense", "units": 2}], (8, 8, 3))
    image = np.random.default_rng(0).random((8, 8, 3))
    example = Example(image, "validation example 0", "circle", "square", 0.75)
    [(index, fig)] = feature_maps_figures(net, image, example)
    assert index == 0
    bars = _colour_bars(fig)
    tiles = [ax for ax in fig.axes if ax.images and ax not in bars]
    picture, maps = tiles[0], tiles[1:]
    assert len(maps) == 40  # today's picture stopped at 32
    assert [ax.get_title() for ax in maps] == [str(k) for k in range(40)]
    assert len({ax.images[0].get_clim() for ax in maps}) == 1 and len(bars) == 1  # one scale, shown
    np.testing.assert_allclose(picture.images[0].get_array(), image)
    assert "true: circle" in picture.get_title() and "predicted: square (0.75)" in picture.get_title()
    assert "all 40 feature maps" in fig._suptitle.get_text()
    assert "validation example 0" in fig._suptitle.get_text()
    # An image file is named by its file name: a whole path ran off the input's panel.
    [(_, fig)] = feature_maps_figures(net, image, Example(image, "/a/long/folder/of/shots/plane.png"))
    panel = next(ax for ax in fig.axes if ax.images)
    assert panel.get_title().splitlines()[0] == "plane.png" and "folder" not in fig._suptitle.get_text()


def test_visualize_says_which_example_and_every_file_and_writes_only_into_the_run(run, tmp_path, monkeypatch):
    run_dir, _ = run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    here = tmp_path / "cwd"
    here.mkdir()
    monkeypatch.chdir(here)
    res = invoke("visualize", copy)
    assert_ok(res)
    names = json.loads((copy / "data.json").read_text())["class_names"]
    example = [line for line in res.stdout.splitlines() if line.startswith("feature maps of ")]
    assert len(example) == 1 and "validation example 0" in example[0], res.stdout
    assert "true: " in example[0] and any(f"predicted: {n} (" in example[0] for n in names), example
    written = sorted((copy / "visualize").iterdir())
    assert [p.name for p in written] == ["curves.png", "feature_maps_layer0.png", "feature_maps_layer2.png",
                                         "kernels.png"]
    for path in written:
        assert f"wrote {path}" in res.stdout
    assert list(here.iterdir()) == []


# ============================================================================== curves
HISTORY = [{"epoch": e, "loss": l, "accuracy": a, "val_loss": vl, "val_accuracy": va}
           for e, l, a, vl, va in ((1, 1.0, 0.5, 0.9, 0.55), (2, 0.7, 0.7, 0.6, 0.8), (3, 0.5, 0.8, 0.65, 0.85))]


def test_curves_have_whole_epochs_the_run_and_optimizer_and_the_best_epoch():
    from cnncli.visualize import curves_figure

    fig = curves_figure(HISTORY, run_name="20260101-000000-pics", optimizer="sgd, lr 0.05", best_epoch=2,
                        monitor="val_loss")
    fig.canvas.draw()
    assert "20260101-000000-pics" in fig._suptitle.get_text() and "sgd, lr 0.05" in fig._suptitle.get_text()
    ax_loss, ax_acc = fig.axes
    for ax in (ax_loss, ax_acc):
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
        best = [line for line in ax.get_lines() if line.get_label().startswith("best epoch 2")]
        assert len(best) == 1 and list(best[0].get_xdata()) == [2, 2]  # a vertical line at epoch 2
        assert "val_loss 0.6" in best[0].get_label()
    stars = [line for line in ax_loss.get_lines() if line.get_marker() == "*"]
    assert len(stars) == 1 and (stars[0].get_xdata()[0], stars[0].get_ydata()[0]) == (2, 0.6)


def test_visualize_marks_the_best_epoch_the_run_recorded(run, tmp_path, monkeypatch):
    """The best epoch comes from status.json (training's choice by its monitor), not from
    a second reading of the metrics: a status that names epoch 1 gets epoch 1 marked."""
    run_dir, _ = run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    status = json.loads((copy / "status.json").read_text())
    status.update(best_epoch=1, monitor="val_accuracy")
    (copy / "status.json").write_text(json.dumps(status))
    drawn = []
    monkeypatch.setattr(experiment, "curves_png", lambda history, path, **how: drawn.append(how) or path)
    experiment.visualize_run(copy, tmp_path / "out")
    assert drawn == [{"run_name": copy.name, "optimizer": "sgd, lr 0.05", "best_epoch": 1,
                      "monitor": "val_accuracy"}]


# ================================================================================ plot
def test_coinciding_curves_are_found_numerically():
    from cnncli.visualize import coinciding_groups

    x = np.linspace(0, 1, 50)
    curves = [x ** 2, np.sqrt(x), x ** 2 * (1 + 1e-9), 1 - x, np.sqrt(x) + 1e-3]
    assert coinciding_groups(curves) == [[0, 2], [1], [3], [4]]  # a 1e-3 offset is visible: kept apart


def _legend_labels(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_plot_loss_names_coinciding_curves_together():
    from cnncli.visualize import function_plot_figure

    names = ["binary_crossentropy", "categorical_crossentropy", "kl_divergence", "mse"]
    ax_e, ax_d = function_plot_figure("loss", names).axes
    assert _legend_labels(ax_e) == ["binary_crossentropy = categorical_crossentropy = kl_divergence, y=1",
                                    "binary_crossentropy = categorical_crossentropy = kl_divergence, y=0",
                                    "mse, y=1", "mse, y=0"]
    # The slopes agree for y = 1 only: dE/dyhat of the categorical losses is 0 for y = 0.
    assert _legend_labels(ax_d) == ["binary_crossentropy = categorical_crossentropy = kl_divergence, y=1",
                                    "binary_crossentropy, y=0", "categorical_crossentropy = kl_divergence, y=0",
                                    "mse, y=1", "mse, y=0"]
    curves = [line for line in ax_e.get_lines() if line.get_label() != "_nolegend_" and
              not line.get_label().startswith("_")]
    assert len(curves) == 4  # drawn once each, none hidden under another
    activations = function_plot_figure("activation", ["sigmoid", "softmax", "tanh"]).axes[0]
    assert _legend_labels(activations) == ["sigmoid = softmax(z, 0)[0]", "tanh"]


@pytest.mark.parametrize("kind", ["loss", "activation"])
def test_plot_legends_are_outside_the_axes(kind):
    from cnncli.nn.activations import ACTIVATIONS
    from cnncli.nn.losses import LOSSES
    from cnncli.visualize import function_plot_figure

    registry = ACTIVATIONS if kind == "activation" else LOSSES
    fig = function_plot_figure(kind, [n for n, obj in registry.items() if getattr(obj, "name", n) == n])
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        legend, frame = ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer)
        assert not legend.overlaps(frame), (legend, frame)
        assert 0 <= legend.y0 and legend.x0 >= 0 and legend.x1 <= fig.bbox.width  # and inside the picture


def test_plot_writes_beside_the_runs_not_into_the_current_folder(tmp_path, monkeypatch):
    here = tmp_path / "cwd"
    here.mkdir()
    monkeypatch.chdir(here)
    runs = tmp_path / "elsewhere"
    res = invoke("plot", "loss", "mse", "--runs-dir", runs)
    assert_ok(res)
    assert res.stdout.strip() == f"wrote {runs / 'plots' / 'loss_mse.png'}"
    assert (runs / "plots" / "loss_mse.png").is_file() and list(here.iterdir()) == []
    res = invoke("plot", "activation", "tanh")  # no --runs-dir: runs/plots, the folder cnncli writes runs into
    assert_ok(res)
    assert res.stdout.strip() == "wrote runs/plots/activation_tanh.png"
    assert [p.name for p in here.iterdir()] == ["runs"]
