"""Folding one layer's batch activations into its running summary, on the recording actor.

Once a neuron holds k entries, a batch can change only its top-k with a token above its k-th
best, and its random sample with a key below its random_k-th one; only those tokens become
candidates and only the windows that enter are copied, so that after the first batches the
cost per batch is a few passes over the activations (max, min, sums, a sampled histogram).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import topk
from .bestk import PAD_CODE, BestK, worst_rank
from .topk import (
    N_BINS,
    POS_BITS,
    SAMPLE_LEVELS,
    Summary,
    count_bins,
    dense_top,
    hist_rows,
    keys_from_hashes,
    may_beat,
    neuron_hash,
    srl,
    token_hash,
)

# tokens counted into the int32 histogram before it is added into the Summary's int64 one
# (so that no bin can overflow)
HIST_FLUSH_TOKENS = 1 << 30


def token_codes(window_ids: torch.Tensor, positions: int) -> torch.Tensor:
    """(windows * positions,) int64 codes window_id << 20 | position, in row-major order."""
    pos = torch.arange(positions, device=window_ids.device)
    return ((window_ids.to(torch.int64)[:, None] << POS_BITS) + pos[None, :]).reshape(-1)


@dataclass
class BatchTokens:
    """What every layer's fold needs of a batch's tokens, computed once per batch."""

    code: torch.Tensor  # token_codes
    hash: torch.Tensor  # token_hash(seed, code): the random sample's levels and keys
    level: torch.Tensor
    counted: torch.Tensor  # rows counted in the quantile histogram

    @classmethod
    def of(cls, code: torch.Tensor, seed: int, hist_rate: float) -> BatchTokens:
        th = token_hash(seed, code)
        return cls(code, th, srl(th, 59), hist_rows(seed, code, hist_rate))


def _np(x: torch.Tensor) -> np.ndarray:
    return x.contiguous().cpu().numpy()


def _grouped(neuron: torch.Tensor, n_cols: int, values: tuple[torch.Tensor, ...], fill: tuple):
    """Candidates listed one per entry (``neuron`` and ``values`` 1-d) as rows per neuron:
    (cols, each value as (len(cols), c)), padded with ``fill``."""
    order = torch.sort(neuron, stable=True).indices
    neuron = neuron[order]
    count = torch.bincount(neuron, minlength=n_cols)
    cols = count.nonzero().flatten()
    row = torch.cumsum(count > 0, 0)[neuron] - 1
    slot = torch.arange(len(neuron), device=neuron.device) - (torch.cumsum(count, 0) - count)[neuron]
    width = int(count.max()) if len(neuron) else 0
    out = []
    for v, f in zip(values, fill):
        mat = torch.full((len(cols), width), f, dtype=v.dtype, device=v.device)
        mat[row, slot] = v[order]
        out.append(mat)
    return cols, out


class LayerFold:
    """One recorded layer: its running top-k, random sample and stats, updated batch by batch."""

    def __init__(self, layer: int, neurons: torch.Tensor, top_k: int, random_k: int, seed: int, hist_rate: float = 1.0):
        self.summary = Summary(len(neurons), top_k, random_k)
        self.seed, self.hist_rate = seed, hist_rate
        self.neuron_hash = neuron_hash(seed, layer, neurons)
        self.top: BestK | None = None  # made at the first batch: windows need its length
        self.random: BestK | None = None
        self.hist = torch.zeros((len(neurons), N_BINS), dtype=torch.int32, device=neurons.device)
        self.hist_tokens = 0
        self._ones = torch.ones((len(neurons), 0), dtype=torch.int32, device=neurons.device)

    def finish(self) -> Summary:
        """The Summary, with the entries and the histogram counted so far in it."""
        s = self.summary
        if self.top is not None:
            _, s.top_code, s.top_val, s.top_win = (_np(x) for x in self.top.entries())
        if self.random is not None and s.random_k:
            s.rnd_key, s.rnd_code, s.rnd_val, s.rnd_win = (_np(x) for x in self.random.entries())
        self._add_hist()
        return s

    def _add_hist(self) -> None:
        self.summary.hist += _np(self.hist).astype(np.int64)
        self.hist.zero_()
        self.hist_tokens = 0

    def add(self, acts: torch.Tensor, tokens: BatchTokens | torch.Tensor) -> None:
        """acts: (windows, positions, neurons) float32, rows in window_id order; tokens: its
        BatchTokens (made with this fold's seed and hist_rate), or just its token_codes."""
        if not isinstance(tokens, BatchTokens):
            tokens = BatchTokens.of(tokens, self.seed, self.hist_rate)
        if self.top is None:
            _, t, n = acts.shape
            self.top = BestK(n, self.summary.top_k, t, torch.float32, acts.device)
            self.random = BestK(n, self.summary.random_k, t, torch.int64, acts.device)
        wmax = acts.amax(1)  # (windows, neurons): the top-k's prefilter, and the max
        self._top(acts, tokens.code, wmax)
        if self.summary.random_k:
            self._random(acts, tokens)
        self._stats(acts, tokens.counted, wmax)

    def _top(self, acts: torch.Tensor, code: torch.Tensor, wmax: torch.Tensor) -> None:
        best = self.top
        assert best is not None
        b, t, n = acts.shape
        k = min(best.k, b * t)
        if not best.full():
            cols = torch.arange(n, device=acts.device)
            val, idx = dense_top(acts, cols, k)
            best.fold(cols, -val, code[idx], val, idx // t, acts)
            return
        frank, fcode = best.floor()
        hit = may_beat(code, wmax, (-frank, fcode))
        count = hit.sum(0)
        crowded = (count > topk.SPARSE_WINDOWS).nonzero().flatten()
        if len(crowded):
            val, idx = dense_top(acts, crowded, k)
            best.fold(crowded, -val, code[idx], val, idx // t, acts)
            hit[:, crowded] = False
        # the other neurons: every token of their candidate windows that beats their floor
        pw, pn = hit.nonzero(as_tuple=True)
        if not len(pw):
            return
        val = acts[pw, :, pn]  # (pairs, positions)
        pcode = code.view(b, t)[pw]
        fr, fc = frank[pn][:, None], fcode[pn][:, None]
        p, j = ((-val < fr) | ((-val == fr) & (pcode < fc))).nonzero(as_tuple=True)
        v = val[p, j]
        cols, (v, c, w) = _grouped(pn[p], n, (v, pcode[p, j], pw[p]), (-torch.inf, PAD_CODE, 0))
        best.fold(cols, -v, c, v, w, acts)

    def _random(self, acts: torch.Tensor, tokens: BatchTokens) -> None:
        best = self.random
        assert best is not None
        b, t, n = acts.shape
        code, level = tokens.code, tokens.level
        rk = min(best.k, b * t)
        # the lowest levels holding >= rk tokens hold the rk smallest keys of every neuron; once
        # the sample is full, a level above every neuron's largest kept key cannot enter it
        cut = torch.searchsorted(torch.bincount(level, minlength=SAMPLE_LEVELS).cumsum(0), rk)
        full = best.full()
        if full:
            fkey = best.floor()[0]
            cut = torch.minimum(cut, (fkey >> 58).max())
        rows = (level <= cut).nonzero().flatten()
        if not len(rows):
            return
        keys = keys_from_hashes(tokens.hash[rows], self.neuron_hash)  # (rows, neurons)
        flat = acts.view(b * t, n)
        if not full:
            kept, pos = torch.topk(keys, min(rk, len(rows)), dim=0, largest=False)  # keys are unique
            ridx = rows[pos]
            cols = torch.arange(n, device=acts.device)
            best.fold(cols, kept.T, code[ridx].T, flat[ridx, cols].T, (ridx // t).T, acts)
            return
        r, j = (keys < fkey[None, :]).nonzero(as_tuple=True)  # keys are unique: no tie to break
        ridx = rows[r]
        cols, (key, c, v, w) = _grouped(
            j, n, (keys[r, j], code[ridx], flat[ridx, j], ridx // t), (worst_rank(torch.int64), PAD_CODE, 0.0, 0)
        )
        best.fold(cols, key, c, v, w, acts)

    def _stats(self, acts: torch.Tensor, counted: torch.Tensor, wmax: torch.Tensor) -> None:
        b, t, n = acts.shape
        flat = acts.view(b * t, n)
        sample = flat if len(counted) == b * t else flat.index_select(0, counted)
        if self.hist_tokens + len(counted) >= HIST_FLUSH_TOKENS:
            self._add_hist()
        if self._ones.shape[1] < len(sample):
            self._ones = torch.ones(sample.shape[::-1], dtype=torch.int32, device=sample.device)
        count_bins(self.hist, sample, self._ones[:, : len(sample)])
        self.hist_tokens += len(counted)
        # float32 over one batch is exact enough, the Summary adds in float64; reducing over
        # positions first (the inner, contiguous run per window) measured ~1.5x faster
        self.summary.fold_stats(
            b * t,
            (_np(acts.sum(1).sum(0)), _np(acts.square().sum(1).sum(0))),
            (_np(acts.amin(1).amin(0)), _np(wmax.amax(0))),
            None,
            len(counted),
        )
