"""Pictures of what a network computes and learned: PNG files (matplotlib, Agg). The
kernels, feature maps, curves and function plots are drawn by a ``*_figure`` function
that its ``*_png`` saves (the tests read the figures).

* ``kernels_png``: the first convolutional layer's kernels, or their change ``W - W0``
  since training began, every kernel on one colour scale with a colour bar (a kernel's
  input channels side by side; more than three: their mean); a layer is convolutional
  when it has a 4-D ``kernel`` (HWIO), plugins' layers included;
* ``feature_maps_png``: the input image (its true and predicted class) and every output
  channel of each convolutional layer, numbered, on one colour scale per layer;
* ``curves_png``: loss and accuracy against epoch, training and validation, the run,
  its optimizer and the best epoch (as training chose it) marked;
* ``function_plot_png``: activations or losses of the paper's Tables 1 and 2 with their
  derivatives, curves that coincide drawn once and named together;
* ``dynamics_png``: the training dynamics of one run (``dynamics.jsonl``), or of several
  overlaid;
* ``sweep_curves_png`` and ``metric_by_key_png``: a sweep's trials side by side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnncli.runs import atomic_write_bytes


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, dpi: int = 100) -> Path:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    _pyplot().close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def tile_grid(count: int, tile: tuple[float, float], *, cols: int | None = None, header: float = 0.4):
    """(figure, ``count`` axes without frames) in a near-square grid of tiles
    ``tile`` = (width, height) inches each, ``header`` inches for the title; the
    grid's spare cells stay blank."""
    cols = cols or math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    fig, grid = _pyplot().subplots(rows, cols, figsize=(cols * tile[0], rows * tile[1] + header), squeeze=False)
    for ax in grid.flat:
        ax.axis("off")
    return fig, list(grid.flat)[:count]


def _convolutional(layer) -> bool:
    kernel = layer.params.get("kernel")
    return kernel is not None and kernel.ndim == 4


def _colour_bar(fig, mappable, label: str, *, right: float = 0.88):
    """A colour bar in a strip at the figure's right edge; the caller's ``tight_layout``
    keeps its axes left of ``right`` (a figure fraction)."""
    cax = fig.add_axes((right + 0.02, 0.12, 0.018, 0.72), label="<colorbar>")  # as matplotlib names its own
    bar = fig.colorbar(mappable, cax=cax)
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    return bar


#: What ``kernels_png`` can show: the weights, or their change since training began.
KERNEL_VIEWS = ("change", "weights")


def _kernel_patch(kernel: np.ndarray) -> np.ndarray:
    """One kernel (kh, kw, C) as a 2-D patch: its input channels side by side with a
    blank (NaN) column between them (C at most 3), or their mean (more than 3)."""
    if kernel.shape[2] > 3:
        return kernel.mean(axis=2)
    kh = kernel.shape[0]
    gap = np.full((kh, 1), np.nan)
    parts = []
    for channel in range(kernel.shape[2]):
        parts += [kernel[:, :, channel], gap]
    return np.concatenate(parts[:-1], axis=1)


def kernels_figure(network, initial=None):
    """The first conv layer's kernels, one tile per kernel, on one colour scale shared by
    every kernel (symmetric about 0, with a colour bar); with ``initial`` (the same
    network as it was before training) the change ``W - W0`` instead of ``W``."""
    plt = _pyplot()
    index = next((i for i, l in enumerate(network.layers) if _convolutional(l)), None)
    if index is None:
        raise ValueError("the network has no convolutional layer (none with a 4-D kernel)")
    conv = network.layers[index]
    weights = conv.params["kernel"].astype(np.float64)  # (kh, kw, C, F)
    kh, kw, c, f = weights.shape
    if initial is not None:
        start = initial.layers[index].params["kernel"].astype(np.float64)
        shown = weights - start
        moved = np.linalg.norm(shown) / max(np.linalg.norm(start), 1e-30)
        what = f"change since the start, W - W0 (||W - W0|| / ||W0|| = {moved:.1%})"
    else:
        shown = weights
        what = "weights W"
    bound = float(np.abs(shown).max()) or 1.0
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="0.5")  # blue < 0 (white) < red; grey between channels
    patches = [_kernel_patch(shown[:, :, :, k]) for k in range(f)]
    height, width = patches[0].shape
    # A quarter inch per weight, a tile between 0.9 and 2.2 inches wide, in a grid about
    # as wide as it is tall.
    tile_width = min(2.2, max(0.9, 0.25 * width))
    tile = (tile_width, tile_width * height / width + 0.2)
    fig, axes = tile_grid(f, tile, cols=math.ceil(math.sqrt(f * tile[1] / tile[0])), header=0.7)
    for k, ax in enumerate(axes):
        image = ax.imshow(patches[k], cmap=cmap, vmin=-bound, vmax=bound, interpolation="nearest")
        ax.set_title(str(k), fontsize=7, pad=2)
        ax.axis("on")  # a frame holds a kernel's channels together
        ax.set_xticks([])
        ax.set_yticks([])
    channels = ("input channels 0-2 left to right" if c == 3 else "input channels 0-1 left to right" if c == 2
                else "the mean of its input channels" if c > 3 else "one input channel")
    fig.suptitle(f"layers[{index}] {conv.type_name}: {what}\n{f} kernels {kh}x{kw}x{c}, one per tile ({channels}),"
                 f" one colour scale", fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    _colour_bar(fig, image, "W - W0" if initial is not None else "W", right=0.86)
    return fig


def kernels_png(network, path: Path, *, initial=None) -> Path:
    """kernels.png: :func:`kernels_figure` (``initial``: show ``W - W0``)."""
    return _save(kernels_figure(network, initial), path)


@dataclass
class Example:
    """The image the feature maps are drawn for, as a person sees it, and what it is."""

    pixels: np.ndarray                 # (H, W, C), values in [0, 1]
    source: str                        # "validation example 0", or the file's path
    true_class: str | None = None      # None: unknown (an image file)
    predicted_class: str | None = None
    probability: float | None = None   # of the predicted class

    @property
    def label(self) -> str:
        """The source as a picture names it: a file by its name (a long path would run off
        the panel; the terminal line gives it whole)."""
        return Path(self.source).name

    def describe(self, separator: str = "\n", *, short: bool = False) -> str:
        """Where it comes from, its true class and the network's guess, ``separator`` between."""
        truth = f"true: {self.true_class}" if self.true_class is not None else "true class unknown"
        guess = None if self.predicted_class is None else f"predicted: {self.predicted_class}" + (
            "" if self.probability is None else f" ({self.probability:.2f})")
        return separator.join(part for part in (self.label if short else self.source, truth, guess) if part)


def feature_maps_figures(network, image: np.ndarray, example: Example | None = None) -> list[tuple[int, object]]:
    """(layer index, figure) for each conv layer: the input image (with its true and
    predicted class when ``example`` says them) beside every one of the layer's
    (activated) output channels, numbered, on one colour scale per layer."""
    plt = _pyplot()
    outputs = network.layer_outputs(image[None])  # each layer's own (activated, NHWC) output
    if example is None:
        lo, hi = float(image.min()), float(image.max())
        example = Example((image - lo) / (hi - lo) if hi > lo else np.zeros_like(image), "the network's input")
    pixels = np.clip(example.pixels, 0, 1)
    pixels = pixels[:, :, 0] if pixels.shape[2] == 1 else pixels[:, :, :3] if pixels.shape[2] == 3 else pixels.mean(2)
    figures = []
    for i, (layer, a) in enumerate(zip(network.layers, outputs)):
        if not _convolutional(layer) or a.ndim != 4:
            continue
        maps = a[0].astype(np.float64)  # (H', W', F)
        f = maps.shape[2]
        cols = math.ceil(math.sqrt(f))
        rows = math.ceil(f / cols)
        tile = 1.1  # inches per map; the input image takes a column 2.2 maps wide, then a 0.2 gap
        fig = plt.figure(figsize=((cols + 2.4) * tile + 0.9, max(rows, 2) * tile + 0.7))
        grid = fig.add_gridspec(max(rows, 2), cols + 2, width_ratios=[2.2] + [0.2] + [1] * cols)
        ax_in = fig.add_subplot(grid[:2, 0])
        ax_in.imshow(pixels, cmap="gray" if pixels.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        ax_in.set_title(example.describe(short=True), fontsize=7)
        ax_in.set_xticks([])
        ax_in.set_yticks([])
        lo, hi = float(maps.min()), float(maps.max())
        hi = hi if hi > lo else lo + 1.0
        for k in range(f):
            ax = fig.add_subplot(grid[k // cols, 2 + k % cols])
            shown = ax.imshow(maps[:, :, k], cmap="viridis", vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_title(str(k), fontsize=7, pad=2)
            ax.axis("off")
        activation = getattr(getattr(layer, "activation", None), "name", None)
        fig.suptitle(f"layers[{i}] {layer.type_name}{f' ({activation})' if activation else ''}: all {f} feature "
                     f"maps, {maps.shape[0]}x{maps.shape[1]}, of {example.label}; one colour scale", fontsize=9)
        fig.tight_layout(rect=(0, 0, 0.9, 1))
        _colour_bar(fig, shown, "activation a", right=0.9)
        figures.append((i, fig))
    return figures


def feature_maps_png(network, image: np.ndarray, out_dir: Path, example: Example | None = None) -> list[Path]:
    """feature_maps_layer<i>.png for each conv layer: :func:`feature_maps_figures` for
    ``image`` (H, W, C), as the network takes it."""
    return [_save(fig, out_dir / f"feature_maps_layer{i}.png")
            for i, fig in feature_maps_figures(network, image, example)]


def augmented_png(originals: np.ndarray, variants: list[np.ndarray], path: Path) -> Path:
    """A grid: each row one training example (N, H, W, C) as stored (left), then the same
    example as augmentation changes it in each of ``variants`` (arrays like ``originals``);
    pixel values in [0, 1] (clipped)."""
    plt = _pyplot()
    rows, cols = len(originals), 1 + len(variants)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.3, rows * 1.3 + 0.4), squeeze=False)
    for r in range(rows):
        for c, batch in enumerate([originals, *variants]):
            image = np.clip(batch[r], 0, 1)
            ax = axes[r][c]
            ax.axis("off")
            ax.imshow(image[:, :, 0] if image.shape[2] == 1 else image[:, :, :3],
                      cmap="gray" if image.shape[2] == 1 else None, vmin=0, vmax=1, interpolation="nearest")
            if r == 0:
                ax.set_title("as stored" if c == 0 else f"augmented {c}", fontsize=7)
    fig.suptitle("training examples as the network sees them", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def optimizer_label(optimizer: dict) -> str:
    """``adam, lr 0.002`` (and the schedule when it is not constant), from a config's
    ``optimizer`` values: what a curves title says about how the run was trained."""
    label = f"{optimizer.get('name', '?')}, lr {optimizer.get('lr')}"
    schedule = (optimizer.get("schedule") or {}).get("name")
    return label + (f", {schedule} schedule" if schedule and schedule != "constant" else "")


def curves_figure(history: list[dict], *, run_name: str | None = None, optimizer: str | None = None,
                  best_epoch: int | None = None, monitor: str | None = None):
    """Loss and accuracy against epoch (rows of metrics.jsonl), training and validation,
    on whole-epoch ticks; ``best_epoch`` (the epoch training kept as best, by ``monitor``)
    marked in both panels; the run and its optimizer in the title."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    epochs = [m["epoch"] for m in history]
    best = next((m for m in history if m["epoch"] == best_epoch), None)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4.3))
    for ax, key, title, ylabel in ((ax_loss, "loss", "Loss", "loss (mean per example)"),
                                   (ax_acc, "accuracy", "Accuracy", "accuracy")):
        ax.plot(epochs, [m[key] for m in history], marker="o", label="train")
        if history[0].get(f"val_{key}") is not None:
            ax.plot(epochs, [m[f"val_{key}"] for m in history], marker="o", label="validation")
        if best is not None:
            value = best.get(monitor) if monitor else None
            ax.axvline(best_epoch, color="black", linestyle="--", linewidth=1,
                       label=f"best epoch {best_epoch}" + (f" ({monitor} {value:.4g})" if value is not None else ""))
            if monitor in (key, f"val_{key}") and value is not None:
                ax.plot([best_epoch], [value], marker="*", markersize=14, color="black", linestyle="none")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.set(xlabel="epoch", ylabel=ylabel, title=title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if run_name or optimizer:
        fig.suptitle("; ".join(part for part in (run_name and f"run {run_name}", optimizer and f"optimizer {optimizer}")
                               if part), fontsize=10)
    fig.tight_layout()
    return fig


def curves_png(history: list[dict], path: Path, *, run_name: str | None = None, optimizer: str | None = None,
               best_epoch: int | None = None, monitor: str | None = None) -> Path:
    """curves.png: :func:`curves_figure`."""
    return _save(curves_figure(history, run_name=run_name, optimizer=optimizer, best_epoch=best_epoch,
                               monitor=monitor), path)


def coinciding_groups(curves: list[np.ndarray], rtol: float = 1e-6) -> list[list[int]]:
    """Indices of ``curves`` (arrays on the same x) grouped where they agree to ``rtol``
    of the largest value any of them reaches (NaN matching NaN), in first-seen order:
    curves that would hide one another on a plot."""
    finite = [np.abs(c[np.isfinite(c)]) for c in curves]
    scale = max((float(v.max()) for v in finite if v.size), default=1.0) or 1.0
    groups: list[list[int]] = []
    for i, curve in enumerate(curves):
        for group in groups:
            if np.allclose(curves[group[0]], curve, rtol=0, atol=rtol * scale, equal_nan=True):
                group.append(i)
                break
        else:
            groups.append([i])
    return groups


def _plot_grouped(ax, x: np.ndarray, curves: list[tuple[str, str, np.ndarray]], colours) -> None:
    """Curves (name, suffix, values) on ``ax``, those that coincide drawn once and named
    together (``a = b, y=1``); a curve keeps its colour (``colours[i]``) when it leads a
    group. The legend goes below the axes, where it hides nothing."""
    for group in coinciding_groups([values for _, _, values in curves]):
        suffixes = {curves[i][1] for i in group}
        if len(suffixes) == 1:
            label = " = ".join(curves[i][0] for i in group) + curves[group[0]][1]
        else:
            label = " = ".join(curves[i][0] + curves[i][1] for i in group)
        ax.plot(x, curves[group[0]][2], color=colours[group[0]], label=label)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1, frameon=False)


def function_plot_figure(kind: str, names: list[str]):
    """Activations (g and g') or losses (E and dE/dyhat against yhat, for y = 1 and 0 or
    y = 0), each panel with its own legend below it; curves that coincide in a panel
    (the cross-entropies and KL divergence, sigmoid and a two-logit softmax) are drawn
    once and named together."""
    plt = _pyplot()
    values: list[tuple[str, str, np.ndarray]] = []
    slopes: list[tuple[str, str, np.ndarray]] = []
    if kind == "activation":
        from cnncli.nn.activations import make_activation

        x = np.linspace(-5, 5, 501)
        for name in names:
            act = make_activation(name)
            if act.sums_to_one:  # along a row: the first of two logits (z, 0)
                zz = np.stack([x, np.zeros_like(x)], axis=1)
                a = act.forward(zz)[:, 0]
                d = a * (1 - a)
                name = f"{name}(z, 0)[0]"
            else:
                a = act.forward(x)
                d = act.derivative(x)
            values.append((name, "", np.asarray(a, dtype=np.float64)))
            slopes.append((name, "", np.asarray(d, dtype=np.float64)))
        titles, xlabel = ("g(z)", "g'(z)"), "z"
    else:
        from cnncli.nn.losses import make_loss

        x = np.linspace(0.01, 0.99, 197)
        for name in names:
            loss = make_loss({"name": name, "reduction": "sum"})
            for target in (1.0, 0.0):
                if loss.takes_class_indices:  # a distribution over classes per example
                    pred = np.stack([x, 1 - x], axis=1)
                    y = np.tile([target, 1 - target], (len(x), 1))
                    e = [loss(pred[i:i + 1], y[i:i + 1]) for i in range(len(x))]
                    g = [loss.value_and_grad(pred[i:i + 1], y[i:i + 1])[1][0, 0] for i in range(len(x))]
                else:
                    e = [loss(np.array([[v]]), np.array([[target]])) for v in x]
                    g = [loss.value_and_grad(np.array([[v]]), np.array([[target]]))[1][0, 0] for v in x]
                values.append((name, f", y={target:g}", np.asarray(e, dtype=np.float64)))
                slopes.append((name, f", y={target:g}", np.asarray(g, dtype=np.float64)))
        titles, xlabel = ("E(yhat) for one example", "dE/dyhat"), "yhat"
    # Ten curves or fewer: ten distinct colours; more (the losses, y = 1 and 0 each): a dark
    # and a light shade of one colour per loss.
    palette = plt.cm.tab10(np.arange(10)) if len(values) <= 10 else plt.cm.tab20(np.arange(20))
    colours = palette[np.arange(len(values)) % len(palette)]
    fig, (ax_f, ax_d) = plt.subplots(1, 2, figsize=(11, 4 + 0.17 * len(values)))
    for ax, curves, title in ((ax_f, values, titles[0]), (ax_d, slopes, titles[1])):
        _plot_grouped(ax, x, curves, colours)
        ax.set(title=title, xlabel=xlabel)
        ax.grid(alpha=0.3)
        ax.axhline(0, color="black", linewidth=0.5)
    if kind != "activation":
        ax_d.set_ylim(-20, 20)
    fig.tight_layout()
    return fig


def function_plot_png(kind: str, names: list[str], path: Path) -> Path:
    """:func:`function_plot_figure` as a PNG."""
    return _save(function_plot_figure(kind, names), path)


def dynamics_png(runs: list[tuple[str, list[dict]]], path: Path) -> Path:
    """Training dynamics (rows of ``dynamics.jsonl``) of one run, or of several overlaid.

    Six panels: the delta that reaches each layer, from the output back to the input
    (first, middle and last record; for several runs the last record of each); then
    against the step: each kernel's gradient norm, its update-to-weight ratio, its
    weight norm; each activated layer's saturated or dead fraction, and its mean with
    one standard deviation shaded (one run only). A colour is a layer, a line style a run.
    """
    from matplotlib.lines import Line2D

    plt = _pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(16, 8.5))
    (ax_delta, ax_grad, ax_ratio), (ax_weight, ax_sat, ax_act) = axes
    styles = ["-", "--", ":", "-."]
    first_rows = runs[0][1]
    labels = {layer["layer"]: f"{layer['layer']} {layer['label']}" for layer in first_rows[-1]["layers"]}
    watched = [i for i, layer in enumerate(first_rows[-1]["layers"]) if "params" in layer or "activation" in layer]
    colour = {i: plt.cm.tab10(k % 10) for k, i in enumerate(watched)}
    several = len(runs) > 1

    # 1. The delta profile: how the back-propagated signal changes from the output to the input.
    for r, (name, rows) in enumerate(runs):
        picks = [rows[-1]] if several else [rows[i] for i in sorted({0, len(rows) // 2, len(rows) - 1})]
        shades = plt.cm.viridis(np.linspace(0.1, 0.85, len(picks)))
        for k, row in enumerate(picks):
            xs = [layer["layer"] for layer in row["layers"] if layer.get("delta_norm")]
            ys = [layer["delta_norm"] for layer in row["layers"] if layer.get("delta_norm")]
            ax_delta.plot(xs, ys, styles[r % 4], marker="o", color="black" if several else shades[k],
                          label=f"{name}: epoch {row['epoch']}" if several else f"epoch {row['epoch']}, step {row['step']}")
    ax_delta.set_yscale("log")
    ax_delta.set_xticks(sorted(labels))
    ax_delta.set_xticklabels([labels[i] for i in sorted(labels)], rotation=45, ha="right", fontsize=7)
    ax_delta.set(title="delta reaching each layer, ||dL/da|| (input on the left)", ylabel="norm (log)")
    ax_delta.legend(fontsize=7)

    def series(rows, i, pick):
        """``pick(layer i)`` of each record (NaN where absent), or None when it is never there."""
        values = [pick(row["layers"][i]) if i < len(row["layers"]) else None for row in rows]
        if all(v is None for v in values):
            return None
        return np.array([np.nan if v is None else v for v in values], dtype=float)

    def over_steps(ax, pick, title, ylabel, log=True):
        drawn = False
        for r, (name, rows) in enumerate(runs):
            steps = [row["step"] for row in rows]
            for i in watched:
                ys = series(rows, i, pick)
                if ys is not None:
                    ax.plot(steps, ys, styles[r % 4], color=colour[i], marker="." if len(steps) < 40 else None)
                    drawn = True
        if log and drawn:
            ax.set_yscale("log")
        ax.set(title=title, xlabel="step (optimizer update)", ylabel=ylabel)
        if not drawn:
            ax.text(0.5, 0.5, "nothing to show", ha="center", va="center", transform=ax.transAxes, color="grey")

    def kernel(key):
        return lambda layer: (layer.get("params", {}).get("kernel") or {}).get(key)

    over_steps(ax_grad, kernel("grad_norm"), "gradient norm of each kernel, ||dL/dW||", "norm (log)")
    over_steps(ax_ratio, kernel("update_ratio"), "update / weight per step, ||dW|| / ||W|| (dotted: 1e-3)",
               "ratio (log)")
    ax_ratio.axhline(1e-3, color="black", linewidth=0.8, linestyle=":")
    over_steps(ax_weight, kernel("norm"), "weight norm of each kernel, ||W||", "norm (log)")

    def unhealthy(layer):
        act = layer.get("activation") or {}
        return act.get("saturated") if act.get("saturated") is not None else act.get("dead")

    over_steps(ax_sat, unhealthy, "saturated (tanh, sigmoid) or dead (relu) fraction", "fraction", log=False)
    ax_sat.set_ylim(-0.02, 1.02)

    def activation(layer):  # a softmax's mean is 1/K whatever happens: left out
        act = layer.get("activation")
        return act if act and act.get("name") != "softmax" else None

    for r, (name, rows) in enumerate(runs):
        steps = [row["step"] for row in rows]
        for i in watched:
            mean = series(rows, i, lambda layer: (activation(layer) or {}).get("mean"))
            if mean is None:
                continue
            std = series(rows, i, lambda layer: (activation(layer) or {}).get("std"))
            ax_act.plot(steps, mean, styles[r % 4], color=colour[i])
            if not several:
                ax_act.fill_between(steps, mean - std, mean + std, color=colour[i], alpha=0.12)
    ax_act.set(title="activation mean" + ("" if several else ", one standard deviation shaded"),
               xlabel="step (optimizer update)", ylabel="a = g(z)")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    # One legend for the layers (colours) and, for several runs, one for the runs (line styles).
    handles = [Line2D([], [], color=colour[i], label=labels[i]) for i in watched]
    if several:
        handles += [Line2D([], [], color="black", linestyle=styles[r % 4], label=name)
                    for r, (name, _) in enumerate(runs)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    title = "training dynamics: " + (" vs ".join(name for name, _ in runs) if several else runs[0][0])
    fig.suptitle(title, fontsize=11)
    rows_of_legend = math.ceil(len(handles) / 6)
    fig.tight_layout(rect=(0, 0.025 + 0.03 * rows_of_legend, 1, 1))
    return _save(fig, path)


def sweep_curves_png(series: list[tuple[str, list[dict]]], metric: str, path: Path) -> Path:
    """Every trial's ``metric`` (and its training counterpart, thin) against epoch, one
    colour per trial (rows of each trial's metrics.jsonl)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(11, 5.5))
    colours = plt.cm.tab20(np.linspace(0, 1, 20))
    train_key = metric[4:] if metric.startswith("val_") else None
    for k, (label, rows) in enumerate(series):
        epochs = [r["epoch"] for r in rows]
        c = colours[k % 20]
        values = [r.get(metric) for r in rows]
        if any(v is not None for v in values):
            ax.plot(epochs, [np.nan if v is None else v for v in values], marker="o", markersize=3, color=c,
                    label=label)
        if train_key:
            ax.plot(epochs, [r.get(train_key) for r in rows], color=c, linewidth=0.8, alpha=0.5, linestyle="--")
    ax.set(xlabel="epoch", ylabel=metric, title=f"{metric} of every trial" +
           (f" (dashed, thin: {train_key} on the training split)" if train_key else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    return _save(fig, path)


def metric_by_key_png(scored: list[tuple[dict, float]], keys: list[str], label: str, path: Path) -> Path:
    """One panel per varying key: each trial's score against that key's value (numbers
    on a log axis when they span more than two decades; anything else as categories)."""
    plt = _pyplot()
    cols = min(len(keys), 3)
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    for n, key in enumerate(keys):
        ax = axes[n // cols][n % cols]
        values = [t.get(key) for t, _ in scored]
        scores = [s for _, s in scored]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if numeric:
            ax.scatter(values, scores, s=36, color="tab:blue", alpha=0.8)
            positive = [v for v in values if v > 0]
            if len(positive) == len(values) and max(values) / min(values) > 100:
                ax.set_xscale("log")
        else:
            categories = list(dict.fromkeys(str(v) for v in values))
            xs = [categories.index(str(v)) for v in values]
            ax.scatter(xs, scores, s=36, color="tab:blue", alpha=0.8)
            ax.set_xticks(range(len(categories)))
            ax.set_xticklabels(categories, rotation=30 if max(map(len, categories)) > 8 else 0, ha="right"
                               if max(map(len, categories)) > 8 else "center", fontsize=8)
            ax.set_xlim(-0.5, len(categories) - 0.5)
        ax.set(xlabel=key, ylabel=label)
        ax.grid(alpha=0.3)
    for n in range(len(keys), rows * cols):
        axes[n // cols][n % cols].axis("off")
    fig.suptitle(f"{label} against each key the sweep varied (one point per trial)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
