"""Classification metrics: accuracy, confusion matrix, per-class precision, recall and F1."""

from __future__ import annotations

import numpy as np


def predicted_classes(outputs: np.ndarray) -> np.ndarray:
    """Class indices from network outputs: ``p >= 0.5`` for one sigmoid unit, else arg max."""
    if outputs.ndim == 1 or outputs.shape[-1] == 1:
        return (outputs.reshape(len(outputs)) >= 0.5).astype(np.int64)
    return outputs.argmax(axis=-1)


def class_probabilities(outputs: np.ndarray) -> np.ndarray:
    """(N, K) probabilities: one sigmoid unit p becomes [1 - p, p]."""
    if outputs.ndim == 1 or outputs.shape[-1] == 1:
        p = outputs.reshape(len(outputs))
        return np.stack([1 - p, p], axis=1)
    return outputs


def accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(predicted_classes(outputs) == labels)) if len(labels) else float("nan")


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """``m[i, j]`` = number of examples of true class i predicted as j.

    The matrix grows past ``num_classes`` when a prediction (or label) lies beyond it: a
    network may have more outputs than the data has classes.
    """
    labels, predicted = np.asarray(labels, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    for a in (labels, predicted):
        if a.size:
            num_classes = max(num_classes, int(a.max()) + 1)
    m = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(m, (labels, predicted), 1)
    return m


def per_class_scores(matrix: np.ndarray) -> dict[str, list[float]]:
    """Precision, recall and F1 of each class (0 where undefined, as scikit-learn's zero_division=0)."""
    tp = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0)
    actual = matrix.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(actual > 0, tp / actual, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {"precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist(),
            "support": actual.astype(int).tolist()}
