"""Evaluation metrics for clustering, classification and out-of-distribution detection.

Inputs may be numpy arrays, torch tensors or sequences; outputs are Python
floats or numpy arrays.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.stats import binomtest
from sklearn import metrics as skm

__all__ = [
    "cluster_accuracy",
    "matched_accuracy",
    "nmi",
    "ari",
    "auroc",
    "confusion_matrix",
    "macro_f1",
    "all_right_probability",
]


def _to_numpy(values: Any, name: str) -> np.ndarray:
    if hasattr(values, "detach"):  # torch tensor, without importing torch here
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    return array


def _labels(true: Any, pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t = _to_numpy(true, "true")
    p = _to_numpy(pred, "pred")
    if t.shape != p.shape:
        raise ValueError(f"true and pred differ in length: {t.shape[0]} vs {p.shape[0]}")
    if t.size == 0:
        raise ValueError("true and pred are empty")
    for name, a in (("true", t), ("pred", p)):
        if not np.issubdtype(a.dtype, np.integer):
            if not np.all(np.equal(np.mod(a, 1), 0)):
                raise ValueError(f"{name} must hold integer labels, got dtype {a.dtype}")
        if a.min() < 0:
            raise ValueError(f"{name} holds negative labels (min {a.min()})")
    return t.astype(np.int64), p.astype(np.int64)


def cluster_accuracy(
    true: Any, pred: Any, num_classes: int | None = None
) -> tuple[float, dict[int, int]]:
    """Accuracy under the best one-to-one matching of clusters to classes (Hungarian).

    Returns (accuracy, mapping) with mapping: predicted cluster -> true class.
    With more clusters than classes only as many clusters as classes are matched;
    the others are absent from the mapping and their samples count as errors
    (a many-to-one mapping would reward over-clustering).
    """
    t, p = _labels(true, pred)
    n_classes = int(t.max()) + 1 if num_classes is None else int(num_classes)
    if t.max() >= n_classes:
        raise ValueError(f"true holds label {t.max()} but num_classes is {n_classes}")
    n_clusters = max(int(p.max()) + 1, n_classes)
    counts = np.zeros((n_clusters, n_classes), dtype=np.int64)
    np.add.at(counts, (p, t), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    accuracy = float(counts[rows, cols].sum()) / t.size
    return accuracy, {int(r): int(c) for r, c in zip(rows, cols)}


def matched_accuracy(true: Any, pred: Any, num_classes: int | None = None) -> float:
    """The accuracy part of `cluster_accuracy`."""
    return cluster_accuracy(true, pred, num_classes)[0]


def nmi(true: Any, pred: Any) -> float:
    """Normalised mutual information (sklearn, arithmetic normalisation)."""
    t, p = _labels(true, pred)
    return float(skm.normalized_mutual_info_score(t, p))


def ari(true: Any, pred: Any) -> float:
    """Adjusted Rand index (sklearn)."""
    t, p = _labels(true, pred)
    return float(skm.adjusted_rand_score(t, p))


def auroc(scores_in: Any, scores_out: Any) -> float:
    """Area under the ROC curve separating in- from out-of-distribution samples.

    Higher scores must mean "more in-distribution" (e.g. negative energy).
    """
    s_in = _to_numpy(scores_in, "scores_in").astype(np.float64)
    s_out = _to_numpy(scores_out, "scores_out").astype(np.float64)
    if s_in.size == 0 or s_out.size == 0:
        raise ValueError("auroc needs at least one in- and one out-of-distribution score")
    if not (np.isfinite(s_in).all() and np.isfinite(s_out).all()):
        raise ValueError("auroc: scores must be finite")
    labels = np.concatenate([np.ones(s_in.size), np.zeros(s_out.size)])
    return float(skm.roc_auc_score(labels, np.concatenate([s_in, s_out])))


def confusion_matrix(
    true: Any, pred: Any, num_classes: int, normalise_rows: bool = True
) -> np.ndarray:
    """[num_classes, num_classes] matrix, rows = true class, columns = prediction.

    With normalise_rows each row sums to 1 (rows of absent classes stay 0).
    """
    t, p = _labels(true, pred)
    if max(t.max(), p.max()) >= num_classes:
        raise ValueError(
            f"labels go up to {max(t.max(), p.max())} but num_classes is {num_classes}"
        )
    matrix = skm.confusion_matrix(t, p, labels=np.arange(num_classes)).astype(np.float64)
    if normalise_rows:
        totals = matrix.sum(axis=1, keepdims=True)
        matrix = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    return matrix


def macro_f1(true: Any, pred: Any, num_classes: int) -> float:
    """Macro-averaged F1 over classes 0..num_classes-1 (classes never seen nor predicted score 0)."""
    t, p = _labels(true, pred)
    return float(
        skm.f1_score(t, p, labels=np.arange(num_classes), average="macro", zero_division=0)
    )


def all_right_probability(wrong: int, total: int, group: int, confidence: float = 0.95) -> dict:
    """The chance that a group of `group` items, drawn without replacement from `total` items
    of which `wrong` are misread, has every item right: what the sum accuracy of N-digit
    addition (group = 2N images) would be over every random pairing of the same test images.

    Returns {"mean": C(total - wrong, group) / C(total, group) (exact), "low", "high"}: the
    Clopper-Pearson interval of the per-item accuracy, raised to the power `group`, i.e. how
    far the true figure may lie from this test set's.
    """
    if not 0 <= wrong <= total or not 0 < group <= total:
        raise ValueError(f"need 0 <= wrong <= total and 0 < group <= total, got wrong={wrong}, "
                         f"total={total}, group={group}")
    right = total - wrong
    log_mean = (math.lgamma(right + 1) - math.lgamma(right - group + 1) - math.lgamma(total + 1)
                + math.lgamma(total - group + 1)) if right >= group else -math.inf
    interval = binomtest(right, total).proportion_ci(confidence_level=confidence, method="exact")
    return {"mean": math.exp(log_mean), "low": interval.low ** group, "high": interval.high ** group}
