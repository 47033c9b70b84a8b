"""`neuronscope atlas`: the run's neurons as one table, two search indexes and a static site."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .. import __version__, layout
from ..schema import ATLAS_NEURONS, ATLAS_TOKENS
from ..store import Store
from . import semantic
from .collect import RunTables, read_run, source_keys
from .search import INDEX_KEY, NEURONS_KEY, TOKENS_KEY, AtlasIndex
from .table import neurons_table, to_arrow, token_profiles

BUILD_KEY = "build.json"  # written last: its sources say what the indexes were built from


@dataclass
class Built:
    tables: RunTables
    atlas: AtlasIndex
    vectors: np.ndarray  # one per searchable row of the table, in the index
    ids: np.ndarray  # those rows
    table: pa.Table  # the atlas table as written (ATLAS_NEURONS)


def atlas_store(run: Store, out: str | None = None) -> Store:
    return Store.open(out) if out else Store.open(run.url(layout.ATLAS))


def build_indexes(run: Store, out: Store, progress=None) -> Built:
    """Write ``neurons.parquet``, ``tokens.parquet`` and ``explanations.faiss`` into ``out``."""
    sources = source_keys(run)
    tables = read_run(run)
    profiles = token_profiles(tables)
    neurons = neurons_table(tables, profiles)
    ids = semantic.searchable(neurons)
    if progress:
        progress(
            f"atlas: {neurons[['layer', 'neuron']].drop_duplicates().shape[0]} neurons, "
            f"embedding {len(ids)} explanations"
        )
    vectors = (
        semantic.embed_texts(semantic.shown(neurons).iloc[ids].tolist()) if len(ids) else np.zeros((0, 384), np.float32)
    )
    index = semantic.build_index(vectors, ids)
    table = to_arrow(neurons, ATLAS_NEURONS)
    out.check_writable()
    out.write_parquet(NEURONS_KEY, table)
    out.write_parquet(TOKENS_KEY, to_arrow(profiles, ATLAS_TOKENS))
    out.write_bytes(INDEX_KEY, semantic.index_bytes(index))
    out.write_json(
        BUILD_KEY,
        {"run": run.uri, "sources": sources, "embedder": semantic.EMBEDDER, "neuronscope_version": __version__},
    )
    return Built(tables, AtlasIndex(neurons, index, profiles), vectors, ids, table)


def is_current(run: Store, out: Store) -> bool:
    """The atlas indexes exist and were built from the run's present records, stats and explanations."""
    if not all(out.exists(k) for k in (BUILD_KEY, NEURONS_KEY, TOKENS_KEY, INDEX_KEY)):
        return False
    return out.read_json(BUILD_KEY).get("sources") == source_keys(run)


def load_index(run: Store, out: Store, progress=None) -> AtlasIndex:
    """The atlas indexes, built first when missing or stale."""
    if is_current(run, out):
        return AtlasIndex.load(out)
    return build_indexes(run, out, progress).atlas


def build_atlas(run_uri: str, out: str | None = None, progress=None) -> str:
    """The whole atlas (indexes and site); returns where its ``index.html`` is."""
    from .site import write_site

    run = Store.open(run_uri)
    dest = atlas_store(run, out)
    built = build_indexes(run, dest, progress)
    write_site(run, dest, built, progress)
    return dest.url("index.html")
