"""Content-addressed LLM response cache in the run's store: reruns are reproducible and free.

One neuron's answers live in one Parquet object (``llm_cache/layer_LLL/neuron_NNNNN.parquet``,
later compacted into the layer's parts), read once when the neuron starts and written once when
it ends.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import pyarrow as pa

from .. import layout
from ..schema import neuron_filter
from ..store import Store

# The prompt text is in the key, so a changed prompt template (whose version is recorded with the
# explanations) gets new keys by itself. What the text cannot show is how a backend turns it into
# model input (chat template flags, answer prefill): bump this when that changes.
KEY_FORMAT = 1
ENTRIES = pa.schema([("layer", pa.int32()), ("neuron", pa.int32()), ("key", pa.string()), ("value", pa.string())])


class NeuronCache:
    """The response cache of one neuron's workflow: JSON responses keyed by the sha256 of
    everything that determines them. ``sources``: the objects that may hold its earlier answers
    (the layer's parts that list the neuron, its own object)."""

    def __init__(self, store: Store, model_id: str, layer: int, neuron: int, sources: Sequence[str] = ()):
        self.store, self.model_id = store, model_id
        self.layer, self.neuron = layer, neuron
        self.own_key = layout.cache_key(layer, neuron)
        self.entries: dict[str, str] = {}
        self.own: dict[str, str] = {}  # what the neuron's own object holds (read, then added)
        parts = [k for k in sources if k != self.own_key]
        if parts:
            table = store.read_parquet_where(parts, neuron_filter(layer, neuron), ["key", "value"]).to_pydict()
            self.entries.update(zip(table["key"], table["value"]))
        if self.own_key in sources:
            table = store.read_parquet_where(self.own_key, None, ["key", "value"]).to_pydict()
            self.own = dict(zip(table["key"], table["value"]))
            self.entries.update(self.own)
        self.fresh = False

    def key(self, kind: str, payload, params: dict) -> str:
        blob = json.dumps([KEY_FORMAT, self.model_id, kind, payload, params], sort_keys=True, separators=(",", ":"))
        h = hashlib.sha256(blob.encode()).hexdigest()
        # the name of the one-object-per-answer layout of early runs: stored entries are keyed by it
        return f"{layout.LLM_CACHE}/{h[:2]}/{h}.json"

    def get_many(self, keys: list[str]) -> list:
        """The cached value of each key, or None."""
        return [json.loads(self.entries[k]) if k in self.entries else None for k in keys]

    def put_many(self, items: dict) -> None:
        for key, value in items.items():
            text = json.dumps(value, sort_keys=True, separators=(",", ":"))
            self.entries[key] = self.own[key] = text
            self.fresh = True

    def flush(self) -> None:
        """Write the neuron's object, when this workflow added answers."""
        if not self.fresh:
            return
        n = len(self.own)
        table = pa.table(
            {
                "layer": pa.array([self.layer] * n, pa.int32()),
                "neuron": pa.array([self.neuron] * n, pa.int32()),
                "key": list(self.own),
                "value": list(self.own.values()),
            },
            schema=ENTRIES,
        )
        self.store.write_parquet(self.own_key, table)
        self.fresh = False
