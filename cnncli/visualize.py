"""Pictures of what a network computes and learned: PNG files (matplotlib, Agg).

* ``kernels_png``: the first convolutional layer's kernels as colour patches (each
  kernel scaled to [0, 1] on its own; one input channel gives grey, more than three the
  channel mean); a layer is convolutional when it has a 4-D ``kernel`` (HWIO), plugins'
  layers included;
* ``feature_maps_png``: each convolutional layer's output channels for one image;
* ``curves_png``: loss and accuracy against epoch, training and validation;
* ``function_plot_png``: activations or losses of the paper's Tables 1 and 2 with their
  derivatives;
* ``dynamics_png``: the training dynamics of one run (``dynamics.jsonl``), or of several
  overlaid;
* ``sweep_curves_png`` and ``metric_by_key_png``: a sweep's trials side by side.
"""

from __future__ import annotations

import math
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


def kernels_png(network, path: Path) -> Path:
    """Grid of the first conv layer's kernels, (kh, kw, C) each, as colour patches."""
    conv = next((l for l in network.layers if _convolutional(l)), None)
    if conv is None:
        raise ValueError("the network has no convolutional layer (none with a 4-D kernel)")
    kernel = conv.params["kernel"].astype(np.float64)  # (kh, kw, C, F)
    kh, kw, c, f = kernel.shape
    fig, axes = tile_grid(f, (0.9, 0.9))
    for k, ax in enumerate(axes):
        patch = kernel[:, :, :, k]  # (kh, kw, C)
        if c not in (1, 3):
            patch = patch.mean(axis=2, keepdims=True)
        lo, hi = patch.min(), patch.max()
        patch = (patch - lo) / (hi - lo) if hi > lo else np.zeros_like(patch)
        ax.imshow(patch[:, :, 0] if patch.shape[2] == 1 else patch, cmap="gray" if patch.shape[2] == 1 else None,
                  interpolation="nearest")
    fig.suptitle(f"first {conv.type_name} layer: {f} kernels {kh}x{kw}x{c}", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def feature_maps_png(network, image: np.ndarray, out_dir: Path, max_channels: int = 32) -> list[Path]:
    """One PNG per conv layer: its (activated) output channels for ``image`` (H, W, C)."""
    paths = []
    outputs = network.layer_outputs(image[None])  # each layer's own (activated, NHWC) output
    for i, (layer, a) in enumerate(zip(network.layers, outputs)):
        if not _convolutional(layer) or a.ndim != 4:
            continue
        maps = a[0]  # (H', W', F)
        f = min(maps.shape[2], max_channels)
        fig, axes = tile_grid(f, (1.1, 1.1))
        for k, ax in enumerate(axes):
            ax.imshow(maps[:, :, k], cmap="viridis", interpolation="nearest")
        fig.suptitle(f"layers[{i}] {layer.type_name}: {f} of {maps.shape[2]} feature maps, {maps.shape[0]}x{maps.shape[1]}",
                     fontsize=9)
        fig.tight_layout()
        paths.append(_save(fig, out_dir / f"feature_maps_layer{i}.png"))
    return paths


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


def curves_png(history: list[dict], path: Path) -> Path:
    """Loss and accuracy against epoch (rows of metrics.jsonl), training and validation."""
    plt = _pyplot()
    epochs = [m["epoch"] for m in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title, ylabel in ((ax_loss, "loss", "Loss", "loss (mean per example)"),
                                   (ax_acc, "accuracy", "Accuracy", "accuracy")):
        ax.plot(epochs, [m[key] for m in history], marker="o", label="train")
        if history[0].get(f"val_{key}") is not None:
            ax.plot(epochs, [m[f"val_{key}"] for m in history], marker="o", label="validation")
        ax.set(xlabel="epoch", ylabel=ylabel, title=title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def function_plot_png(kind: str, names: list[str], path: Path) -> Path:
    """Activations (g and g') or losses (E and dE/dyhat against yhat, for y = 1 and 0 or y = 0)."""
    plt = _pyplot()
    fig, (ax_f, ax_d) = plt.subplots(1, 2, figsize=(10, 4))
    for ax in (ax_f, ax_d):  # more curves than the default ten colours: one colour each
        ax.set_prop_cycle(color=plt.cm.tab20(np.linspace(0, 1, 20)))
    if kind == "activation":
        from cnncli.nn.activations import make_activation

        z = np.linspace(-5, 5, 501)
        for name in names:
            act = make_activation(name)
            if act.sums_to_one:  # along a row: the first of two logits (z, 0)
                zz = np.stack([z, np.zeros_like(z)], axis=1)
                a = act.forward(zz)[:, 0]
                d = a * (1 - a)
                label = f"{name}(z, 0)[0]"
            else:
                a = act.forward(z)
                d = act.derivative(z)
                label = name
            ax_f.plot(z, a, label=label)
            ax_d.plot(z, d, label=label)
        ax_f.set(title="g(z)", xlabel="z")
        ax_d.set(title="g'(z)", xlabel="z")
    else:
        from cnncli.nn.losses import make_loss

        p = np.linspace(0.01, 0.99, 197)
        for name in names:
            loss = make_loss({"name": name, "reduction": "sum"})
            for target in (1.0, 0.0):
                if loss.takes_class_indices:  # a distribution over classes per example
                    pred = np.stack([p, 1 - p], axis=1)
                    y = np.tile([target, 1 - target], (len(p), 1))
                    values = [loss(pred[i:i + 1], y[i:i + 1]) for i in range(len(p))]
                    grads = [loss.value_and_grad(pred[i:i + 1], y[i:i + 1])[1][0, 0] for i in range(len(p))]
                else:
                    values = [loss(np.array([[v]]), np.array([[target]])) for v in p]
                    grads = [loss.value_and_grad(np.array([[v]]), np.array([[target]]))[1][0, 0] for v in p]
                ax_f.plot(p, values, label=f"{name}, y={target:g}")
                ax_d.plot(p, grads, label=f"{name}, y={target:g}")
        ax_f.set(title="E(yhat) for one example", xlabel="yhat")
        ax_d.set(title="dE/dyhat", xlabel="yhat")
        ax_d.set_ylim(-20, 20)
    for ax in (ax_f, ax_d):
        ax.grid(alpha=0.3)
        ax.axhline(0, color="black", linewidth=0.5)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


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
