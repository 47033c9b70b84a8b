"""Content-addressed LLM response cache in the run's store: reruns are reproducible and free.

Two layouts. ``ResponseCache``: one JSON object per request (``llm_cache/hh/HASH.json``), looked
up in parallel. ``NeuronCache``: what the explain fan-out uses; one neuron's answers live in one
Parquet object (``llm_cache/layer_LLL/neuron_NNNNN.parquet``, later compacted into the layer's
parts), read once when the neuron starts and written once when it ends, falling back to the
per-request objects of older runs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.dataset as ds

from .. import layout
from ..store import Store

# The prompt text is in the key, so a changed prompt template (whose version is recorded with the
# explanations) gets new keys by itself. What the text cannot show is how a backend turns it into
# model input (chat template flags, answer prefill): bump this when that changes.
KEY_FORMAT = 1
LOOKUP_THREADS = 16  # per-request objects: latency-bound GETs
ENTRIES = pa.schema([("layer", pa.int32()), ("neuron", pa.int32()), ("key", pa.string()), ("value", pa.string())])


class ResponseCache:
    """JSON responses keyed by the sha256 of everything that determines them."""

    def __init__(self, store: Store, model_id: str, prefix: str = layout.LLM_CACHE):
        self.store = store
        self.model_id = model_id
        self.prefix = prefix.rstrip("/")

    def key(self, kind: str, payload, params: dict) -> str:
        blob = json.dumps([KEY_FORMAT, self.model_id, kind, payload, params], sort_keys=True, separators=(",", ":"))
        h = hashlib.sha256(blob.encode()).hexdigest()
        return f"{self.prefix}/{h[:2]}/{h}.json"

    def get(self, key: str):
        return self.store.read_json(key) if self.store.exists(key) else None

    def get_many(self, keys: list[str]) -> list:
        """The cached value of each key, or None; the lookups run in parallel."""
        if len(keys) <= 1:
            return [self.get(k) for k in keys]
        with ThreadPoolExecutor(min(LOOKUP_THREADS, len(keys))) as pool:
            return list(pool.map(self.get, keys))

    def put(self, key: str, value) -> None:
        self.store.write_json(key, value)

    def put_many(self, items: dict) -> None:
        for key, value in items.items():
            self.put(key, value)


class NeuronCache(ResponseCache):
    """The response cache of one neuron's workflow. ``sources``: the objects that may hold its
    earlier answers (the layer's parts that list the neuron, its own object); ``legacy``: whether
    the run also has per-request objects to fall back on."""

    def __init__(
        self, store: Store, model_id: str, layer: int, neuron: int, sources: Sequence[str] = (), legacy: bool = False
    ):
        super().__init__(store, model_id)
        self.layer, self.neuron, self.legacy = layer, neuron, legacy
        self.own_key = layout.cache_key(layer, neuron)
        self.entries: dict[str, str] = {}
        self.own: dict[str, str] = {}  # what the neuron's own object holds (read, then added)
        parts = [k for k in sources if k != self.own_key]
        if parts:
            where = (ds.field("layer") == layer) & (ds.field("neuron") == neuron)
            table = store.read_parquet_where(parts, where, ["key", "value"]).to_pydict()
            self.entries.update(zip(table["key"], table["value"]))
        if self.own_key in sources:
            table = store.read_parquet_where(self.own_key, None, ["key", "value"]).to_pydict()
            self.own = dict(zip(table["key"], table["value"]))
            self.entries.update(self.own)
        self.fresh = False

    def get_many(self, keys: list[str]) -> list:
        found = [json.loads(self.entries[k]) if k in self.entries else None for k in keys]
        missing = [i for i, f in enumerate(found) if f is None]
        if self.legacy and missing:
            for i, value in zip(missing, super().get_many([keys[i] for i in missing])):
                found[i] = value
        return found

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
