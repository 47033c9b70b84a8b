"""The run's tables, read once for the atlas: stats, output tokens and explanations, any of them
absent; and the records, read a layer at a time (a whole-model run's are more than memory holds)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pyarrow as pa

from .. import layout, schema
from ..errors import NeuronScopeError
from ..parts import FolderIndex
from ..results import layer_keys, read_stage
from ..store import Store

SOURCES = tuple(
    layout.prefix(f) for f in (layout.RECORDS, layout.STATS, layout.EXPLANATIONS, layout.OUTPUT_TOKENS, layout.CAUSAL)
)
# the atlas never shows token ids: not reading them saves a fifth of a whole-model run's read
RECORD_COLUMNS = [name for name in schema.RECORDS.names if name != "token_ids"]
KEYS = ["layer", "neuron"]


@dataclass
class RunTables:
    store: Store
    record_keys: dict[int, list[str]]  # layer -> its records objects
    recorded: pd.DataFrame  # (layer, neuron) of every neuron with records
    stats: pd.DataFrame  # each empty (with its columns) when the run has none
    explanations: pd.DataFrame
    transcripts: FolderIndex  # the run's transcripts: per-neuron objects and compacted parts
    manifest: dict
    output_tokens: pd.DataFrame  # empty (with its columns) when the run has none
    causal: pd.DataFrame  # the causal check of each mode; empty (with its columns) when none ran

    @property
    def layers(self) -> list[int]:
        """The layers with records, ascending."""
        return sorted(self.record_keys)

    def layer_records(self, layer: int) -> pa.Table:
        """The layer's records (RECORD_COLUMNS) in stored order; none for a layer without records.
        Arrow, not pandas: a layer has hundreds of thousands of exemplars of 64 tokens."""
        keys = self.record_keys.get(layer)
        if not keys:
            return schema.RECORDS.empty_table().select(RECORD_COLUMNS)
        # every layer read as the run's first object, as a read of the whole folder would
        first = self.store.parquet_schema(self.record_keys[self.layers[0]][0]).remove_metadata()
        return self.store.read_parquet_where(keys, columns=RECORD_COLUMNS, schema=first)

    def transcript(self, layer: int, neuron: int) -> str | None:
        """The object holding the neuron's transcript: its own, or the part it was merged into
        (one JSON line per neuron)."""
        li = self.transcripts.layer(layer)
        return li.single.get(neuron) or next(iter(reversed(li.part_of(neuron))), None)


def _frame(store: Store, prefix: str, table_schema: pa.Schema) -> pd.DataFrame:
    """A stage's table; the columns it lacks (a run written before they existed) all null."""
    t = read_stage(store, prefix)
    if t is None:
        return table_schema.empty_table().to_pandas()
    for field in table_schema:
        if field.name not in t.column_names:
            t = t.append_column(field, pa.nulls(t.num_rows, field.type))
    return t.to_pandas()


def _recorded(store: Store, record_keys: dict[int, list[str]]) -> pd.DataFrame:
    """(layer, neuron) of every neuron with records: two columns of each layer, deduplicated."""
    parts = [store.read_parquet_where(keys, columns=KEYS).group_by(KEYS).aggregate([]) for keys in record_keys.values()]
    return (pa.concat_tables(parts) if parts else schema.RECORDS.empty_table().select(KEYS)).to_pandas()


def read_run(store: Store) -> RunTables:
    """Everything the atlas shows, the records a layer at a time; a run with neither records nor
    explanations is an error."""
    record_keys = layer_keys(store, layout.RECORDS)
    tables = RunTables(
        store=store,
        record_keys=record_keys,
        recorded=_recorded(store, record_keys),
        stats=_frame(store, layout.prefix(layout.STATS), schema.STATS),
        explanations=schema.backfill(_frame(store, layout.prefix(layout.EXPLANATIONS), schema.EXPLANATIONS)),
        transcripts=FolderIndex.listing(store, layout.TRANSCRIPTS),
        manifest=store.read_json(layout.MANIFEST) if store.exists(layout.MANIFEST) else {},
        output_tokens=_frame(store, layout.prefix(layout.OUTPUT_TOKENS), schema.OUTPUT_TOKENS),
        causal=_frame(store, layout.prefix(layout.CAUSAL), schema.CAUSAL),
    )
    if tables.recorded.empty and tables.explanations.empty:
        raise NeuronScopeError(
            f"run {store.uri} has no activation records or explanations to build an atlas from; "
            "run `neuronscope record` (and `neuronscope explain`) first"
        )
    return tables


def source_keys(store: Store) -> list[str]:
    """The run's input objects: when this list changes, a built atlas is stale."""
    return [k for prefix in SOURCES for k in store.list(prefix)]


def neuron_ids(tables: RunTables) -> pd.DataFrame:
    """(layer, neuron) of every neuron with records or explanations, sorted."""
    both = pd.concat([tables.recorded, tables.explanations[KEYS]])
    return both.drop_duplicates().sort_values(KEYS).reset_index(drop=True)
