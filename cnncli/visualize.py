"""Pictures of what a network computes and learned: PNG files (matplotlib, Agg).

* ``kernels_png``: the first convolutional layer's kernels as colour patches (each
  kernel scaled to [0, 1] on its own; one input channel gives grey, more than three the
  channel mean); a layer is convolutional when it has a 4-D ``kernel`` (HWIO), plugins'
  layers included;
* ``feature_maps_png``: each convolutional layer's output channels for one image;
* ``curves_png``: loss and accuracy against epoch, training and validation;
* ``function_plot_png``: activations or losses of the paper's Tables 1 and 2 with their
  derivatives.
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
    cols = math.ceil(math.sqrt(f))
    rows = math.ceil(f / cols)
    plt = _pyplot()
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9, rows * 0.9 + 0.4), squeeze=False)
    for k in range(rows * cols):
        ax = axes[k // cols][k % cols]
        ax.axis("off")
        if k >= f:
            continue
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
    plt = _pyplot()
    paths = []
    outputs = network.layer_outputs(image[None])  # each layer's own (activated, NHWC) output
    for i, (layer, a) in enumerate(zip(network.layers, outputs)):
        if not _convolutional(layer) or a.ndim != 4:
            continue
        maps = a[0]  # (H', W', F)
        f = min(maps.shape[2], max_channels)
        cols = math.ceil(math.sqrt(f))
        rows = math.ceil(f / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.1 + 0.4), squeeze=False)
        for k in range(rows * cols):
            ax = axes[k // cols][k % cols]
            ax.axis("off")
            if k < f:
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
