"""Folding one layer's batch activations into its running summary, on the recording actor.

Once a neuron holds k entries, a batch can change only its top-k with a token above its k-th
best, its strata with a window of a low level (see ``strata.py``), and its random sample with
a key below its random_k-th one; only those become candidates and only the windows that enter
are copied, so that after the first batches the cost per batch is a few passes over the
activations (max, min, sums, a sampled histogram). The negative side runs the same code on
sign -1: it negates values, never the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import topk
from .bestk import PAD_CODE, BestK, grouped, worst_rank
from .hashing import LEVEL_SHIFT, SAMPLE_LEVELS, keys_from_hashes, level, neuron_hash, token_hash, window_hash
from .strata import StrataFold
from .topk import N_BINS, POS_BITS, Counts, Extremes, Summary, count_bins, dense_top, hist_rows, may_beat

# tokens counted into the int32 histogram before it is added into the Summary's int64 one
# (so that no bin can overflow)
HIST_FLUSH_TOKENS = 1 << 30


def token_codes(window_ids: torch.Tensor, positions: int) -> torch.Tensor:
    """(windows * positions,) int64 codes window_id << 20 | position, in row-major order."""
    pos = torch.arange(positions, device=window_ids.device)
    return ((window_ids.to(torch.int64)[:, None] << POS_BITS) + pos[None, :]).reshape(-1)


@dataclass
class BatchTokens:
    """What every layer's fold needs of a batch's tokens and windows, computed once per batch."""

    code: torch.Tensor  # token_codes
    hash: torch.Tensor  # token_hash(seed, code): the random sample's levels and keys
    level: torch.Tensor
    counted: torch.Tensor  # rows counted in the quantile histogram
    window_code: torch.Tensor  # (windows,) window_id << POS_BITS: the strata's entries
    window_hash: torch.Tensor  # window_hash(seed, window_id): the strata's levels and keys
    window_level: torch.Tensor

    @classmethod
    def of(cls, code: torch.Tensor, seed: int, hist_rate: float, positions: int) -> BatchTokens:
        th = token_hash(seed, code)
        wcode = code[::positions]
        wh = window_hash(seed, wcode >> POS_BITS)
        return cls(code, th, level(th), hist_rows(seed, code, hist_rate), wcode, wh, level(wh))


def _np(x: torch.Tensor) -> np.ndarray:
    return x.contiguous().cpu().numpy()


class SideFold:
    """One side of a layer's neurons (``sign`` 1: the largest activations; -1: the most negative):
    the exact top-k of sign x activation by token, and the strata of sign x each window's extreme."""

    def __init__(self, sign: int, k: int, strata: tuple[int, int], nh: torch.Tensor):
        self.sign, self.k = sign, k
        self.top: BestK | None = None  # made at the first batch: windows need its length
        bins, strata_k = strata
        self.strata = StrataFold(sign, bins, strata_k, nh) if bins else None

    def add(self, acts: torch.Tensor, tokens: BatchTokens, value: torch.Tensor) -> None:
        """acts: (windows, positions, neurons); value: (windows, neurons) sign x each window's extreme."""
        if self.top is None:
            _, t, n = acts.shape
            self.top = BestK(n, self.k, t, torch.float32, acts.device)
        self._top(acts, tokens.code, value)
        if self.strata is not None:
            self.strata.add(acts, value, tokens)

    def finish(self, into: Extremes) -> None:
        if self.top is not None:
            _, into.code, into.val, into.win = (_np(x) for x in self.top.entries())
        if self.strata is not None:
            into.strata = self.strata.finish()

    def _top(self, acts: torch.Tensor, code: torch.Tensor, value: torch.Tensor) -> None:
        """Ranks are -(sign x activation), values the activations themselves."""
        best, sign = self.top, self.sign
        assert best is not None
        b, t, n = acts.shape
        k = min(best.k, b * t)
        if not best.full():
            cols = torch.arange(n, device=acts.device)
            val, idx = dense_top(acts, cols, k, sign)
            best.fold(cols, -val, code[idx], sign * val, idx // t, acts)
            return
        frank, fcode = best.floor()
        hit = may_beat(code, value, (-frank, fcode))
        count = hit.sum(0)
        crowded = (count > topk.SPARSE_WINDOWS).nonzero().flatten()
        if len(crowded):
            val, idx = dense_top(acts, crowded, k, sign)
            best.fold(crowded, -val, code[idx], sign * val, idx // t, acts)
            hit[:, crowded] = False
        # the other neurons: every token of their candidate windows that beats their floor
        pw, pn = hit.nonzero(as_tuple=True)
        if not len(pw):
            return
        val = acts[pw, :, pn] if sign > 0 else -acts[pw, :, pn]  # (pairs, positions)
        pcode = code.view(b, t)[pw]
        fr, fc = frank[pn][:, None], fcode[pn][:, None]
        p, j = ((-val < fr) | ((-val == fr) & (pcode < fc))).nonzero(as_tuple=True)
        v = val[p, j]
        cols, (v, c, w) = grouped(pn[p], n, (v, pcode[p, j], pw[p]), (-torch.inf, PAD_CODE, 0))
        best.fold(cols, -v, c, sign * v, w, acts)


class LayerFold:
    """One recorded layer: its sides' top-k and strata, random sample and stats, updated batch by batch."""

    def __init__(self, layer: int, neurons: torch.Tensor, counts: Counts, seed: int, hist_rate: float = 1.0):
        self.summary = Summary(len(neurons), counts)
        self.seed, self.hist_rate = seed, hist_rate
        self.neuron_hash = neuron_hash(seed, layer, neurons)
        strata = (counts.quantile_bins, counts.quantile_k)
        self.sides = [SideFold(1, counts.top_k, strata, self.neuron_hash)]
        if counts.negative:
            self.sides.append(SideFold(-1, counts.bottom_k, strata, neuron_hash(seed, layer, neurons, -1)))
        self.random: BestK | None = None  # made at the first batch: windows need its length
        self.hist = torch.zeros((len(neurons), N_BINS), dtype=torch.int32, device=neurons.device)
        self.hist_tokens = 0
        self._ones = torch.ones((len(neurons), 0), dtype=torch.int32, device=neurons.device)

    def bests(self) -> list[BestK]:
        """Every BestK of the layer: its sides' top-k and strata, and the random sample."""
        found = [side.top for side in self.sides] + [side.strata.best for side in self.sides if side.strata]
        return [b for b in found + [self.random] if b is not None]

    def take_entered(self) -> list[torch.Tensor]:
        """The batch windows that entered any exemplar set of the layer since the last call."""
        return [w for best in self.bests() for w in best.take_entered()]

    def held_windows(self) -> torch.Tensor:
        """The window ids some exemplar of the layer holds now (with repeats)."""
        codes = [best.held_codes() for best in self.bests()]
        return torch.cat(codes) >> POS_BITS if codes else torch.zeros(0, dtype=torch.int64)

    def finish(self) -> Summary:
        """The Summary, with the entries and the histogram counted so far in it."""
        s = self.summary
        for side, into in zip(self.sides, s.sides()):
            side.finish(into)
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
        _, t, n = acts.shape
        if not isinstance(tokens, BatchTokens):
            tokens = BatchTokens.of(tokens, self.seed, self.hist_rate, t)
        if self.random is None:
            self.random = BestK(n, self.summary.random_k, t, torch.int64, acts.device)
        wmax, wmin = acts.amax(1), acts.amin(1)  # (windows, neurons): the prefilters, and the extremes
        for side in self.sides:
            side.add(acts, tokens, wmax if side.sign > 0 else -wmin)
        if self.summary.random_k:
            self._random(acts, tokens)
        self._stats(acts, tokens.counted, wmax, wmin)

    def _random(self, acts: torch.Tensor, tokens: BatchTokens) -> None:
        best = self.random
        assert best is not None
        b, t, n = acts.shape
        code, levels = tokens.code, tokens.level
        rk = min(best.k, b * t)
        # the lowest levels holding >= rk tokens hold the rk smallest keys of every neuron; once
        # the sample is full, a level above every neuron's largest kept key cannot enter it
        cut = torch.searchsorted(torch.bincount(levels, minlength=SAMPLE_LEVELS).cumsum(0), rk)
        full = best.full()
        if full:
            fkey = best.floor()[0]
            cut = torch.minimum(cut, (fkey >> LEVEL_SHIFT).max())
        rows = (levels <= cut).nonzero().flatten()
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
        cols, (key, c, v, w) = grouped(
            j, n, (keys[r, j], code[ridx], flat[ridx, j], ridx // t), (worst_rank(torch.int64), PAD_CODE, 0.0, 0)
        )
        best.fold(cols, key, c, v, w, acts)

    def _stats(self, acts: torch.Tensor, counted: torch.Tensor, wmax: torch.Tensor, wmin: torch.Tensor) -> None:
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
            (_np(wmin.amin(0)), _np(wmax.amax(0))),
            None,
            len(counted),
        )
