"""Classification metrics, all in NumPy (scikit-learn is not a dependency).

* accuracy, the confusion matrix, per-class precision, recall and F1;
* their macro and support-weighted averages (``averaged_scores``);
* top-k accuracy (``top_k_accuracy``);
* the ROC curve and the area under it for two classes (``roc_curve``, ``roc_auc``);
* ``classification_scores``: the JSON-safe summary that evaluation adds to eval.json.
"""

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


def _precision_recall_f1(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    r"""(precision, recall, f1, support) of each class, each (K,), from ``matrix`` (K, K).

    With :math:`TP_c = m_{cc}`, :math:`P_c = \sum_i m_{ic}` (predicted as c) and
    :math:`S_c = \sum_j m_{cj}` (truly c, the support):

    .. math::

        \text{precision}_c = TP_c / P_c, \quad \text{recall}_c = TP_c / S_c, \quad
        F1_c = \frac{2\,\text{precision}_c\,\text{recall}_c}{\text{precision}_c + \text{recall}_c}

    each 0 where its denominator is 0 (scikit-learn's ``zero_division=0``).
    """
    matrix = np.asarray(matrix)
    tp = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0)
    actual = matrix.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(actual > 0, tp / actual, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return precision, recall, f1, actual


def per_class_scores(matrix: np.ndarray) -> dict[str, list[float]]:
    """Precision, recall and F1 of each class (0 where undefined, as scikit-learn's zero_division=0)."""
    precision, recall, f1, support = _precision_recall_f1(matrix)
    return {"precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist(),
            "support": support.astype(int).tolist()}


def averaged_scores(matrix: np.ndarray) -> dict[str, dict[str, float]]:
    r"""Macro and support-weighted averages of precision, recall and F1 from a confusion matrix.

    ``matrix`` is (K, K), rows the true class and columns the predicted one. With the
    per-class scores :math:`s_c` of ``per_class_scores`` (0 where undefined) and the
    supports :math:`S_c` (row sums):

    .. math::

        \text{macro} = \frac{1}{K} \sum_{c=1}^{K} s_c, \qquad
        \text{weighted} = \frac{\sum_c S_c\, s_c}{\sum_c S_c}

    Every row of the matrix is a class: one that no example belongs to counts in the
    macro average with its zeros (scikit-learn does the same when given ``labels``), so a
    class the evaluation data lacks pulls the macro average down; the weighted average
    gives it weight 0. F1 is averaged per class, not recomputed from the averaged
    precision and recall. With no classes or no examples each average is 0.

    Returns
    -------
    ``{"macro": {"precision", "recall", "f1"}, "weighted": {"precision", "recall", "f1"}}``,
    Python floats.
    """
    precision, recall, f1, support = _precision_recall_f1(matrix)
    total = support.sum()
    out = {"macro": {}, "weighted": {}}
    for name, scores in (("precision", precision), ("recall", recall), ("f1", f1)):
        out["macro"][name] = float(scores.mean()) if scores.size else 0.0
        out["weighted"][name] = float((scores * support).sum() / total) if total > 0 else 0.0
    return out


def top_k_accuracy(probabilities: np.ndarray, labels: np.ndarray, k: int) -> float:
    r"""Fraction of examples whose true class is among the ``k`` highest-scoring classes.

    ``probabilities`` is (N, K) (any scores: only their order within a row matters),
    ``labels`` (N,) class indices. The true class :math:`y_n` of example n has the rank

    .. math::

        r_n = \#\{j : p_{nj} > p_{n y_n}\} + \#\{j < y_n : p_{nj} = p_{n y_n}\}

    (0 for the top), and the example is a hit when :math:`r_n < k`.

    Ties: classes with equal scores are ranked by class index, the lower index first,
    which is what a stable sort on the negated scores gives. ``np.argmax`` breaks ties the
    same way, so ``top_k_accuracy(p, y, 1)`` equals ``accuracy(p, y)``. (scikit-learn's
    ``top_k_accuracy_score`` ranks the *higher* index first among ties; TensorFlow's
    ``in_top_k`` counts every tie as a hit. A uniform output row is thus a hit here only
    when the true class is among the first k indices.)

    A label outside ``0..K-1`` (the data has more classes than the network outputs) is
    never a hit; with ``k >= K`` every other example is. No examples: NaN, as
    ``accuracy``.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if probabilities.ndim != 2 or len(probabilities) != len(labels):
        raise ValueError(f"probabilities must be (N, K) and labels (N,); got {probabilities.shape} and {labels.shape}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    n, num_classes = probabilities.shape
    if n == 0:
        return float("nan")
    known = (labels >= 0) & (labels < num_classes)
    true_score = probabilities[np.arange(n), np.where(known, labels, 0)][:, None]  # (N, 1)
    lower_index = np.arange(num_classes)[None, :] < labels[:, None]  # (N, K)
    rank = (probabilities > true_score).sum(axis=1) + ((probabilities == true_score) & lower_index).sum(axis=1)
    return float(np.mean(known & (rank < k)))


def _binary_labels(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if len(scores) != len(labels):
        raise ValueError(f"scores and labels differ in length: {len(scores)} and {len(labels)}")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 (negative) or 1 (positive)")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    return scores, labels.astype(bool)


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""The receiver operating characteristic: (fpr, tpr, thresholds), each (T + 1,).

    ``scores`` (N,): higher means more likely positive; ``labels`` (N,): 1 positive, 0
    negative. Predicting positive where :math:`s_n \ge t` gives, with P positives and
    Q negatives,

    .. math::

        \text{tpr}(t) = \frac{\#\{n : y_n = 1, s_n \ge t\}}{P}, \qquad
        \text{fpr}(t) = \frac{\#\{n : y_n = 0, s_n \ge t\}}{Q}

    The thresholds are :math:`+\infty` (the point (0, 0): nothing predicted positive)
    followed by each of the T distinct scores in decreasing order, so the last point is
    (1, 1). Examples with equal scores cross the threshold together: a tie is one point,
    and the segment to it is diagonal (the mean of all orders of the tied examples). No
    point is dropped, even where three lie on one line (scikit-learn's
    ``drop_intermediate=False``); fpr and tpr never decrease.

    With no positives (no negatives) tpr (fpr) is 0/0: NaN throughout, and
    ``roc_auc`` is None.
    """
    scores, positive = _binary_labels(scores, labels)
    order = np.argsort(-scores, kind="stable")  # decreasing score
    sorted_scores, sorted_positive = scores[order], positive[order]
    # The last index of each run of equal scores: where the threshold admits the whole tie.
    last_of_tie = np.flatnonzero(np.diff(sorted_scores) != 0)
    last_of_tie = np.append(last_of_tie, len(sorted_scores) - 1) if len(sorted_scores) else last_of_tie
    true_positives = np.cumsum(sorted_positive)[last_of_tie]  # (T,)
    false_positives = (last_of_tie + 1) - true_positives  # (T,)
    true_positives = np.concatenate([[0], true_positives]).astype(np.float64)  # (T + 1,)
    false_positives = np.concatenate([[0], false_positives]).astype(np.float64)
    thresholds = np.concatenate([[np.inf], sorted_scores[last_of_tie]])
    num_positive, num_negative = int(positive.sum()), int((~positive).sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        tpr = true_positives / num_positive if num_positive else np.full_like(true_positives, np.nan)
        fpr = false_positives / num_negative if num_negative else np.full_like(false_positives, np.nan)
    return fpr, tpr, thresholds


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    r"""Area under ``roc_curve`` by the trapezoid rule; None when one class is absent.

    .. math::

        \text{AUC} = \sum_{i=1}^{T} (\text{fpr}_i - \text{fpr}_{i-1})
        \frac{\text{tpr}_i + \text{tpr}_{i-1}}{2}
        = P(s^+ > s^-) + \tfrac{1}{2} P(s^+ = s^-)

    the second form (Mann-Whitney) over all pairs of one positive and one negative: the
    trapezoids are exactly what makes a tie count one half. Without positives or without
    negatives no pair exists and the area is undefined.
    """
    fpr, tpr, _ = roc_curve(scores, labels)
    if np.isnan(fpr).any() or np.isnan(tpr).any():
        return None
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def _json_number(value: float) -> float | None:
    """JSON has no NaN or infinity: None for those."""
    return float(value) if np.isfinite(value) else None


TOP_K = (2, 3, 5)


def classification_scores(labels: np.ndarray, probabilities: np.ndarray, matrix: np.ndarray) -> dict:
    r"""What evaluation adds to eval.json beyond accuracy and the per-class scores; JSON-safe.

    ``labels`` (N,) true classes, ``probabilities`` (N, K) (one sigmoid unit, (N,) or
    (N, 1), is read as two classes by ``class_probabilities``), ``matrix`` the confusion
    matrix of the same predictions.

    Returns
    -------
    ``{"macro": {"precision", "recall", "f1"}, "weighted": {...}`` (``averaged_scores``),
    ``"top_k_accuracy": {"2": ..., "3": ..., "5": ...}`` for each k of (2, 3, 5) below K
    (empty for K <= 2, where top-2 is trivially 1), and for two classes only
    ``"roc_auc"`` (a float, or None when the data holds one class) and
    ``"roc_curve": {"fpr": [...], "tpr": [...], "thresholds": [...]}`` (None when the
    AUC is None) with class 1 the positive class and its probability the score; the first
    threshold, :math:`+\infty`, is written as None. The curve is exact: one point per
    distinct score, at most N + 1. Undefined numbers (no examples) are None.
    """
    probabilities = class_probabilities(np.asarray(probabilities))
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    num_classes = probabilities.shape[1]
    out = {**averaged_scores(matrix),
           "top_k_accuracy": {str(k): _json_number(top_k_accuracy(probabilities, labels, k))
                              for k in TOP_K if k < num_classes}}
    if num_classes == 2:
        positive = (labels == 1).astype(np.int64)  # one against the rest, should a label lie beyond 1
        scores = probabilities[:, 1]
        auc = roc_auc(scores, positive)
        out["roc_auc"] = auc
        out["roc_curve"] = None
        if auc is not None:
            fpr, tpr, thresholds = roc_curve(scores, positive)
            out["roc_curve"] = {"fpr": fpr.tolist(), "tpr": tpr.tolist(),
                                "thresholds": [_json_number(t) for t in thresholds]}
    return out
