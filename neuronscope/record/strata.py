"""Stratified exemplars: per neuron, hashed samples of windows across its activating range, in one pass.

The unit is a (window, neuron) pair, its value the window's extreme for the neuron on one side
(its max activation; for the negative side, minus its min). Stratum o holds the pairs whose value
lies in the octave [2**o, 2**(o+1)), read from the float's exponent bits; a neuron keeps the
``bins`` octaves ending at the octave of its largest value, and in each the ``k`` windows of
smallest key (``hashing.strata_keys``: a uniform random sample of the stratum). The largest
value only grows, so an octave that falls below the range never returns to it: it is dropped
lazily, its slot (octave mod bins) taken by the octave that pushed it out. Merging two summaries
keeps, per octave of the merged range, the smallest keys of the union: exact and independent of
batching, actors and order, like the top-k. Pairs of value <= 0 never enter.

Once a stratum is full, a window can enter it only if its level (the top 5 bits of its key,
shared by all neurons) is at most the level of the stratum's largest kept key, so a batch
hashes only the pairs of low-level windows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .bestk import PAD_CODE, BestK, grouped, worst_rank
from .hashing import LEVEL_SHIFT, pair_keys

NO_OCTAVE = -(1 << 20)  # a neuron without a positive value; a slot that holds no octave
EMPTY_KEY = int(np.iinfo(np.int64).max)


def octave(x: torch.Tensor) -> torch.Tensor:
    """int32 octave o of positive float32 values: 2**o <= x < 2**(o + 1) (subnormals: -127)."""
    return (x.contiguous().view(torch.int32) >> 23) - 127


@dataclass
class Strata:
    """One side's strata of a layer's neurons: stratum j of neuron i holds windows whose value
    lies in octave ``top[i] - bins + 1 + j``, smallest key first; empty entries have key
    EMPTY_KEY, code PAD_CODE and zeros."""

    top: np.ndarray  # (n,) int32: the octave of the neuron's largest value, or NO_OCTAVE
    key: np.ndarray  # (n, bins, k) int64
    code: np.ndarray  # (n, bins, k) int64: window_id << POS_BITS
    val: np.ndarray  # (n, bins, k) float32: the window's extreme (max, or min on the negative side)
    win: np.ndarray | None  # (n, bins, k, positions) float32: the neuron's activations; None before any window

    @classmethod
    def empty(cls, n: int, bins: int, k: int) -> Strata:
        return cls(
            np.full(n, NO_OCTAVE, np.int32),
            np.full((n, bins, k), EMPTY_KEY, np.int64),
            np.full((n, bins, k), PAD_CODE, np.int64),
            np.zeros((n, bins, k), np.float32),
            None,
        )

    def merge(self, other: Strata) -> Strata:
        """The strata of both summaries' windows (another actor's share of the corpus)."""
        if other.win is None:
            return self
        if self.win is None:
            return other
        n, bins, k = self.key.shape
        top = np.maximum(self.top, other.top)
        # each entry's stratum in the merged range; below it, or empty: bins (sorted last, dropped)
        shift = [(s.top - top)[:, None, None] + np.arange(bins)[None, :, None] for s in (self, other)]
        j = np.concatenate([np.broadcast_to(d, (n, bins, k)).reshape(n, -1) for d in shift], axis=1)
        key, code, val = (np.concatenate([a.reshape(n, -1), b.reshape(n, -1)], 1) for a, b in self._pairs(other))
        j = np.where((j >= 0) & (code != PAD_CODE), j, bins)
        order = np.lexsort((code, key, j), axis=1)
        js = np.take_along_axis(j, order, 1)
        idx = np.arange(js.shape[1])
        starts = np.maximum.accumulate(np.where(np.diff(js, axis=1, prepend=-1) != 0, idx, 0), axis=1)
        pos = idx - starts  # place within its stratum
        r, c = ((js < bins) & (pos < k)).nonzero()
        out = Strata.empty(n, bins, k)
        out.top = top
        src = order[r, c]
        at = (r, js[r, c], pos[r, c])
        out.key[at], out.code[at], out.val[at] = key[r, src], code[r, src], val[r, src]
        win = np.concatenate([self.win.reshape(n, bins * k, -1), other.win.reshape(n, bins * k, -1)], 1)
        out.win = np.zeros_like(self.win)
        out.win[at] = win[r, src]
        return out

    def _pairs(self, other: Strata):
        return ((self.key, other.key), (self.code, other.code), (self.val, other.val))


class StrataFold:
    """One side's strata of a layer's neurons, updated batch by batch (rows neuron * bins + slot)."""

    def __init__(self, sign: int, bins: int, k: int, neuron_hash: torch.Tensor):
        self.sign, self.bins, self.k, self.nh = sign, bins, k, neuron_hash
        n, device = len(neuron_hash), neuron_hash.device
        self.top = torch.full((n,), NO_OCTAVE, dtype=torch.int32, device=device)
        self.held = torch.full((n * bins,), NO_OCTAVE, dtype=torch.int32, device=device)  # each slot's octave
        self.best: BestK | None = None  # made at the first batch: windows need its length

    def add(self, acts: torch.Tensor, value: torch.Tensor, windows) -> None:
        """acts: (windows, positions, neurons); value: (windows, neurons) sign x each window's
        extreme; windows: the batch's BatchTokens (window codes, hashes and levels)."""
        _, t, n = acts.shape
        bins = self.bins
        if self.best is None:
            self.best = BestK(n * bins, self.k, t, torch.int64, acts.device, group=bins)
        best = self.best
        vmax = value.amax(0)
        self.top = torch.maximum(self.top, torch.where(vmax > 0, octave(vmax), NO_OCTAVE))
        o = octave(value)  # (windows, neurons); meaningless where value <= 0, masked below
        slot = o.remainder(bins).long()
        held = self.held.view(n, bins).T.gather(0, slot)
        full_level = (best.floor()[0] >> LEVEL_SHIFT).view(n, bins).T.gather(0, slot)
        fresh = held != o  # the slot holds an older octave (or none): empty for this one
        cand = (value > 0) & (o > self.top - bins) & (fresh | (windows.window_level[:, None] <= full_level))
        w, j = cand.nonzero(as_tuple=True)
        if not len(w):
            return
        o, row = o[w, j], j * bins + slot[w, j]
        stale = fresh[w, j]
        if bool(stale.any()):
            best.clear(row[stale])
            self.held[row[stale]] = o[stale]
        key = pair_keys(windows.window_hash[w], self.nh[j])
        code = windows.window_code[w]
        frank, fcode = best.floor()
        fr, fc = frank[row], fcode[row]
        p = ((key < fr) | ((key == fr) & (code < fc))).nonzero().flatten()
        if not len(p):
            return
        w, j = w[p], j[p]
        rows, (key, code, val, win) = grouped(
            row[p],
            n * bins,
            (key[p], code[p], self.sign * value[w, j], w),
            (worst_rank(torch.int64), PAD_CODE, 0.0, 0),
        )
        best.fold(rows, key, code, val, win, acts)

    def finish(self) -> Strata:
        """The strata in stratum order (j = 0 for the lowest octave of the range)."""
        n, bins = len(self.top), self.bins
        out = Strata.empty(n, bins, self.k)
        if self.best is None:
            return out
        o = self.top[:, None] - (bins - 1) + torch.arange(bins, dtype=torch.int32, device=self.top.device)
        row = (torch.arange(n, device=o.device)[:, None] * bins + o.remainder(bins)).flatten()
        key, code, val, win = self.best.rows(row)
        # a slot still holding an octave below the range, or never filled: an empty stratum
        ok = (self.held[row] == o.flatten()) & (self.top != NO_OCTAVE).repeat_interleave(bins)
        filled = ok[:, None] & (code != PAD_CODE)
        out.top = self.top.cpu().numpy()
        out.key = torch.where(filled, key, EMPTY_KEY).view(n, bins, -1).cpu().numpy()
        out.code = torch.where(filled, code, PAD_CODE).view(n, bins, -1).cpu().numpy()
        out.val = torch.where(filled, val, 0.0).view(n, bins, -1).cpu().numpy()
        out.win = torch.where(filled[:, :, None], win, 0.0).view(n, bins, self.k, -1).cpu().numpy()
        return out
