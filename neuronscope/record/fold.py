"""Folding one layer's batch activations into its running Summary, on the recording actor.

Once a summary is full, a batch can change only the top-k of the neurons with a window above
their k-th best, and the random sample of the neurons with a key below their random_k-th one;
only those neurons are merged and have their windows copied, so that after the first batches
the cost per batch is a few passes over the activations (max, sums, a sampled histogram).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .topk import (
    N_BINS,
    POS_BITS,
    SAMPLE_LEVELS,
    Summary,
    hist_index,
    hist_rows,
    keys_from_hashes,
    may_beat,
    neuron_hash,
    srl,
    token_hash,
    top_candidates,
)


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


class LayerFold:
    """One recorded layer: its Summary, updated batch by batch."""

    def __init__(self, layer: int, neurons: torch.Tensor, top_k: int, random_k: int, seed: int, hist_rate: float = 1.0):
        self.summary = Summary(len(neurons), top_k, random_k)
        self.seed, self.hist_rate = seed, hist_rate
        self.neuron_hash = neuron_hash(seed, layer, neurons)
        # counted here, on the device, by scatter-add (torch.bincount is several times slower)
        self.hist = torch.zeros(len(neurons) * N_BINS, dtype=torch.int64, device=neurons.device)
        self._ones_cache: dict[torch.dtype, torch.Tensor] = {}

    def finish(self) -> Summary:
        """The Summary, with the histogram counted so far added in."""
        self.summary.hist += _np(self.hist).reshape(self.summary.hist.shape)
        self.hist.zero_()
        return self.summary

    def _ones(self, rows: int, dtype: torch.dtype) -> torch.Tensor:
        have = self._ones_cache.get(dtype)
        if have is None or len(have) < rows:
            have = self._ones_cache[dtype] = torch.ones(rows, dtype=dtype, device=self.hist.device)
        return have[:rows]

    def add(self, acts: torch.Tensor, tokens: BatchTokens | torch.Tensor) -> None:
        """acts: (windows, positions, neurons) float32, rows in window_id order; tokens: its
        BatchTokens (made with this fold's seed and hist_rate), or just its token_codes."""
        if not isinstance(tokens, BatchTokens):
            tokens = BatchTokens.of(tokens, self.seed, self.hist_rate)
        wmin, wmax = torch.aminmax(acts, dim=1)  # (windows, neurons): wmax is the top-k prefilter
        self._top(acts, tokens.code, wmax)
        if self.summary.random_k:
            self._random(acts, tokens)
        self._stats(acts, tokens.counted, wmin, wmax)

    def _top(self, acts: torch.Tensor, code: torch.Tensor, wmax: torch.Tensor) -> None:
        s = self.summary
        b, t, n = acts.shape
        cols = hit = None
        if s.top_val.shape[1] >= s.top_k:
            floor = (
                torch.as_tensor(s.top_val[:, -1], device=acts.device),
                torch.as_tensor(s.top_code[:, -1], device=acts.device),
            )
            hit = may_beat(code, wmax, floor)
            cols = hit.any(0).nonzero().flatten()
            if not len(cols):
                return
            if len(cols) < n:
                acts, hit = acts[:, :, cols], hit[:, cols]
        out = top_candidates(acts, code, min(s.top_k, b * t), hit)
        s.fold_top(None if cols is None else _np(cols), _np(out["top_val"]), _np(out["top_code"]), _np(out["top_win"]))

    def _random(self, acts: torch.Tensor, tokens: BatchTokens) -> None:
        s = self.summary
        b, t, n = acts.shape
        code, th, level = tokens.code, tokens.hash, tokens.level
        rk = min(s.random_k, b * t)
        # the lowest levels holding >= rk tokens hold the rk smallest keys of every neuron; once
        # the sample is full, a level above every neuron's largest kept key cannot enter it
        cut = torch.searchsorted(torch.bincount(level, minlength=SAMPLE_LEVELS).cumsum(0), rk)
        full = s.rnd_key.shape[1] >= s.random_k
        if full:
            kth = torch.as_tensor(s.rnd_key[:, -1], device=acts.device)
            cut = torch.minimum(cut, (kth >> 58).max())
        rows = (level <= cut).nonzero().flatten()  # in token order: ties go to the smaller code
        if not len(rows):
            return
        keys, order = torch.sort(keys_from_hashes(th[rows], self.neuron_hash), dim=0, stable=True)
        keys, ridx = keys[:rk], rows[order[:rk]]
        cols = torch.arange(n, device=acts.device)
        if full:
            cols = (keys[0] <= kth).nonzero().flatten()
            if not len(cols):
                return
            keys, ridx = keys[:, cols], ridx[:, cols]
        val = acts.reshape(b * t, n)[ridx, cols[None, :]]
        win = acts.permute(2, 0, 1)[cols[:, None], (ridx // t).T]
        s.fold_random(_np(cols) if full else None, _np(keys.T), _np(code[ridx].T), _np(val.T), _np(win))

    def _stats(self, acts: torch.Tensor, counted: torch.Tensor, wmin: torch.Tensor, wmax: torch.Tensor) -> None:
        b, t, n = acts.shape
        flat = acts.reshape(b * t, n)
        idx = hist_index(flat if len(counted) == b * t else flat.index_select(0, counted)).view(-1)
        self.hist.scatter_add_(0, idx, self._ones(len(idx), torch.int64))
        # sums as matrix-vector products (BLAS beats torch's column reductions several times);
        # float32 over one batch is exact enough, the Summary adds in float64
        ones = self._ones(b * t, acts.dtype)[None, :]
        total, sumsq = (ones @ flat)[0], (ones @ flat.square())[0]
        self.summary.fold_stats(b * t, _np(total), _np(sumsq), _np(wmin.amin(0)), _np(wmax.amax(0)), None, len(counted))
