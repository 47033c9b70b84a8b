"""One neuron's exemplars: the windows of its RECORDS rows, as immutable records."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa


@dataclass(frozen=True)
class Exemplar:
    window_id: int
    kind: str  # "top" | "random"
    rank: int
    tokens: tuple[str, ...]
    activations: tuple[float, ...]
    max_pos: int


def load(records: pa.Table | pd.DataFrame) -> tuple[list[Exemplar], list[Exemplar]]:
    """(top exemplars by rank, random exemplars by rank) from one neuron's RECORDS rows."""
    df = records.to_pandas() if isinstance(records, pa.Table) else records
    out: dict[str, list[Exemplar]] = {"top": [], "random": []}
    for r in df.sort_values(["kind", "rank"]).itertuples(index=False):
        if r.kind in out:
            acts = tuple(float(a) for a in r.activations)
            if not all(math.isfinite(a) for a in acts):
                raise ValueError(
                    f"window {int(r.window_id)} ({r.kind} rank {int(r.rank)}) has activations that are not finite"
                )
            out[r.kind].append(Exemplar(int(r.window_id), r.kind, int(r.rank), tuple(r.tokens), acts, int(r.max_pos)))
    return out["top"], out["random"]
