"""Mergeable per-neuron summaries: exact top-k, hashed random sample, running stats + histogram.

Per batch, on the device (:func:`batch_partials`), each summary is reduced over the batch's
tokens; the driver folds partials into a :class:`Summary` whose memory is O(neurons × k).

Orders are total, so the result does not depend on batching or order:
- top-k: larger activation, then smaller window_id, then smaller position;
- random sample: smaller hash key of (seed, layer, neuron, window_id, position) - the
  ``random_k`` smallest keys are a uniform sample without replacement, and merging two
  samples keeps the smallest keys of the union, which is the sample of the union.

Quantiles come from a fixed-bin histogram (mergeable by addition): bins are
log-spaced in |activation| from 1e-4 to 1e4 (ratio ≈ 1.21 between edges) on each side of
zero; a quantile is reported as the geometric middle of its bin, clipped to [min, max], so its
relative error is under ~10 % (exact at the extremes of the data).
"""

from __future__ import annotations

import numpy as np
import torch

QUANTILE_LEVELS = (0.5, 0.9, 0.99, 0.999)
_MAG = np.geomspace(1e-4, 1e4, 96)
# edges: -inf < -1e4 .. -1e-4 < +1e-4 .. +1e4 < inf; bin b holds edges[b-1] <= x < edges[b]
EDGES = np.concatenate([-_MAG[::-1], _MAG]).astype(np.float32)
N_BINS = len(EDGES) + 1
_BIN_MID = np.concatenate(
    [[-1e4], -np.sqrt(_MAG[1:] * _MAG[:-1])[::-1], [0.0], np.sqrt(_MAG[1:] * _MAG[:-1]), [1e4]]
)

_POS_BITS = 20  # window length <= 4096 < 2**20: (window_id, pos) packs into one int64
_MASK62 = (1 << 62) - 1


def _signed(c: int) -> int:
    return c - (1 << 64) if c >= 1 << 63 else c


_C1, _C2, _GOLD = _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB), _signed(0x9E3779B97F4A7C15)


def _srl(x: torch.Tensor, s: int) -> torch.Tensor:
    # logical right shift on int64 (torch's >> is arithmetic)
    return (x >> s) & ((1 << (64 - s)) - 1)


def mix64(x: torch.Tensor) -> torch.Tensor:
    """splitmix64 finalizer in wrapping int64 arithmetic: a cheap, well-mixed integer hash."""
    x = x ^ _srl(x, 30)
    x = x * _C1
    x = x ^ _srl(x, 27)
    x = x * _C2
    return x ^ _srl(x, 31)


def sample_keys(seed: int, layer: int, neurons: torch.Tensor, token_code: torch.Tensor) -> torch.Tensor:
    """(tokens, neurons) non-negative int64 keys for the random sample; token_code = wid<<20 | pos."""
    n = mix64(neurons.to(torch.int64) + ((layer + 1) << 32) + _signed((seed * _GOLD) % (1 << 64)))
    t = mix64(token_code.to(torch.int64) * _GOLD + seed)
    return mix64(t[:, None] ^ n[None, :]) & _MASK62


def _exact_topk(acts: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k along dim 0 of (tokens, neurons), ties at the k-th value broken by smaller row index."""
    vals, idx = acts.topk(k, dim=0)
    thr = vals[-1]
    ambiguous = ((acts >= thr).sum(0) > k).nonzero().flatten()
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


def batch_partials(
    acts: torch.Tensor, window_ids: torch.Tensor, layer: int, neurons: torch.Tensor,
    top_k: int, random_k: int, seed: int, keep_windows: bool = False,
) -> dict[str, np.ndarray]:
    """Summaries of one layer over one batch. acts: (windows, positions, neurons) float32,
    rows sorted by window_id so that row-major token order is (window_id, position) order.

    With ``keep_windows``, each candidate also carries its neuron's activations over its whole
    window (``top_win`` / ``rnd_win``: (neurons, k, positions)), which spares the second pass
    when the selection is small.
    """
    b, t, n = acts.shape
    flat = acts.reshape(b * t, n)
    code = (window_ids.to(torch.int64)[:, None] << _POS_BITS) + torch.arange(t, device=acts.device)[None, :]
    code = code.reshape(-1)
    out: dict[str, torch.Tensor] = {}
    k = min(top_k, b * t)
    vals, idx = _exact_topk(flat, k)
    out["top_val"], out["top_code"] = vals.T, code[idx].T
    rk = min(random_k, b * t)
    if rk:
        keys = sample_keys(seed, layer, neurons, code)
        rkey, ridx = keys.topk(rk, dim=0, largest=False)
        out["rnd_key"], out["rnd_code"], out["rnd_val"] = rkey.T, code[ridx].T, flat.gather(0, ridx).T
    if keep_windows:
        per_neuron = acts.permute(2, 0, 1)  # (neurons, windows, positions)
        rows = torch.arange(n, device=acts.device)[:, None]
        out["top_win"] = per_neuron[rows, (idx // t).T]
        if rk:
            out["rnd_win"] = per_neuron[rows, (ridx // t).T]
    f64 = flat.to(torch.float64)
    out["sum"], out["sumsq"] = f64.sum(0), (f64 * f64).sum(0)
    out["min"], out["max"] = flat.min(0).values, flat.max(0).values
    bins = torch.bucketize(flat, torch.as_tensor(EDGES, device=acts.device), right=True)
    hist = torch.zeros(n, N_BINS, dtype=torch.int32, device=acts.device)
    hist.scatter_add_(1, bins.T.contiguous(), torch.ones_like(bins.T, dtype=torch.int32))
    out["hist"] = hist
    res = {key: v.contiguous().cpu().numpy() for key, v in out.items()}
    res["count"] = np.int64(b * t)
    return res


def split_code(code: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return code >> _POS_BITS, (code & ((1 << _POS_BITS) - 1)).astype(np.int32)


def _merge_windows(kept: np.ndarray | None, new: np.ndarray, order: np.ndarray) -> np.ndarray:
    both = new if kept is None else np.concatenate([kept, new], axis=1)
    return np.take_along_axis(both, order[:, :, None], 1)


class Summary:
    """Running summaries of one layer's selected neurons, folded from batch partials."""

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
        self.top_win: np.ndarray | None = None  # (n, top_k, window) when the batches carry windows
        self.rnd_win: np.ndarray | None = None

    def add(self, p: dict[str, np.ndarray]) -> None:
        val = np.concatenate([self.top_val, p["top_val"]], axis=1)
        code = np.concatenate([self.top_code, p["top_code"]], axis=1)
        # the code orders (window_id, position) lexicographically, so one tiebreak key suffices
        order = np.lexsort((code, -val), axis=1)[:, : self.top_k]
        self.top_val, self.top_code = np.take_along_axis(val, order, 1), np.take_along_axis(code, order, 1)
        if "top_win" in p:
            self.top_win = _merge_windows(self.top_win, p["top_win"], order)
        if self.random_k and "rnd_key" in p:
            key = np.concatenate([self.rnd_key, p["rnd_key"]], axis=1)
            code = np.concatenate([self.rnd_code, p["rnd_code"]], axis=1)
            val = np.concatenate([self.rnd_val, p["rnd_val"]], axis=1)
            order = np.lexsort((code, key), axis=1)[:, : self.random_k]
            self.rnd_key, self.rnd_code, self.rnd_val = (np.take_along_axis(a, order, 1) for a in (key, code, val))
            if "rnd_win" in p:
                self.rnd_win = _merge_windows(self.rnd_win, p["rnd_win"], order)
        self.count += int(p["count"])
        self.sum += p["sum"]
        self.sumsq += p["sumsq"]
        np.minimum(self.min, p["min"], out=self.min)
        np.maximum(self.max, p["max"], out=self.max)
        self.hist += p["hist"]

    def stats(self, levels=QUANTILE_LEVELS) -> dict[str, np.ndarray]:
        mean = self.sum / max(self.count, 1)
        var = np.maximum(self.sumsq / max(self.count, 1) - mean * mean, 0.0)
        return {"mean": mean, "std": np.sqrt(var), "min": self.min, "max": self.max,
                "quantiles": self.quantiles(levels)}

    def quantiles(self, levels) -> np.ndarray:
        cdf = np.cumsum(self.hist, axis=1)
        out = np.empty((len(self.hist), len(levels)), np.float32)
        for j, q in enumerate(levels):
            # the bin holding the ceil(q * n)-th smallest value
            target = np.maximum(np.ceil(q * self.count), 1)
            b = (cdf < target).sum(axis=1)
            out[:, j] = np.clip(_BIN_MID[b], self.min, self.max)
        return out
