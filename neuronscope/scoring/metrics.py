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


def auroc_weighted(values, labels, weights) -> np.ndarray:
    """AUROC (ties one half) for each row of item ``weights`` (resamples, items): the bootstrap's
    statistic without copying items. NaN where a class has no weight."""
    v, y = np.asarray(values, dtype=np.float64), np.asarray(labels, dtype=bool)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if not len(v):
        return np.full(len(w), math.nan)
    order = np.argsort(v, kind="stable")
    v, y, w = v[order], y[order], w[:, order]
    starts = np.r_[0, np.flatnonzero(np.diff(v)) + 1]  # groups of tied values
    pos = np.add.reduceat(w * y, starts, axis=1)
    neg = np.add.reduceat(w * ~y, starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg  # negative weight strictly below each group
    den = pos.sum(1) * neg.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (pos * (below + 0.5 * neg)).sum(1) / den, math.nan)


def pearson_weighted(pred, true, weights) -> np.ndarray:
    """Pearson r for each row of item ``weights``; 0.0 where either side is constant."""
    p, t = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    tot = w.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        pm, tm = (w @ p)[:, None] / tot, (w @ t)[:, None] / tot
        cov = (w * (p - pm) * (t - tm)).sum(1)
        den = np.sqrt((w * (p - pm) ** 2).sum(1) * (w * (t - tm) ** 2).sum(1))
        r = np.where(den > 0, cov / den, 0.0)
    return np.clip(np.nan_to_num(r), -1.0, 1.0)


def mean_weighted(values, weights) -> np.ndarray:
    """The mean of ``values`` for each row of item ``weights``; NaN where a row weighs nothing."""
    v = np.asarray(values, dtype=np.float64)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w @ v) / w.sum(1)


def bootstrap_counts(groups, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` bootstrap resamples of the items' groups (e.g. their windows, which share context),
    each drawing the groups with replacement: (n, groups) times each group was drawn, and each
    item's group index."""
    g = np.unique(np.asarray(groups), return_inverse=True)[1].reshape(-1)
    k = int(g.max()) + 1 if len(g) else 0
    counts = np.random.default_rng(seed).multinomial(k, np.full(k, 1 / k), size=n) if k else np.zeros((n, 0))
    return counts.astype(np.float64), g


def bootstrap_weights(groups, n: int, seed: int = 0) -> np.ndarray:
    """(n, items) weights of ``bootstrap_counts``' resamples: an item weighs as often as its group
    was drawn."""
    counts, g = bootstrap_counts(groups, n, seed)
    return counts[:, g]


def outranked(values, others) -> np.ndarray:
    """Per value, how many of ``others`` it is above, ties counting one half (whole or half numbers)."""
    o = np.sort(np.asarray(others, dtype=np.float64))
    below, upto = np.searchsorted(o, values, "left"), np.searchsorted(o, values, "right")
    return below + 0.5 * (upto - below)


def outranked_by_group(values, others, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """(values, n_groups): ``outranked(values, others[groups == j])`` for every group j at once,
    from one sort of ``others`` and a running count of each group along it, kept only at the
    ranks that ``values`` read (two per value, however many ``others`` there are)."""
    order = np.argsort(others, kind="stable")
    o = np.asarray(others, dtype=np.float64)[order]
    v = np.asarray(values, dtype=np.float64)
    ranks, back = np.unique(np.r_[np.searchsorted(o, v, "left"), np.searchsorted(o, v, "right")], return_inverse=True)
    # seen[m, j]: others of group j below ranks[m]; each other is tallied at the first rank past it
    past = np.searchsorted(ranks, np.arange(len(o)), "right")
    tally = np.bincount(past * n_groups + groups[order], minlength=(len(ranks) + 1) * n_groups)
    seen = np.cumsum(tally.reshape(len(ranks) + 1, n_groups), axis=0, dtype=np.float64)[back.reshape(-1)]
    below, upto = seen[: len(v)], seen[len(v) :]
    return below + 0.5 * (upto - below)


def auroc_resampled(values, labels, groups, counts) -> np.ndarray:
    """``auroc_weighted(values, labels, counts[:, groups])`` for every resample at once, from
    the groups' pairs: each (activating, quiet) pair of items is tallied once into the cell of
    their two groups (1 above, 1/2 tied), and a resample's AUROC is its counts' quadratic form over
    the cells. Counts are whole numbers and tallies halves, so every sum is exact in float64: the
    same result as ``auroc_weighted``, without a (resamples, items) array per call."""
    v, y = np.asarray(values, dtype=np.float64), np.asarray(labels, dtype=bool)
    g, c = np.asarray(groups), np.asarray(counts, dtype=np.float64)
    pos, neg = v[y], v[~y]
    if not len(pos) or not len(neg):
        return np.full(len(c), math.nan)
    ps, gp = np.unique(g[y], return_inverse=True)  # the groups holding activating items
    ns, gn = np.unique(g[~y], return_inverse=True)  # ... and quiet ones
    beaten = outranked_by_group(pos, neg, gn, len(ns))  # (activating, quiet groups)
    order = np.argsort(gp, kind="stable")
    cells = np.add.reduceat(beaten[order], np.concatenate([[0], np.flatnonzero(np.diff(gp[order])) + 1]), axis=0)
    cp, cn = c[:, ps], c[:, ns]
    # einsum's own loops, not BLAS: these products are small, and a BLAS thread pool spins on a busy
    # machine; two products, not one of three operands, which einsum would loop over naively
    num = np.einsum("bn,bn->b", np.einsum("bp,pn->bn", cp, cells), cn)
    den = np.einsum("bp,p->b", cp, np.bincount(gp).astype(np.float64)) * np.einsum(
        "bn,n->b", cn, np.bincount(gn).astype(np.float64)
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, math.nan)


def interval(draws: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap ``draws`` (NaN ones left out)."""
    d = np.asarray(draws, dtype=np.float64)
    d = d[np.isfinite(d)]
    if not len(d):
        return math.nan, math.nan
    lo, hi = np.quantile(d, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)
