"""A stage's table read whole, or one neuron's rows of it, whatever its stage's layout."""

from __future__ import annotations

import re

import pandas as pd

from .. import layout
from ..schema import neuron_filter
from ..store import Store
from .outputs import neuron_explanations

_LAYER_DIR = re.compile(r"/layer_(\d+)/")


def read_stage(store: Store, prefix: str):
    """A stage's whole table (``None`` when the run has no such table)."""
    return store.read_parquet(prefix) if store.list(prefix) else None


def _layer_keys(store: Store, prefix: str, layer: int) -> list[str]:
    """The Parquet objects under ``prefix`` that may hold ``layer``: those in its ``layer_LLL/``
    folder, and any outside a layer folder."""
    out = []
    for key in store.list(prefix):
        m = _LAYER_DIR.search(key)
        if key.endswith(".parquet") and (m is None or int(m[1]) == layer):
            out.append(key)
    return out


def neuron_rows(store: Store, prefix: str, layer: int, neuron: int):
    """One neuron's rows of a stage's table (``None`` when the run has no such table), read
    with a filter: only the row groups that may hold the neuron are fetched."""
    if prefix.rstrip("/") == layout.EXPLANATIONS:
        if not store.list(prefix):
            return None
        t = neuron_explanations(store, layer, neuron)
        return None if t is None else t.to_pandas()
    keys = _layer_keys(store, prefix, layer)
    if not keys:
        return pd.DataFrame() if store.list(prefix) else None
    return store.read_parquet_where(keys, neuron_filter(layer, neuron)).to_pandas()
