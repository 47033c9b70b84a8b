"""Mergeable per-neuron summaries: exact top-k (and bottom-k), strata, random sample, stats + histogram.

Each recording actor folds its batches into a :class:`Summary` per layer (see ``fold.py``); the
driver merges the actors' summaries. Memory is O(neurons x exemplars x window).

Orders are total, so the result does not depend on batching, actors or order:
- top-k: larger activation, then smaller window_id, then smaller position. A batch may get a
  per-neuron ``floor``: the k-th best (activation, code) its summary already holds. Only
  windows that could beat it are examined, which is exact: any other token has k better ones.
  The bottom-k (the negative side) is the top-k of the negated activations: more negative
  first, ties by the same (window_id, position) order.
- strata (``strata.py``): per octave of the neuron's activating range, the windows of smallest
  hash key; the negative side's over the negated window minima.
- random sample: the ``random_k`` smallest keys. A key is (level, hash): the 5-bit level hashes
  (seed, token) alone, the 58-bit hash (seed, layer, neuron, token), so keys are a uniform random
  order per neuron and a batch only hashes the rows of its lowest levels (``hashing.py``).
  Merging two samples keeps the smallest keys of the union, which is the sample of the union.
- quantiles: a fixed-bin histogram (mergeable by addition) over the tokens that a hash of
  (seed, token) puts in a ``hist_rate`` fraction, the same tokens for every neuron (counting every
  token of every neuron costs more than the rest of the recording). Bins are 8 per octave of
  |activation| from 2**-13 to 2**13 on each side of zero, read from the float's bits; a quantile
  is reported as the geometric middle of its bin, clipped to [min, max], so its relative error is
  under 6.1 % (exact at the extremes of the data) for the counted tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .bestk import PAD_CODE
from .hashing import as_int64, mix64, srl, token_hash
from .strata import Strata

# the low tail too: the negative side and a dense neuron's median are read from it
QUANTILE_LEVELS = (0.001, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999)
_MANT_BITS = 3  # 2**3 bins per octave
_SHIFT = 23 - _MANT_BITS
_LO_EXP, _HI_EXP = -13, 13
_LEVEL0 = (127 + _LO_EXP) << _MANT_BITS  # (exponent, mantissa-top) level of 2**-13
_SIDE = (_HI_EXP - _LO_EXP) << _MANT_BITS  # bins per side inside the range
_CENTER = _SIDE + 1  # bin of |x| < 2**-13; bins _CENTER ± m hold magnitudes [EDGES[m-1], EDGES[m])
N_BINS = 2 * _CENTER + 1
# magnitudes at the bin boundaries: EDGES[0] = 2**-13 ... EDGES[_SIDE] = 2**13
EDGES = (np.arange(_LEVEL0, _LEVEL0 + _SIDE + 1, dtype=np.int32) << _SHIFT).view(np.float32)
_POS_MID = np.sqrt(EDGES[1:].astype(np.float64) * EDGES[:-1])
_BIN_MID = np.concatenate([[-EDGES[-1]], -_POS_MID[::-1], [0.0], _POS_MID, [EDGES[-1]]])

POS_BITS = 20  # window length <= 4096 < 2**20: (window_id, pos) packs into one int64

_HIST_SALT = as_int64(0xD6E8FEB86659FD93)


@dataclass(frozen=True)
class Counts:
    """The exemplars a Summary keeps per neuron."""

    top_k: int
    random_k: int
    quantile_bins: int = 0  # strata per side; 0: none
    quantile_k: int = 0  # windows per stratum
    negative: bool = False  # the negative side: bottom-k and negative strata
    bottom_k: int = 0

    def per_neuron(self) -> int:
        """Exemplar windows per neuron once the corpus filled every set: what a neuron costs in memory."""
        strata = self.quantile_bins * self.quantile_k
        return self.top_k + self.random_k + strata + (self.bottom_k + strata if self.negative else 0)


def hist_rows(seed: int, token_code: torch.Tensor, rate: float) -> torch.Tensor:
    """Indices of the tokens counted in the quantile histogram (a ``rate`` fraction, by hash)."""
    if rate >= 1:
        return torch.arange(len(token_code), device=token_code.device)
    h = srl(mix64(token_hash(seed, token_code) ^ _HIST_SALT), 11)  # 53 bits: exact as a float
    return (h < int(rate * (1 << 53))).nonzero().flatten()


def hist_bins(x: torch.Tensor) -> torch.Tensor:
    """(tokens, neurons) int64 bin of each value of x (float32), read from its bits."""
    bits = x.contiguous().view(torch.int32)
    # (exponent, top mantissa bits) is a log2 level; clamp folds |x| < 2**-13 into the centre
    # bin and |x| >= 2**13 (and inf/nan) into the outermost ones
    m = (((bits & 0x7FFFFFFF) >> _SHIFT) - (_LEVEL0 - 1)).clamp_(0, _SIDE + 1)
    sign = bits >> 31  # 0 or -1: (m ^ sign) - sign is -m for negative x
    return (((m ^ sign) - sign) + _CENTER).to(torch.int64)


def count_bins(hist: torch.Tensor, x: torch.Tensor, ones: torch.Tensor) -> None:
    """Add the values of x (tokens, neurons) into the (neurons, N_BINS) counts ``hist``; ``ones``:
    (neurons, tokens) or wider, of hist's dtype. Each neuron's values scatter into its own row:
    parallel over neurons, ~5x faster than bin-major counting (torch.bincount is slower still)."""
    hist.scatter_add_(1, hist_bins(x.T.contiguous()), ones)


def histogram(x: torch.Tensor) -> torch.Tensor:
    """(neurons, N_BINS) int32 counts of x: (tokens, neurons) float32, binned by its bits."""
    hist = torch.zeros(x.shape[1], N_BINS, dtype=torch.int32, device=x.device)
    count_bins(hist, x, torch.ones(x.shape[::-1], dtype=torch.int32, device=x.device))
    return hist


def _exact_topk(acts: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k along dim 0 of (tokens, neurons), ties at the k-th value broken by smaller row index."""
    vals, idx = acts.topk(k, dim=0)
    thr = vals[-1]
    ambiguous = ((acts >= thr).sum(0, dtype=torch.int32) > k).nonzero().flatten()  # int32: ~2x faster
    if len(ambiguous):
        # torch.topk picks arbitrary members of a tie; re-select those columns by rank:
        # everything above the threshold, then the first (lowest-index) rows equal to it.
        sub, t = acts[:, ambiguous], thr[ambiguous]
        eq = sub == t
        need = k - (sub > t).sum(0)
        take_eq = eq & (eq.cumsum(0) <= need)
        score = (sub > t).to(torch.int8) * 2 + take_eq.to(torch.int8)
        # stable sort on -score keeps lower row indices first among equal scores
        order = torch.sort(-score.to(torch.int16), dim=0, stable=True).indices[:k]
        idx[:, ambiguous] = order
        vals[:, ambiguous] = sub.gather(0, order)
    return vals, idx


Floor = tuple[torch.Tensor, torch.Tensor]  # per neuron: k-th best value and its code
# a neuron with more candidate windows than this takes the dense top-k (of 4, 8, 16, 32 and 64,
# 16-32 measured fastest at 32 windows per batch)
SPARSE_WINDOWS = 16


def dense_top(acts: torch.Tensor, cols: torch.Tensor, k: int, sign: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of sign x the neurons ``cols`` over every token of a (windows, positions, neurons)
    batch: (len(cols), k) values (of sign x activation) and token rows (window * positions + position)."""
    b, t, n = acts.shape
    flat = acts.view(b * t, n)
    sub = flat if len(cols) == n else flat.index_select(1, cols)
    vals, idx = _exact_topk(sub if sign > 0 else -sub, k)
    return vals.T, idx.T


def may_beat(code: torch.Tensor, wmax: torch.Tensor, floor: Floor) -> torch.Tensor:
    """(windows, neurons) bool: the windows that can hold a token better than each neuron's floor.

    A window qualifies if its max beats the floor's value, or ties it and the window does not
    come after the floor's (ties go to smaller codes).
    """
    b = wmax.shape[0]
    fval, fwid = floor[0][None, :], (floor[1] >> POS_BITS)[None, :]
    wid = (code.view(b, -1)[:, 0] >> POS_BITS)[:, None]
    return (wmax > fval) | ((wmax == fval) & (wid <= fwid))


def split_code(code: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return code >> POS_BITS, (code & ((1 << POS_BITS) - 1)).astype(np.int32)


def merge_top(val: np.ndarray, code: np.ndarray, new_val: np.ndarray, new_code: np.ndarray, k: int, sign: int = 1):
    """The k best (by sign x value) of two (neurons, m) top lists: (values, codes, order into
    their concatenation)."""
    val, code = np.concatenate([val, new_val], axis=1), np.concatenate([code, new_code], axis=1)
    # the code orders (window_id, position) lexicographically, so one tiebreak key suffices
    order = np.lexsort((code, -sign * val), axis=1)[:, :k]
    return np.take_along_axis(val, order, 1), np.take_along_axis(code, order, 1), order


def _merge_windows(kept: np.ndarray | None, new: np.ndarray, order: np.ndarray) -> np.ndarray:
    both = new if kept is None else np.concatenate([kept, new], axis=1)
    return np.take_along_axis(both, order[:, :, None], 1)


class Extremes:
    """One side of a layer's neurons (``sign`` 1: the largest activations; -1: the most negative):
    the exact top-k of sign x activation by token, each entry with its neuron's activations over
    its window (``val``, ``code``: (neurons, k); ``win``: (neurons, k, positions)), and the strata."""

    def __init__(self, n: int, sign: int, k: int, strata: tuple[int, int]):
        self.sign, self.k = sign, k
        self.val = np.zeros((n, 0), np.float32)
        self.code = np.zeros((n, 0), np.int64)
        self.win: np.ndarray | None = None  # (n, k, window) once something was folded
        bins, strata_k = strata
        self.strata = Strata.empty(n, bins, strata_k) if bins else None

    def fold_top(self, cols: np.ndarray | None, val: np.ndarray, code: np.ndarray, win: np.ndarray) -> None:
        """Merge candidates (rows: ``cols`` of the neurons, or all of them) into the top-k."""
        sel = slice(None) if cols is None else cols
        v, c, order = merge_top(self.val[sel], self.code[sel], val, code, self.k, self.sign)
        w = _merge_windows(None if self.win is None else self.win[sel], win, order)
        if cols is None:
            self.val, self.code, self.win = v, c, w
        else:
            assert self.win is not None, "a column fold comes after the first whole fold"
            self.val[cols], self.code[cols], self.win[cols] = v, c, w

    def merge(self, other: Extremes) -> None:
        if other.win is not None:
            self.fold_top(None, other.val, other.code, other.win)
        if self.strata is not None and other.strata is not None:
            self.strata = self.strata.merge(other.strata)


class Summary:
    """Running summaries of one layer's selected neurons.

    Each exemplar carries its neuron's activations over the exemplar's whole window, so that no
    second pass is needed: memory is O(neurons x exemplars x window), whatever the corpus size.
    """

    def __init__(self, n: int, counts: Counts):
        self.counts = counts
        strata = (counts.quantile_bins, counts.quantile_k)
        self.top = Extremes(n, 1, counts.top_k, strata)
        self.bottom = Extremes(n, -1, counts.bottom_k, strata) if counts.negative else None
        self.random_k = counts.random_k
        self.rnd_key = np.zeros((n, 0), np.int64)
        self.rnd_code = np.zeros((n, 0), np.int64)
        self.rnd_val = np.zeros((n, 0), np.float32)
        self.rnd_win: np.ndarray | None = None
        self.count = 0
        self.sum = np.zeros(n)
        self.sumsq = np.zeros(n)
        self.min = np.full(n, np.inf, np.float32)
        self.max = np.full(n, -np.inf, np.float32)
        self.hist = np.zeros((n, N_BINS), np.int64)
        self.hist_count = 0  # tokens counted in the histogram

    def sides(self) -> list[Extremes]:
        return [self.top] if self.bottom is None else [self.top, self.bottom]

    def window_ids(self) -> np.ndarray:
        """The sorted ids of every window an exemplar of this summary holds."""
        codes = [self.rnd_code.reshape(-1)]
        for side in self.sides():
            codes.append(side.code.reshape(-1))
            if side.strata is not None:
                codes.append(side.strata.code.reshape(-1))
        code = np.concatenate(codes)
        return np.unique(code[code != PAD_CODE] >> POS_BITS)

    def fold_random(
        self, cols: np.ndarray | None, key: np.ndarray, code: np.ndarray, val: np.ndarray, win: np.ndarray
    ) -> None:
        """Merge sampled entries into the random sample: the ``random_k`` smallest keys win."""
        sel = slice(None) if cols is None else cols
        key, code, val = (
            np.concatenate([a[sel], b], axis=1)
            for a, b in ((self.rnd_key, key), (self.rnd_code, code), (self.rnd_val, val))
        )
        order = np.lexsort((code, key), axis=1)[:, : self.random_k]
        k, c, v = (np.take_along_axis(a, order, 1) for a in (key, code, val))
        w = _merge_windows(None if self.rnd_win is None else self.rnd_win[sel], win, order)
        if cols is None:
            self.rnd_key, self.rnd_code, self.rnd_val, self.rnd_win = k, c, v, w
        else:
            assert self.rnd_win is not None, "a column fold comes after the first whole fold"
            self.rnd_key[cols], self.rnd_code[cols], self.rnd_val[cols], self.rnd_win[cols] = k, c, v, w

    def fold_stats(self, count: int, sums: tuple, extremes: tuple, hist: np.ndarray | None, hist_count: int) -> None:
        """Add ``count`` tokens: per neuron ``sums`` (of the activations, of their squares) and
        ``extremes`` (min, max), and ``hist_count`` of them counted in ``hist``."""
        (total, sumsq), (lo, hi) = sums, extremes
        self.count += int(count)
        self.sum += np.asarray(total, np.float64)
        self.sumsq += np.asarray(sumsq, np.float64)
        np.minimum(self.min, lo, out=self.min)
        np.maximum(self.max, hi, out=self.max)
        if hist is not None:  # a LayerFold counts its histogram apart and adds it at the end
            self.hist += hist
        self.hist_count += int(hist_count)

    def merge(self, other: Summary) -> None:
        """Fold another Summary of the same neurons (another actor's share of the corpus) in."""
        if not other.count:
            return
        for mine, theirs in zip(self.sides(), other.sides()):
            mine.merge(theirs)
        if other.rnd_win is not None:
            self.fold_random(None, other.rnd_key, other.rnd_code, other.rnd_val, other.rnd_win)
        self.fold_stats(other.count, (other.sum, other.sumsq), (other.min, other.max), other.hist, other.hist_count)

    def stats(self, levels=QUANTILE_LEVELS) -> dict[str, np.ndarray]:
        mean = self.sum / max(self.count, 1)
        var = np.maximum(self.sumsq / max(self.count, 1) - mean * mean, 0.0)
        return {
            "mean": mean,
            "std": np.sqrt(var),
            "min": self.min,
            "max": self.max,
            "quantiles": self.quantiles(levels),
        }

    def quantiles(self, levels) -> np.ndarray:
        cdf = np.cumsum(self.hist, axis=1)
        out = np.full((len(self.hist), len(levels)), np.nan, np.float32)
        if not self.hist_count:  # a corpus too small for its histogram sample
            return out
        for j, q in enumerate(levels):
            # the bin holding the ceil(q * n)-th smallest value
            target = np.maximum(np.ceil(q * self.hist_count), 1)
            b = (cdf < target).sum(axis=1)
            out[:, j] = np.clip(_BIN_MID[b], self.min, self.max)
        return out
