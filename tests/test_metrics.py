"""Classification metrics against hand computations and brute force; the evaluation pictures.

Averages of precision, recall and F1 are checked on small matrices worked out by hand and
against per-class counts taken from label lists one example at a time; ROC AUC against
the Mann-Whitney probability over every (positive, negative) pair, with ties.
"""

from __future__ import annotations

import json
from itertools import product
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnncli import evaluation_pictures
from cnncli.evaluation_pictures import confusion_png, misclassified_png, roc_png
from cnncli.metrics import (accuracy, averaged_scores, classification_scores, confusion_matrix, per_class_scores,
                            roc_auc, roc_curve, top_k_accuracy)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------- macro and weighted averages
def test_averages_of_a_two_class_matrix_worked_by_hand():
    # rows true, columns predicted: class 0 has 3 right and 1 read as 1; class 1 has 4 right, 2 read as 0.
    scores = averaged_scores(np.array([[3, 1], [2, 4]]))
    precision, recall, f1 = (3 / 5, 4 / 5), (3 / 4, 4 / 6), (6 / 9, 8 / 11)  # F1 = 2TP / (2TP + FP + FN)
    support = (4, 6)
    assert scores["macro"] == pytest.approx({"precision": 0.7, "recall": 17 / 24, "f1": 23 / 33})
    assert scores["macro"] == pytest.approx({"precision": np.mean(precision), "recall": np.mean(recall),
                                             "f1": np.mean(f1)})
    assert scores["weighted"] == pytest.approx({"precision": 0.72, "recall": 0.7,
                                                "f1": (4 * 6 / 9 + 6 * 8 / 11) / 10})
    assert scores["weighted"]["precision"] == pytest.approx(np.dot(precision, support) / 10)
    assert all(type(v) is float for avg in scores.values() for v in avg.values())


def test_a_class_without_examples_counts_in_the_macro_average_with_zeros():
    # Class 2 is neither present nor predicted: precision, recall, F1 all 0 (zero_division=0).
    with_empty = averaged_scores(np.array([[5, 1, 0], [2, 3, 0], [0, 0, 0]]))
    without = averaged_scores(np.array([[5, 1], [2, 3]]))
    for name in ("precision", "recall", "f1"):
        assert with_empty["macro"][name] == pytest.approx(without["macro"][name] * 2 / 3)
        assert with_empty["weighted"][name] == pytest.approx(without["weighted"][name])  # weight 0
    assert with_empty["macro"]["precision"] == pytest.approx((5 / 7 + 3 / 4) / 3)
    assert with_empty["macro"]["f1"] == pytest.approx((10 / 13 + 6 / 9) / 3)


def test_a_class_predicted_but_never_present_has_precision_zero_and_counts_in_the_macro_average():
    scores = averaged_scores(np.array([[2, 0, 2], [0, 4, 0], [0, 0, 0]]))
    assert scores["macro"]["precision"] == pytest.approx((1 + 1 + 0) / 3)
    assert scores["macro"]["recall"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert scores["weighted"]["recall"] == pytest.approx(6 / 8)


def brute_force_averages(labels: list[int], predicted: list[int], num_classes: int) -> dict:
    """Per-class counts from the lists, one example at a time, then the two averages."""
    per_class = []
    for c in range(num_classes):
        tp = sum(1 for y, p in zip(labels, predicted) if y == c and p == c)
        fp = sum(1 for y, p in zip(labels, predicted) if y != c and p == c)
        fn = sum(1 for y, p in zip(labels, predicted) if y == c and p != c)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class.append((precision, recall, f1, tp + fn))
    total = sum(s for *_, s in per_class)
    out = {"macro": {}, "weighted": {}}
    for i, name in enumerate(("precision", "recall", "f1")):
        out["macro"][name] = sum(row[i] for row in per_class) / num_classes
        out["weighted"][name] = sum(row[i] * row[3] for row in per_class) / total
    return out


@pytest.mark.parametrize("seed", range(6))
def test_averages_match_a_brute_force_count_from_label_lists(seed):
    rng = np.random.default_rng(seed)
    num_classes = 6
    labels = rng.choice(5, size=80, p=[0.5, 0.2, 0.15, 0.1, 0.05])  # class 5 never present
    predicted = np.where(rng.random(80) < 0.6, labels, rng.integers(0, num_classes, 80))
    matrix = confusion_matrix(labels, predicted, num_classes)
    expected = brute_force_averages(labels.tolist(), predicted.tolist(), num_classes)
    got = averaged_scores(matrix)
    for average in ("macro", "weighted"):
        assert got[average] == pytest.approx(expected[average], abs=1e-12)
    # Weighted recall is accuracy: sum_c S_c (TP_c / S_c) / N.
    assert got["weighted"]["recall"] == pytest.approx(np.mean(labels == predicted))
    assert got["macro"]["f1"] == pytest.approx(np.mean(per_class_scores(matrix)["f1"]))


def test_averages_of_no_examples_are_zero():
    assert averaged_scores(np.zeros((3, 3), dtype=int)) == {"macro": {"precision": 0.0, "recall": 0.0, "f1": 0.0},
                                                           "weighted": {"precision": 0.0, "recall": 0.0, "f1": 0.0}}


# ----------------------------------------------------------------------- top-k accuracy
def test_top_k_ties_go_to_the_lower_class_index():
    row = np.array([[0.3, 0.3, 0.2, 0.2]])
    assert top_k_accuracy(row, np.array([0]), 1) == 1.0
    assert top_k_accuracy(row, np.array([1]), 1) == 0.0  # tied with class 0, which ranks first
    assert top_k_accuracy(row, np.array([1]), 2) == 1.0
    assert top_k_accuracy(row, np.array([3]), 3) == 0.0  # tied with class 2, which ranks first
    assert top_k_accuracy(row, np.array([3]), 4) == 1.0
    uniform = np.full((5, 5), 0.2)
    assert top_k_accuracy(uniform, np.arange(5), 2) == pytest.approx(2 / 5)  # only classes 0 and 1 hit


@pytest.mark.parametrize("seed", range(4))
def test_top_k_matches_a_stable_sort_and_top_1_is_accuracy(seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4, size=(200, 7)).astype(np.float64)  # many ties
    labels = rng.integers(0, 7, 200)
    assert top_k_accuracy(scores, labels, 1) == accuracy(scores, labels)
    order = np.argsort(-scores, axis=1, kind="stable")  # lower index first among equals
    for k in range(1, 8):
        expected = np.mean([labels[n] in order[n, :k] for n in range(200)])
        assert top_k_accuracy(scores, labels, k) == pytest.approx(expected)
    assert top_k_accuracy(scores, labels, 7) == 1.0


def test_top_k_counts_a_label_beyond_the_outputs_as_a_miss_and_refuses_k_below_one():
    scores = np.array([[0.5, 0.5], [0.9, 0.1]])
    assert top_k_accuracy(scores, np.array([0, 2]), 2) == 0.5
    with pytest.raises(ValueError, match="k must be"):
        top_k_accuracy(scores, np.array([0, 1]), 0)
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        top_k_accuracy(scores, np.array([0, 1, 1]), 1)
    assert np.isnan(top_k_accuracy(np.zeros((0, 3)), np.zeros(0, dtype=int), 2))


# ------------------------------------------------------------------------------ ROC
def mann_whitney(scores: np.ndarray, labels: np.ndarray) -> float:
    """P(s+ > s-) + P(s+ = s-) / 2 over every (positive, negative) pair."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p, q in product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(8))
def test_auc_is_the_pairwise_probability_with_ties_counting_one_half(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 120))
    labels = rng.integers(0, 2, n)
    labels[:2] = [0, 1]  # both classes present
    # Few distinct values, so that many scores tie, within a class and across the two.
    scores = np.round(rng.normal(labels * rng.uniform(0, 2), 1.0), 0 if seed % 2 else 1)
    assert roc_auc(scores, labels) == pytest.approx(mann_whitney(scores, labels), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_the_curve_is_each_distinct_threshold_counted_directly(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 60)
    labels[:2] = [0, 1]
    scores = rng.integers(0, 12, 60) / 11
    fpr, tpr, thresholds = roc_curve(scores, labels)
    assert len(fpr) == len(tpr) == len(thresholds) == len(np.unique(scores)) + 1  # no point dropped
    assert thresholds[0] == np.inf and (fpr[0], tpr[0]) == (0.0, 0.0)
    assert (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert np.all(np.diff(thresholds) < 0)  # each tie is one threshold
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    for f, t, threshold in zip(fpr, tpr, thresholds):
        predicted_positive = scores >= threshold
        assert t == pytest.approx(np.mean(predicted_positive[labels == 1]))
        assert f == pytest.approx(np.mean(predicted_positive[labels == 0]))


def test_a_small_curve_worked_by_hand_and_one_tie():
    fpr, tpr, thresholds = roc_curve(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(thresholds, [np.inf, 0.8, 0.4, 0.35, 0.1])
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    # A positive and a negative tied at 0.5 cross together: one diagonal step, half the square.
    fpr, tpr, thresholds = roc_curve(np.array([0.5, 0.5]), np.array([0, 1]))
    np.testing.assert_allclose(fpr, [0, 1])
    np.testing.assert_allclose(tpr, [0, 1])
    assert roc_auc(np.array([0.5, 0.5]), np.array([1, 0])) == 0.5


def test_auc_does_not_depend_on_the_order_of_the_examples():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 300)
    scores = rng.integers(0, 20, 300).astype(float)
    shuffle = rng.permutation(300)
    assert roc_auc(scores[shuffle], labels[shuffle]) == pytest.approx(roc_auc(scores, labels), abs=1e-14)


def test_auc_is_undefined_with_one_class_and_labels_must_be_zero_or_one():
    assert roc_auc(np.array([0.2, 0.7, 0.9]), np.array([1, 1, 1])) is None
    assert roc_auc(np.array([0.2, 0.7, 0.9]), np.array([0, 0, 0])) is None
    assert roc_auc(np.zeros(0), np.zeros(0, dtype=int)) is None
    with pytest.raises(ValueError, match="0 .negative. or 1"):
        roc_curve(np.array([0.2, 0.7]), np.array([0, 2]))
    with pytest.raises(ValueError, match="differ in length"):
        roc_curve(np.array([0.2, 0.7]), np.array([0]))


# ------------------------------------------------------------------ what eval.json gets
def outputs_for(num_classes: int, n: int = 90, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n)
    logits = rng.normal(size=(n, num_classes)) + 2.0 * np.eye(num_classes)[labels]
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    matrix = confusion_matrix(labels, probabilities.argmax(axis=1), num_classes)
    return labels, probabilities, matrix


@pytest.mark.parametrize(("num_classes", "top_k_keys"), [(2, set()), (3, {"2"}), (10, {"2", "3", "5"})])
def test_classification_scores_has_each_key_and_is_plain_json(num_classes, top_k_keys):
    labels, probabilities, matrix = outputs_for(num_classes)
    scores = classification_scores(labels, probabilities, matrix)
    binary = {"roc_auc", "roc_curve"} if num_classes == 2 else set()
    assert set(scores) == {"macro", "weighted", "top_k_accuracy"} | binary
    assert set(scores["macro"]) == set(scores["weighted"]) == {"precision", "recall", "f1"}
    assert set(scores["top_k_accuracy"]) == top_k_keys
    for key, value in scores["top_k_accuracy"].items():
        assert value == pytest.approx(top_k_accuracy(probabilities, labels, int(key)))
    assert json.loads(json.dumps(scores, allow_nan=False)) == scores  # no NumPy types, no NaN or inf
    if num_classes == 2:
        curve = scores["roc_curve"]
        assert set(curve) == {"fpr", "tpr", "thresholds"}
        assert curve["thresholds"][0] is None  # +inf
        assert len(curve["fpr"]) == len(curve["tpr"]) == len(curve["thresholds"]) == len(np.unique(probabilities[:, 1])) + 1
        assert scores["roc_auc"] == pytest.approx(mann_whitney(probabilities[:, 1], labels))


def test_classification_scores_of_one_sigmoid_unit_and_of_one_class_present():
    p = np.array([[0.9], [0.2], [0.6], [0.4]])  # one sigmoid unit: the probability of class 1
    labels = np.array([1, 0, 0, 1])
    scores = classification_scores(labels, p, confusion_matrix(labels, (p[:, 0] >= 0.5).astype(int), 2))
    assert scores["roc_auc"] == pytest.approx(0.75)
    only_positives = np.array([1, 1, 1, 1])
    scores = classification_scores(only_positives, p, confusion_matrix(only_positives, (p[:, 0] >= 0.5).astype(int), 2))
    assert scores["roc_auc"] is None and scores["roc_curve"] is None
    json.dumps(scores, allow_nan=False)


def test_classification_scores_of_no_examples_write_none():
    scores = classification_scores(np.zeros(0, dtype=int), np.zeros((0, 4)), np.zeros((4, 4), dtype=int))
    assert scores["top_k_accuracy"] == {"2": None, "3": None}
    json.dumps(scores, allow_nan=False)


# --------------------------------------------------------------------------- pictures
def check_png(path: Path, min_side: int = 150) -> tuple[int, int]:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
    assert min_side <= width <= 4000 and min_side <= height <= 4000
    assert not list(path.parent.glob(".*.tmp"))  # written atomically: no temporary left behind
    return width, height


@pytest.fixture
def figures(monkeypatch):
    """The figures the pictures module saves, kept open to look into (texts, images)."""
    kept = []
    real_save = evaluation_pictures._save

    def keep(fig, path, dpi=100):
        kept.append({"texts": [t.get_text() for ax in fig.axes for t in ax.texts],
                     "titles": [ax.get_title() for ax in fig.axes if ax.get_title()],
                     "images": sum(len(ax.images) for ax in fig.axes)})
        return real_save(fig, path, dpi)

    monkeypatch.setattr(evaluation_pictures, "_save", keep)
    return kept


@pytest.mark.parametrize("num_classes", [1, 2, 10, 25])
def test_confusion_png_numbers_each_cell_up_to_twenty_classes(tmp_path, figures, num_classes):
    labels, _, _ = outputs_for(max(num_classes, 2), n=400)
    labels = labels % num_classes
    predicted = (labels + (np.arange(400) % 3 == 0)) % num_classes
    matrix = confusion_matrix(labels, predicted, num_classes)
    path = confusion_png(matrix, [f"class {i}" for i in range(num_classes)], tmp_path / "confusion.png", "test")
    width, height = check_png(path)
    assert 0.8 < width / height < 1.5
    cell_texts = figures[-1]["texts"]
    if num_classes <= 20:
        assert sorted(map(int, cell_texts)) == sorted(matrix.ravel().tolist())
    else:
        assert cell_texts == []


def test_confusion_png_names_classes_beyond_its_names_by_index(tmp_path):
    matrix = confusion_matrix(np.array([0, 1, 2]), np.array([0, 1, 3]), 2)  # grows to 4 x 4
    check_png(confusion_png(matrix, ["cat", "dog"], tmp_path / "c.png", "grown"))


def test_roc_png(tmp_path):
    labels, probabilities, _ = outputs_for(2, n=200)
    fpr, tpr, _ = roc_curve(probabilities[:, 1], labels)
    width, height = check_png(roc_png(fpr, tpr, roc_auc(probabilities[:, 1], labels), tmp_path / "roc.png", "test"))
    assert abs(width - height) < 50  # equal axes in a square figure
    check_png(roc_png(np.array([0.0, 0.0, 1.0]), np.array([0.0, 1.0, 1.0]), None, tmp_path / "roc_none.png", "x"))


@pytest.mark.parametrize(("count", "channels", "drawn"), [(0, 3, 0), (5, 1, 5), (20, 3, 16)])
def test_misclassified_png_draws_at_most_sixteen_tiles(tmp_path, figures, count, channels, drawn):
    rng = np.random.default_rng(count)
    images = rng.random((count, 12, 12, channels))
    true = rng.integers(0, 10, count)
    predicted = (true + 1) % 10
    probability = rng.random(count)
    path = misclassified_png(images, true, predicted, probability, [f"c{i}" for i in range(10)],
                             tmp_path / "wrong.png", "mistakes")
    check_png(path)
    assert figures[-1]["images"] == drawn
    if count == 0:
        assert figures[-1]["texts"] == ["no misclassified examples"]
    else:
        titles = figures[-1]["titles"]
        assert len(titles) == drawn
        assert titles[0] == f"true c{true[0]} / pred c{predicted[0]} ({probability[0]:.2f})"
