"""The run's tables, read once for the atlas: records, stats and explanations, any of them absent."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pyarrow as pa

from .. import schema
from ..errors import NeuronScopeError
from ..explain.fanout import transcript_key
from ..show import read_stage
from ..store import Store

SOURCES = ("records/", "stats/", "explanations/")


@dataclass
class RunTables:
    # Arrow, not pandas: a whole-model run has millions of exemplars of 64 tokens, too many
    # Python objects; each neuron's rows are converted when its page is made
    records: pa.Table
    stats: pd.DataFrame  # each empty (with its columns) when the run has none
    explanations: pd.DataFrame
    transcripts: frozenset[str]  # keys of the transcripts the run holds
    manifest: dict

    def transcript(self, layer: int, neuron: int) -> str | None:
        key = transcript_key(layer, neuron)
        return key if key in self.transcripts else None


def _frame(store: Store, prefix: str, table_schema) -> pd.DataFrame:
    t = read_stage(store, prefix)
    return (t if t is not None else table_schema.empty_table()).to_pandas()


def read_run(store: Store) -> RunTables:
    """Everything the atlas shows; a run with neither records nor explanations is an error."""
    records = read_stage(store, "records/")
    tables = RunTables(
        records=records if records is not None else schema.RECORDS.empty_table(),
        stats=_frame(store, "stats/", schema.STATS),
        explanations=_frame(store, "explanations/", schema.EXPLANATIONS),
        transcripts=frozenset(k for k in store.list("transcripts/") if k.endswith(".jsonl")),
        manifest=store.read_json("manifest.json") if store.exists("manifest.json") else {},
    )
    if not tables.records.num_rows and tables.explanations.empty:
        raise NeuronScopeError(f"run {store.uri} has no activation records or explanations to build an atlas from; "
                               "run `neuronscope record` (and `neuronscope explain`) first")
    return tables


def source_keys(store: Store) -> list[str]:
    """The run's input objects: when this list changes, a built atlas is stale."""
    return [k for prefix in SOURCES for k in store.list(prefix)]


def neuron_ids(tables: RunTables) -> pd.DataFrame:
    """(layer, neuron) of every neuron with records or explanations, sorted."""
    both = pd.concat([tables.records.select(["layer", "neuron"]).to_pandas(), tables.explanations[["layer", "neuron"]]])
    return both.drop_duplicates().sort_values(["layer", "neuron"]).reset_index(drop=True)
