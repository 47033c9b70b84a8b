"""Mergeable per-neuron summaries: exact top-k, hashed random sample, running stats + histogram.

Each recording actor folds its batches into a :class:`Summary` per layer (see ``fold.py``); the
driver merges the actors' summaries. Memory is O(neurons × k × window).

Orders are total, so the result does not depend on batching, actors or order:
- top-k: larger activation, then smaller window_id, then smaller position. A batch may get a
  per-neuron ``floor``: the k-th best (activation, code) its summary already holds. Only
  windows that could beat it are examined, which is exact: any other token has k better ones.
- random sample: the ``random_k`` smallest keys. A key is (level, hash): the 5-bit level hashes
  (seed, token) alone, the 58-bit hash (seed, layer, neuron, token), so keys are a uniform random
  order per neuron and a batch only hashes the rows of its lowest levels. Merging two samples
  keeps the smallest keys of the union, which is the sample of the union.
- quantiles: a fixed-bin histogram (mergeable by addition) over the tokens that a hash of
  (seed, token) puts in a ``hist_rate`` fraction, the same tokens for every neuron (counting every
  token of every neuron costs more than the rest of the recording). Bins are 8 per octave of
  |activation| from 2**-13 to 2**13 on each side of zero, read from the float's bits; a quantile
  is reported as the geometric middle of its bin, clipped to [min, max], so its relative error is
  under 6.1 % (exact at the extremes of the data) for the counted tokens.
"""

from __future__ import annotations

import numpy as np
import torch

QUANTILE_LEVELS = (0.5, 0.9, 0.99, 0.999)
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
SAMPLE_LEVELS = 32  # random-sample levels (5 bits above the 58-bit hash: keys stay non-negative)


def _signed(c: int) -> int:
    return c - (1 << 64) if c >= 1 << 63 else c


_C1, _C2, _GOLD = _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB), _signed(0x9E3779B97F4A7C15)
_HIST_SALT = _signed(0xD6E8FEB86659FD93)


def srl(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift on int64 (torch's >> is arithmetic)."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def mix64(x: torch.Tensor) -> torch.Tensor:
    """splitmix64 finalizer in wrapping int64 arithmetic: a cheap, well-mixed integer hash."""
    x = x ^ srl(x, 30)
    x = x * _C1
    x = x ^ srl(x, 27)
    x = x * _C2
    return x ^ srl(x, 31)


def token_hash(seed: int, token_code: torch.Tensor) -> torch.Tensor:
    return mix64(token_code.to(torch.int64) * _GOLD + seed)


def neuron_hash(seed: int, layer: int, neurons: torch.Tensor) -> torch.Tensor:
    """A seeded hash per recorded neuron of a layer: each neuron samples its own random tokens."""
    return mix64(neurons.to(torch.int64) + ((layer + 1) << 32) + _signed((seed * _GOLD) % (1 << 64)))


def keys_from_hashes(th: torch.Tensor, nh: torch.Tensor) -> torch.Tensor:
    """(tokens, neurons) sample keys from token hashes ``th`` and neuron hashes ``nh``: the level
    (top bits of the token hash, shared by every neuron) above a per-pair hash."""
    return (srl(th, 59) << 58)[:, None] | srl(mix64(th[:, None] ^ nh[None, :]), 6)


def sample_keys(seed: int, layer: int, neurons: torch.Tensor, token_code: torch.Tensor) -> torch.Tensor:
    """(tokens, neurons) non-negative int64 keys for the random sample; token_code = wid<<20 | pos."""
    return keys_from_hashes(token_hash(seed, token_code), neuron_hash(seed, layer, neurons))


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


def dense_top(acts: torch.Tensor, cols: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of the neurons ``cols`` over every token of a (windows, positions, neurons) batch:
    (len(cols), k) values and token rows (window * positions + position)."""
    b, t, n = acts.shape
    flat = acts.view(b * t, n)
    vals, idx = _exact_topk(flat if len(cols) == n else flat.index_select(1, cols), k)
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


def merge_top(val: np.ndarray, code: np.ndarray, new_val: np.ndarray, new_code: np.ndarray, k: int):
    """The k best of two (neurons, m) top lists: (values, codes, order into their concatenation)."""
    val, code = np.concatenate([val, new_val], axis=1), np.concatenate([code, new_code], axis=1)
    # the code orders (window_id, position) lexicographically, so one tiebreak key suffices
    order = np.lexsort((code, -val), axis=1)[:, :k]
    return np.take_along_axis(val, order, 1), np.take_along_axis(code, order, 1), order


def _merge_windows(kept: np.ndarray | None, new: np.ndarray, order: np.ndarray) -> np.ndarray:
    both = new if kept is None else np.concatenate([kept, new], axis=1)
    return np.take_along_axis(both, order[:, :, None], 1)


class Summary:
    """Running summaries of one layer's selected neurons.

    Each top / random entry carries its neuron's activations over the entry's whole window
    (``top_win`` / ``rnd_win``: (neurons, k, positions)), so that no second pass is needed:
    memory is O(neurons x k x window), whatever the corpus size.
    """

    def __init__(self, n: int, top_k: int, random_k: int):
        self.top_k, self.random_k = top_k, random_k
        self.top_val = np.full((n, 0), -np.inf, np.float32)
        self.top_code = np.zeros((n, 0), np.int64)
        self.rnd_key = np.zeros((n, 0), np.int64)
        self.rnd_code = np.zeros((n, 0), np.int64)
        self.rnd_val = np.zeros((n, 0), np.float32)
        self.count = 0
        self.sum = np.zeros(n)
        self.sumsq = np.zeros(n)
        self.min = np.full(n, np.inf, np.float32)
        self.max = np.full(n, -np.inf, np.float32)
        self.hist = np.zeros((n, N_BINS), np.int64)
        self.hist_count = 0  # tokens counted in the histogram
        self.top_win: np.ndarray | None = None  # (n, k, window) once something was folded
        self.rnd_win: np.ndarray | None = None

    def fold_top(self, cols: np.ndarray | None, val: np.ndarray, code: np.ndarray, win: np.ndarray) -> None:
        """Merge candidates (rows: ``cols`` of the neurons, or all of them) into the top-k."""
        sel = slice(None) if cols is None else cols
        v, c, order = merge_top(self.top_val[sel], self.top_code[sel], val, code, self.top_k)
        w = _merge_windows(None if self.top_win is None else self.top_win[sel], win, order)
        if cols is None:
            self.top_val, self.top_code, self.top_win = v, c, w
        else:
            assert self.top_win is not None, "a column fold comes after the first whole fold"
            self.top_val[cols], self.top_code[cols], self.top_win[cols] = v, c, w

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
        assert other.top_win is not None  # it counted tokens, so it holds windows
        self.fold_top(None, other.top_val, other.top_code, other.top_win)
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
