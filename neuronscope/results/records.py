"""The record stage's output read back: which neurons the records hold, one neuron's records and
its output side (OUTPUT_TOKENS).

The driver keeps only the (layer, neuron) keys of each records object and the output-token
objects of each layer; each workflow reads its own neuron's rows with a filter, so only the row
groups whose statistics may hold them are fetched.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from .. import layout
from ..errors import NeuronScopeError
from ..schema import neuron_filter

_SHIFT = 32  # (layer, neuron) packed into one int64: layer << 32 | neuron
_LAYER_DIR = re.compile(r"/layer_(\d+)/")


def code(layer, neuron):
    return (np.asarray(layer, dtype=np.int64) << _SHIFT) | np.asarray(neuron, dtype=np.int64)


def uncode(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return codes >> _SHIFT, codes & ((1 << _SHIFT) - 1)


class RecordsIndex:
    """The neurons of every records object: ``keys[i]`` holds the sorted codes ``codes[i]``; and
    the output-token objects of each layer (``outputs``, none where the run has no output side)."""

    def __init__(self, keys: list[str], codes: list[np.ndarray], outputs: dict[int, list[str]] | None = None):
        self.keys, self.codes = keys, codes
        self.outputs = outputs or {}

    @classmethod
    def scan(cls, store) -> RecordsIndex:
        """One listing, then per object its footer and three columns (no activations, no tokens),
        checked on the way: every RECORDS column present, every peak activation finite."""
        keys = [k for k in store.list(layout.prefix(layout.RECORDS)) if k.endswith(".parquet")]
        if not keys:
            raise NeuronScopeError(
                f"no activation records under {store.url(layout.prefix(layout.RECORDS))}; run `neuronscope record` first"
            )
        codes = []
        for key in keys:
            t = _checked_peaks(store, key)
            codes.append(np.unique(code(t["layer"].to_numpy(), t["neuron"].to_numpy())))
        return cls(keys, codes, output_token_keys(store))

    def present(self) -> np.ndarray:
        """Codes of every neuron with records, sorted."""
        return np.unique(np.concatenate(self.codes)) if self.codes else np.zeros(0, np.int64)

    def keys_of(self, layer: int, neuron: int) -> list[str]:
        """The records objects that hold rows of the neuron (none: it has no records)."""
        c = int(code(layer, neuron))
        out = []
        for key, cs in zip(self.keys, self.codes):
            i = int(np.searchsorted(cs, c))
            if i < len(cs) and cs[i] == c:
                out.append(key)
        return out

    def output_keys_of(self, layer: int) -> list[str]:
        """The output-token objects that may hold the layer's neurons."""
        return self.outputs.get(layer, [])


def layer_keys(store, folder: str) -> dict[int, list[str]]:
    """layer -> the Parquet objects in the folder's layer folder (one listing, keys sorted)."""
    out: dict[int, list[str]] = {}
    for key in store.list(layout.prefix(folder)):
        m = _LAYER_DIR.search(key)
        if m and key.endswith(".parquet"):
            out.setdefault(int(m[1]), []).append(key)
    return out


def output_token_keys(store) -> dict[int, list[str]]:
    """layer -> the OUTPUT_TOKENS objects in its folder (one listing)."""
    return layer_keys(store, layout.OUTPUT_TOKENS)


def read_output_tokens(store, keys: list[str], layer: int, neuron: int) -> dict | None:
    """The neuron's OUTPUT_TOKENS row as a dict of plain lists (None: it has none)."""
    if not keys:
        return None
    rows = store.read_parquet_where(keys, neuron_filter(layer, neuron)).to_pylist()
    return rows[0] if rows else None


def _checked_peaks(store, key: str):
    """The object's (layer, neuron, max_act) columns; NeuronScopeError naming the object when it
    lacks a RECORDS column or holds a peak that is not finite (or null)."""
    import pyarrow.compute as pc

    from ..schema import RECORDS

    missing = [c for c in RECORDS.names if c not in store.parquet_schema(key).names]
    if missing:
        raise NeuronScopeError(
            f"records {store.url(key)} is missing column(s) {missing}; "
            "it was not written by `neuronscope record` or `neuronscope import`"
        )
    peaks = store.read_parquet_where(key, None, ["layer", "neuron", "max_act"])
    bad = peaks.filter(pc.invert(pc.fill_null(pc.is_finite(peaks["max_act"]), False)))
    if bad.num_rows:
        r = bad.slice(0, 1).to_pylist()[0]
        raise NeuronScopeError(
            f"records {store.url(key)} hold activations that are not finite "
            f"({bad.num_rows} row(s), first: layer {r['layer']} neuron {r['neuron']}, max_act {r['max_act']})"
        )
    return peaks


def neuron_extremes(store, keys: list[str]) -> pd.DataFrame:
    """(layer, neuron, min, max) of the neurons whose records in ``keys`` hold the negative side:
    their bottom-k's and top-k's first values, read with a filter (the same values as STATS'); the
    lowest and highest of them where a neuron's records are spread over several parts."""
    import pyarrow.dataset as ds

    if not keys:
        return pd.DataFrame(columns=["layer", "neuron", "min", "max"])
    first = (ds.field("rank") == 0) & ds.field("kind").isin(["top", "bottom"])
    df = store.read_parquet_where(keys, first, ["layer", "neuron", "kind", "max_act"]).to_pandas()
    bottom = df["kind"] == "bottom"
    if not bottom.any():
        return pd.DataFrame(columns=["layer", "neuron", "min", "max"])
    low = df[bottom].groupby(["layer", "neuron"])["max_act"].min().rename("min")
    high = df[~bottom].groupby(["layer", "neuron"])["max_act"].max().rename("max")
    return pd.concat([low, high], axis=1).dropna(subset=["min"]).reset_index()


def load_records(store) -> pd.DataFrame:
    """Every record of a run at once: for small runs and tools (the fan-out reads per neuron)."""
    df = store.read_parquet(layout.prefix(layout.RECORDS)).to_pandas()
    return _plain_keys(df)


def _plain_keys(df: pd.DataFrame) -> pd.DataFrame:
    for col in ("layer", "neuron"):
        df[col] = df[col].astype("int64")
    return df


def read_neuron(store, keys: list[str], layer: int, neuron: int) -> pd.DataFrame:
    """The neuron's RECORDS rows from ``keys``, as pandas with plain int keys."""
    return _plain_keys(store.read_parquet_where(keys, neuron_filter(layer, neuron)).to_pandas())
