"""GLUE's metrics, with numpy only: accuracy, F1 (of the positive class), Matthews correlation,
Pearson and Spearman correlation.

Each takes 1-D arrays of equal length (class ids, or floats for the correlations) and returns a
float. A degenerate input (no positive predictions, a constant column) gives 0.0 where the
formula divides by zero, as scikit-learn and scipy report it (sklearn warns and returns 0 for F1
and MCC; a constant input has no correlation, reported here as 0.0 rather than NaN so that a
sweep can still rank it).
"""

from __future__ import annotations

import numpy as np


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"metrics need two non-empty arrays of one length, got {a.shape} and {b.shape}")
    return a, b


def accuracy(predictions, labels) -> float:
    """Fraction of predictions equal to the label."""
    p, y = _pair(predictions, labels)
    return float(np.mean(p == y))


def f1(predictions, labels, positive: int = 1) -> float:
    """F1 of class ``positive``: 2 TP / (2 TP + FP + FN) (GLUE's MRPC and QQP: positive is 1)."""
    p, y = _pair(predictions, labels)
    tp = np.sum((p == positive) & (y == positive))
    fp = np.sum((p == positive) & (y != positive))
    fn = np.sum((p != positive) & (y == positive))
    denominator = 2 * tp + fp + fn
    return float(2 * tp / denominator) if denominator else 0.0


def matthews(predictions, labels) -> float:
    """Matthews correlation coefficient, multiclass (Gorodkin's R_K; for two classes
    (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN))). GLUE's CoLA metric."""
    p, y = _pair(predictions, labels)
    classes, codes = np.unique(np.concatenate([y, p]), return_inverse=True)
    k, n = len(classes), len(y)
    confusion = np.zeros((k, k), dtype=np.float64)  # (true, predicted)
    np.add.at(confusion, (codes[:n], codes[n:]), 1.0)
    t = confusion.sum(axis=1)  # times each class truly occurs
    q = confusion.sum(axis=0)  # times each class was predicted
    c, s = np.trace(confusion), float(n)
    denominator = np.sqrt((s * s - q @ q) * (s * s - t @ t))
    return float((c * s - t @ q) / denominator) if denominator else 0.0


def pearson(predictions, labels) -> float:
    """Pearson's r: covariance over the product of standard deviations."""
    x, y = _pair(predictions, labels)
    x, y = x.astype(np.float64) - x.mean(), y.astype(np.float64) - y.mean()
    denominator = np.sqrt(np.sum(x * x) * np.sum(y * y))
    return float(np.sum(x * y) / denominator) if denominator else 0.0


def ranks(values) -> np.ndarray:
    """1-based ranks, ties sharing the mean of the ranks they span (scipy's rankdata "average")."""
    v = np.asarray(values).ravel()
    order = np.argsort(v, kind="stable")
    sorted_v = v[order]
    # Start of each run of equal values in the sorted order.
    starts = np.flatnonzero(np.r_[True, sorted_v[1:] != sorted_v[:-1]])
    ends = np.r_[starts[1:], len(v)]  # exclusive
    average = (starts + ends + 1) / 2.0  # mean of 1-based ranks starts+1 .. ends
    out = np.empty(len(v), dtype=np.float64)
    out[order] = np.repeat(average, ends - starts)
    return out


def spearman(predictions, labels) -> float:
    """Spearman's rho: Pearson's r of the ranks (ties averaged)."""
    x, y = _pair(predictions, labels)
    return pearson(ranks(x), ranks(y))


CLASSIFICATION_METRICS = {"accuracy": accuracy, "f1": f1, "matthews": matthews}
"""Metrics of predicted class ids against gold class ids."""

REGRESSION_METRICS = {"pearson": pearson, "spearman": spearman}
"""Metrics of predicted scores against gold scores."""
