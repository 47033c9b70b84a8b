"""A neuron's two polarities: its records as they are (+1), and its negative view (-1), the
records of the negated neuron, so that one explain workflow serves both sides.

In the view "fires" means "goes most negative": ``bottom`` becomes ``top`` and
``negative_quantile_j`` becomes ``quantile_j`` (their ranks kept), ``random`` stays, every
activation is negated, and ``max_pos`` / ``max_act`` point at the window's new maximum (the
recorded token for the bottom-k, as the recorder keeps it). The positive side's own top and
strata are left out: what it fires on is the other side's story.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pyarrow as pa

POSITIVE, NEGATIVE = 1, -1
NEGATIVE_STRATUM = re.compile(r"negative_(quantile_\d+)")


def _frame(records: pa.Table | pd.DataFrame) -> pd.DataFrame:
    return records.to_pandas() if isinstance(records, pa.Table) else records


def extremes(records: pa.Table | pd.DataFrame) -> tuple[float, float] | None:
    """(min, max) of the neuron's activations, from its exact bottom-k and top-k (the same values
    as its STATS row); None where the records hold no negative side."""
    df = _frame(records)
    bottom, top = df[df["kind"] == "bottom"], df[df["kind"] == "top"]
    if bottom.empty:
        return None
    return float(bottom["max_act"].min()), float(top["max_act"].max()) if len(top) else math.nan


def strong(low: float, high: float, ratio: float | None) -> bool:
    """The rule for explaining a neuron's negative side: it goes below 0 and ``|min| >= ratio x
    max`` (a neuron that never fires positive: any negative side); ``ratio`` None: never."""
    if ratio is None or not low < 0:
        return False
    return not high > 0 or -low >= ratio * high


def _kind(kind: str) -> str | None:
    """A kind's name in the negative view; None: left out of it."""
    if kind == "bottom":
        return "top"
    if kind == "random":
        return kind
    m = NEGATIVE_STRATUM.fullmatch(kind)
    return m[1] if m else None


def flipped(records: pa.Table | pd.DataFrame) -> pd.DataFrame:
    """The neuron's negative view (see the module doc), as RECORDS rows."""
    df = _frame(records)
    kinds = df["kind"].map(_kind)
    out = df[kinds.notna()].copy()
    out["kind"] = kinds[kinds.notna()]
    acts = [-np.asarray(a, dtype=np.float32) for a in out["activations"]]
    top = (out["kind"] == "top").to_numpy()
    peak = np.array([int(np.argmax(a)) if len(a) else 0 for a in acts], dtype=np.int32)
    out["max_pos"] = np.where(top, out["max_pos"].to_numpy(), peak).astype(np.int32)
    out["max_act"] = np.where(top, -out["max_act"].to_numpy(), [a[p] if len(a) else 0.0 for a, p in zip(acts, peak)])
    out["activations"] = [a.tolist() for a in acts]
    return out.reset_index(drop=True)
