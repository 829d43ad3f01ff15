"""Pictures of how a trained network classifies its evaluation data: PNG files (matplotlib, Agg).

* ``confusion_png``: the confusion matrix as a heatmap, each row coloured by its share of
  the true class (so that a rare class shows as clearly as a common one) with the counts
  written in the cells;
* ``roc_png``: the ROC curve of a two-class problem against the chance diagonal;
* ``misclassified_png``: a grid of wrongly classified images, each titled with its true
  and predicted class and the probability the network gave its prediction.

Each file is written atomically, through ``cnncli.visualize._save``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from cnncli.visualize import _pyplot, _save, tile_grid

MAX_TILES = 16  # misclassified examples drawn; the caller picks and orders them
MAX_NUMBERED_CLASSES = 20  # beyond this the cells are too small for their counts
NAME_CHARACTERS = 14  # longer class names are shortened, so that tick labels do not collide


def _short(name: str, limit: int = NAME_CHARACTERS) -> str:
    return name if len(name) <= limit else name[:limit - 1] + "\u2026"


def _class_labels(class_names: list[str], num_classes: int) -> list[str]:
    """A label for each of ``num_classes``: the name where there is one, else the index
    (a confusion matrix grows past the names when predictions lie beyond them)."""
    return [_short(str(class_names[i])) if i < len(class_names) else str(i) for i in range(num_classes)]


def _message_png(message: str, path: Path, title: str) -> Path:
    """A figure holding one line of text, for when there is nothing to draw."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 2.2))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=11, color="0.3", transform=ax.transAxes)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def confusion_png(matrix: np.ndarray, class_names: list[str], path: Path, title: str) -> Path:
    r"""The confusion matrix (K, K), rows the true class and columns the predicted one.

    A cell's colour is its share of its row, :math:`m_{ij} / \sum_j m_{ij}` (0 for a
    class without examples), so a class of 5 examples with 4 misread shows as dark off
    the diagonal as one of 500 with 400 misread; the number written in it is the count
    :math:`m_{ij}`, white on dark cells and black on light ones, grey for 0. Fonts shrink
    and tick labels turn as K grows; above 20 classes the cells are too small for numbers
    and only the colours remain.
    """
    matrix = np.asarray(matrix, dtype=np.int64)
    num_classes = matrix.shape[0]
    if num_classes == 0:
        return _message_png("no classes", path, title)
    names = _class_labels(class_names, num_classes)
    support = matrix.sum(axis=1, keepdims=True)  # (K, 1)
    share = np.divide(matrix, support, out=np.zeros(matrix.shape), where=support > 0)  # (K, K)

    plt = _pyplot()
    side = min(max(3.0 + 0.42 * num_classes, 4.5), 13.0)  # inches of the matrix itself
    fig, ax = plt.subplots(figsize=(side + 1.6, side + 0.6))
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    # The colour bar in an axes divided off the image's own: as tall as the matrix, and
    # tight_layout then makes room for the row labels too (it does not for fig.colorbar(ax=)).
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    colorbar_axes = make_axes_locatable(ax).append_axes("right", size=0.25, pad=0.15)
    colorbar = fig.colorbar(image, cax=colorbar_axes)
    colorbar.set_label("share of the true class (row)", fontsize=9)
    colorbar.ax.tick_params(labelsize=8)

    tick_size = 10 if num_classes <= 10 else 8 if num_classes <= 20 else 7
    rotation = 0 if num_classes <= 4 else 45 if num_classes <= 12 else 90
    ax.set_xticks(range(num_classes), names, fontsize=tick_size, rotation=rotation,
                  ha="center" if rotation in (0, 90) else "right", rotation_mode="anchor" if rotation == 45 else "default")
    ax.set_yticks(range(num_classes), names, fontsize=tick_size)
    ax.set_xlabel("predicted class", fontsize=10)
    ax.set_ylabel("true class", fontsize=10)
    ax.set_title(title, fontsize=11)
    ax.tick_params(length=0)
    # Thin white lines between cells, so that equal neighbours still read as two cells.
    ax.set_xticks(np.arange(num_classes + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(num_classes + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=0.8 if num_classes <= 20 else 0.3)
    ax.tick_params(which="minor", length=0)

    if num_classes <= MAX_NUMBERED_CLASSES:
        # The widest count must fit its cell: about 0.6 em per digit, 80% of the cell.
        cell_points = 72 * side * 0.8 / num_classes
        digits = len(str(int(matrix.max())))
        count_size = max(5.0, min(12.0, 0.8 * cell_points / (0.62 * digits + 0.4)))
        for i in range(num_classes):
            for j in range(num_classes):
                count = int(matrix[i, j])
                colour = "0.6" if count == 0 else "white" if share[i, j] > 0.5 else "black"
                ax.text(j, i, str(count), ha="center", va="center", fontsize=count_size, color=colour)
    fig.tight_layout()
    return _save(fig, path)


def roc_png(fpr: np.ndarray, tpr: np.ndarray, auc: float | None, path: Path, title: str) -> Path:
    """The ROC curve (``metrics.roc_curve``'s fpr, tpr), the chance diagonal, AUC in the legend."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 5.2))
    label = f"ROC (AUC = {auc:.3f})" if auc is not None else "ROC (AUC undefined: one class only)"
    # clip_on=False: a curve along the axes (a perfect classifier) stays visible over the frame.
    ax.plot(np.asarray(fpr), np.asarray(tpr), color="tab:blue", linewidth=2, label=label, clip_on=False, zorder=3)
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.5", linewidth=1, label="chance (AUC = 0.5)")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="false positive rate", ylabel="true positive rate")
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def misclassified_png(images: np.ndarray, true: np.ndarray, predicted: np.ndarray, probability: np.ndarray,
                      class_names: list[str], path: Path, title: str) -> Path:
    """A grid of up to 16 misclassified images (M, H, W, C), values in [0, 1] (clipped).

    Each tile is titled ``true X / pred Y (0.93)``: the true class, the predicted one and
    the probability the network gave its prediction. The first 16 are drawn in the
    order given (the caller picks them: the most confident mistakes, say). One channel is
    drawn grey, three as RGB, any other number as the grey mean of the channels. With no
    images the figure says so.
    """
    images = np.asarray(images)
    shown = min(len(images), MAX_TILES)
    if shown == 0:
        return _message_png("no misclassified examples", path, title)
    num_classes = int(max(np.max(true[:shown]), np.max(predicted[:shown]))) + 1
    names = _class_labels(class_names, num_classes)
    fig, axes = tile_grid(shown, (2.3, 2.5), cols=min(4, math.ceil(math.sqrt(shown))), header=0.5)
    for k, ax in enumerate(axes):
        image = np.clip(images[k].astype(np.float64), 0.0, 1.0)  # (H, W, C)
        if image.shape[2] not in (1, 3):
            image = image.mean(axis=2, keepdims=True)
        grey = image.shape[2] == 1
        ax.imshow(image[:, :, 0] if grey else image, cmap="gray" if grey else None, vmin=0, vmax=1,
                  interpolation="nearest")
        caption = f"true {names[int(true[k])]} / pred {names[int(predicted[k])]} ({float(probability[k]):.2f})"
        if len(caption) > 30:  # wider than the tile at this size: break after the true class
            caption = caption.replace(" / ", " /\n", 1)
        ax.set_title(caption, fontsize=8)
    fig.suptitle(title if len(images) <= shown else f"{title} (first {shown} of {len(images)})", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
