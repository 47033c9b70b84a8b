"""Score functions: plain pure functions of predictions and truth, finite wherever defined."""

from __future__ import annotations

import math

import numpy as np


def pearson(pred, true) -> float:
    """Pearson r; 0.0 when either side is constant (an explanation that predicts the same value
    everywhere explains nothing) or empty, so a score is always finite."""
    p, t = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    if p.size < 2 or p.size != t.size:
        return 0.0
    p, t = p - p.mean(), t - t.mean()
    denom = math.sqrt(float(p @ p) * float(t @ t))
    if denom == 0 or not math.isfinite(denom):
        return 0.0
    return float(np.clip((p @ t) / denom, -1.0, 1.0))


def auroc(values, labels) -> float:
    """Area under the ROC curve of ``values`` separating True from False labels (Mann-Whitney,
    ties count one half); NaN when either class is empty."""
    v, y = np.asarray(values, dtype=np.float64), np.asarray(labels, dtype=bool)
    pos, neg = v[y], v[~y]
    if not len(pos) or not len(neg):
        return math.nan
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def balanced_accuracy(probabilities, labels, threshold: float = 0.5) -> float:
    """Mean of the true-positive and true-negative rates of ``probabilities > threshold``."""
    p, y = np.asarray(probabilities, dtype=np.float64) > threshold, np.asarray(labels, dtype=bool)
    if not y.any() or y.all():
        return math.nan
    return float(((p & y).sum() / y.sum() + (~p & ~y).sum() / (~y).sum()) / 2)


def pairwise_win(right, wrong) -> float:
    """Share of aligned (right, wrong) pairs where the right explanation scores higher; a tie, or a
    pair where either is NaN (unscorable), counts one half. NaN when there is no pair."""
    r, w = np.asarray(right, dtype=np.float64), np.asarray(wrong, dtype=np.float64)
    if r.shape != w.shape:
        raise ValueError(f"right and wrong scores must pair up: {r.shape} vs {w.shape}")
    if not r.size:
        return math.nan
    wins = np.where(np.isnan(r) | np.isnan(w), 0.5, (r > w) + 0.5 * (r == w))
    return float(wins.mean())
