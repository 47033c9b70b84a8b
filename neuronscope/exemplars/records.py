"""One neuron's exemplars: the windows of its RECORDS rows, as immutable records, by kind."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

STRATUM = re.compile(r"quantile_(\d+)")  # a stratum of the activating range: quantile_0 is the weakest


@dataclass(frozen=True)
class Exemplar:
    window_id: int
    kind: str  # "top", "random" or "quantile_J" (a stratum of the neuron's activating range)
    rank: int
    tokens: tuple[str, ...]
    activations: tuple[float, ...]
    max_pos: int

    def __hash__(self) -> int:
        # Hashed once per object, not per lookup: the judges key their memos by exemplar sets, and
        # a window's activations hash anew each time (a tuple keeps no hash).
        h = self.__dict__.get("_hash")
        if h is None:
            h = hash((self.window_id, self.kind, self.rank, self.tokens, self.activations, self.max_pos))
            object.__setattr__(self, "_hash", h)
        return h

    def __getstate__(self) -> dict:
        # Never pickled with its hash: a string's hash differs from one process to the next.
        return {k: v for k, v in self.__dict__.items() if k != "_hash"}


@dataclass(frozen=True)
class Pools:
    """A neuron's exemplars by kind, each in rank order; one window may be in several."""

    top: list[Exemplar]
    random: list[Exemplar] = field(default_factory=list)
    strata: list[list[Exemplar]] = field(default_factory=list)  # quantile_0 (weakest) up


def _exemplar(r) -> Exemplar:
    acts = np.asarray(r.activations, dtype=np.float64)
    if not np.isfinite(acts).all():
        raise ValueError(f"window {int(r.window_id)} ({r.kind} rank {int(r.rank)}) has activations that are not finite")
    return Exemplar(int(r.window_id), r.kind, int(r.rank), tuple(r.tokens), tuple(acts.tolist()), int(r.max_pos))


def load(records: pa.Table | pd.DataFrame) -> Pools:
    """The exemplars of one neuron's RECORDS rows, by kind and rank (other kinds are left out)."""
    df = records.to_pandas() if isinstance(records, pa.Table) else records
    by_kind: dict[str, list[Exemplar]] = {}
    for r in df.sort_values(["kind", "rank"]).itertuples(index=False):
        if r.kind in ("top", "random") or STRATUM.fullmatch(r.kind):
            by_kind.setdefault(r.kind, []).append(_exemplar(r))
    strata = sorted((int(m[1]), exs) for k, exs in by_kind.items() if (m := STRATUM.fullmatch(k)))
    return Pools(by_kind.get("top", []), by_kind.get("random", []), [exs for _, exs in strata])
