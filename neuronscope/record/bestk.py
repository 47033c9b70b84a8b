"""Each row's k best entries, kept while streaming: the top-k, random sample or strata of a layer.

An entry is (rank, code, value) plus its neuron's activations over the entry's window; smaller
(rank, code) is better, so one class serves the top-k (rank = -activation), the random sample
and the strata (rank = a hash key). A row is a neuron, or one of a neuron's ``group`` strata.
Windows live in slots that entries keep while they stay: a batch copies the windows of the
entries that enter (after the first batches, 0-2 per row) instead of re-gathering all k windows
of every row it touches.
"""

from __future__ import annotations

import torch

PAD_CODE = torch.iinfo(torch.int64).max  # code of an empty entry: after every real one


def worst_rank(dtype: torch.dtype) -> float | int:
    return torch.inf if dtype.is_floating_point else torch.iinfo(dtype).max


def lex_order(rank: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """Per row, the order of entries by (rank, code): two stable sorts (torch has no lexsort)."""
    by_code = torch.sort(code, dim=1, stable=True).indices
    by_rank = torch.sort(rank.gather(1, by_code), dim=1, stable=True).indices
    return by_code.gather(1, by_rank)


def merge_order(old_rank: torch.Tensor, old_code: torch.Tensor, rank: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """``lex_order`` of the rows' old entries (sorted) followed by their candidates (any order).

    One candidate per row: its place is the count of old entries before it (no sort). Wider
    rows: one stable sort by rank; rows where two different codes tie on rank sort again."""
    m, k = old_rank.shape
    if rank.shape[1] == 1:
        old_first = (old_rank < rank) | ((old_rank == rank) & (old_code <= code))  # (m, k)
        place = torch.cat([torch.arange(k, device=rank.device) + ~old_first, old_first.sum(1, keepdim=True)], 1)
        return torch.empty_like(place).scatter_(1, place, torch.arange(k + 1, device=rank.device).expand(m, -1))
    ranks, codes = torch.cat([old_rank, rank], 1), torch.cat([old_code, code], 1)
    order = torch.sort(ranks, dim=1, stable=True).indices
    r, c = ranks.gather(1, order), codes.gather(1, order)
    tied = ((r[:, 1:] == r[:, :-1]) & (c[:, 1:] != c[:, :-1])).any(1).nonzero().flatten()
    if len(tied):  # equal activations recur (a window's first token sees only itself)
        order[tied] = lex_order(ranks[tied], codes[tied])
    return order


class BestK:
    """Per row, the k best entries seen so far, sorted by (rank, code); rows ``i * group`` ..
    ``(i + 1) * group - 1`` belong to neuron ``i`` of the activations folded in."""

    def __init__(self, n: int, k: int, positions: int, rank_dtype: torch.dtype, device="cpu", group: int = 1):
        self.k, self.group = k, group
        self.rank = torch.full((n, k), worst_rank(rank_dtype), dtype=rank_dtype, device=device)
        self.code = torch.full((n, k), PAD_CODE, dtype=torch.int64, device=device)
        self.value = torch.zeros((n, k), dtype=torch.float32, device=device)
        self.slot = torch.arange(k, device=device).repeat(n, 1)  # where each entry's window is
        self.win = torch.zeros((n, k, positions), dtype=torch.float32, device=device)
        self.entered: list[torch.Tensor] = []  # batch windows that entered some row, until taken

    def take_entered(self) -> list[torch.Tensor]:
        """The batch windows (indices into the folded activations) that entered since the last call."""
        out, self.entered = self.entered, []
        return out

    def held_codes(self) -> torch.Tensor:
        """The codes of every entry held (1-d): their windows are the ones still needed."""
        return self.code[self.code != PAD_CODE]

    def full(self) -> bool:
        """Whether every neuron holds k entries (all neurons see the same tokens)."""
        return bool(self.code[0, -1] != PAD_CODE)

    def floor(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row, the (rank, code) a candidate must beat to enter."""
        return self.rank[:, -1], self.code[:, -1]

    def clear(self, rows: torch.Tensor) -> None:
        """Empty ``rows`` (their slots stay theirs)."""
        self.rank[rows] = worst_rank(self.rank.dtype)
        self.code[rows] = PAD_CODE

    def fold(
        self,
        cols: torch.Tensor,
        rank: torch.Tensor,
        code: torch.Tensor,
        value: torch.Tensor,
        window: torch.Tensor,
        acts: torch.Tensor,
    ) -> None:
        """Merge candidates into the rows ``cols``: (len(cols), c) rank, code, value and the
        batch window holding each (``acts``: (windows, positions, neurons)); in any order,
        padding with rank worst and code PAD_CODE allowed."""
        k, m = self.k, len(cols)
        if not m:
            return
        old_rank, old_code, old_slot = self.rank[cols], self.code[cols], self.slot[cols]
        order = merge_order(old_rank, old_code, rank, code)[:, :k]
        enter = order >= k
        kept, cand = order.clamp(max=k - 1), (order - k).clamp(min=0)  # indices into old / candidates
        e = enter.sum(1, keepdim=True)
        # the e entries that enter push out the e worst kept ones, and take their slots
        freed = (k - e + enter.cumsum(1) - 1).clamp(0, k - 1)
        self.slot[cols] = slot = torch.where(enter, old_slot.gather(1, freed), old_slot.gather(1, kept))
        self.rank[cols] = torch.where(enter, rank.gather(1, cand), old_rank.gather(1, kept))
        self.code[cols] = torch.where(enter, code.gather(1, cand), old_code.gather(1, kept))
        self.value[cols] = torch.where(enter, value.gather(1, cand), self.value[cols].gather(1, kept))
        row, j = enter.nonzero(as_tuple=True)
        if len(row):
            r = cols[row]
            which = window[row, cand[row, j]]
            self.win[r, slot[row, j]] = acts[
                which, :, r // self.group if self.group > 1 else r
            ]  # (entering, positions)
            self.entered.append(which)

    def entries(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rank, code, value, windows) of the filled entries, best first: (n, m) and (n, m, positions)."""
        m = int((self.code[0] != PAD_CODE).sum()) if len(self.code) else 0
        rows = torch.arange(len(self.slot), device=self.slot.device)[:, None]
        return self.rank[:, :m], self.code[:, :m], self.value[:, :m], self.win[rows, self.slot[:, :m]]

    def rows(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rank, code, value, windows) of all k entries of ``rows``, best first (empty ones last,
        with code PAD_CODE and stale value and window): (len(rows), k) and (len(rows), k, positions)."""
        slot = self.slot[rows]
        return self.rank[rows], self.code[rows], self.value[rows], self.win[rows[:, None], slot]


def grouped(row: torch.Tensor, n_rows: int, values: tuple[torch.Tensor, ...], fill: tuple):
    """Candidates listed one per entry (``row`` and ``values`` 1-d) as BestK.fold's rows:
    (the rows that have some, each value as (len(rows), c)), padded with ``fill``."""
    order = torch.sort(row, stable=True).indices
    row = row[order]
    count = torch.bincount(row, minlength=n_rows)
    cols = count.nonzero().flatten()
    at = torch.cumsum(count > 0, 0)[row] - 1
    slot = torch.arange(len(row), device=row.device) - (torch.cumsum(count, 0) - count)[row]
    width = int(count.max()) if len(row) else 0
    out = []
    for v, f in zip(values, fill):
        mat = torch.full((len(cols), width), f, dtype=v.dtype, device=v.device)
        mat[at, slot] = v[order]
        out.append(mat)
    return cols, out
