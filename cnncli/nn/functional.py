"""Numerically stable elementwise functions shared by activations and losses."""

from __future__ import annotations

import numpy as np


def sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-z) without overflow: uses e^-|z| on both branches."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def log_sigmoid(z: np.ndarray) -> np.ndarray:
    """ln sigmoid(z) = -softplus(-z), finite for any finite z."""
    return -(np.maximum(-z, 0) + np.log1p(np.exp(-np.abs(z))))


def softplus(z: np.ndarray) -> np.ndarray:
    """ln(1 + e^z) = max(z, 0) + ln(1 + e^-|z|): no overflow for any finite z."""
    return np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))


def softmax(z: np.ndarray) -> np.ndarray:
    """Softmax along the last axis, shifted by the row maximum."""
    shifted = z - z.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax(z: np.ndarray) -> np.ndarray:
    """ln softmax(z) along the last axis (log-sum-exp, shifted)."""
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
