"""The explain stage's outputs, written per neuron and read per neuron or as one table.

A neuron's explanation rows and transcript are first its own objects
(``explanations/layer_LLL/neuron_NNNNN[.failed].parquet``, ``transcripts/.../neuron_NNNNN.jsonl``);
compaction (``explain/compact.py``) later merges finished neurons into the layer's parts: a
transcript part holds one ``part_line`` per neuron. The explanation object is written last: it
marks the neuron done.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pyarrow as pa

from .. import layout
from ..layout import explanation_key, transcript_key
from ..parts import FolderIndex, neuron_of
from ..schema import EXPLANATIONS, conform, neuron_filter
from .transcript import Entry, entries_from_json


def part_line(layer: int, neuron: int, entries: list[dict]) -> str:
    """A transcript part's line for one neuron; it starts with ``part_line_prefix``."""
    return json.dumps({"layer": layer, "neuron": neuron, "transcript": entries}, ensure_ascii=False)


def part_line_prefix(layer: int, neuron: int) -> str:
    return part_line(layer, neuron, [])[: -len('"transcript": []}')]


def jsonable(x):
    """Strict JSON: numpy scalars/arrays as Python values, NaN/inf as null."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def rows_table(rows: list[dict]) -> pa.Table:
    return conform(pa.Table.from_pylist(rows, schema=EXPLANATIONS), EXPLANATIONS)


def write_result(store, layer: int, neuron: int, rows: list[dict], transcript: list[Entry]) -> None:
    """The neuron's transcript, then its explanation rows (``write_rows``)."""
    write_transcript(store, layer, neuron, transcript)
    write_rows(store, layer, neuron, rows)


def _numpy(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"{type(x).__name__} is not JSON")


def entry_line(entry: dict) -> str:
    """One transcript line: strict JSON of ``entry`` (``jsonable``). JSON's own encoder takes it
    as it is where it can (an entry's long lists of item values are most of a transcript); only
    an entry holding a NaN or a numpy key goes through ``jsonable``."""
    try:
        return json.dumps(entry, ensure_ascii=False, allow_nan=False, default=_numpy)
    except (TypeError, ValueError):
        return json.dumps(jsonable(entry), ensure_ascii=False, allow_nan=False)


def write_transcript(store, layer: int, neuron: int, transcript: list[Entry]) -> None:
    """The neuron's own transcript object; its rows come after it (``write_rows``)."""
    lines = "".join(entry_line(t.to_json()) + "\n" for t in transcript)
    store.write_bytes(transcript_key(layer, neuron), lines.encode("utf-8"))


def write_rows(store, layer: int, neuron: int, rows: list[dict]) -> None:
    """The neuron's explanation rows, after its transcript: they mark it done (named ``.failed``
    when it failed; a success replaces an earlier failure, which is deleted after)."""
    failed = any(r["status"] == "failed" for r in rows)
    if failed:
        store.write_parquet(explanation_key(layer, neuron, True), rows_table(rows))
        return
    earlier = explanation_key(layer, neuron, True)
    store.write_parquet(explanation_key(layer, neuron), rows_table(rows), replaces=[earlier])
    store.delete(earlier)


def read_explanations(store, columns: list[str]) -> pd.DataFrame:
    """The run's explanation rows, only ``columns`` (a whole-model run has many rows); no rows
    when the run has no explanations yet."""
    folder = layout.prefix(layout.EXPLANATIONS)
    if not store.list(folder):
        return pd.DataFrame(columns=columns)
    # a column an object lacks (written before it existed) reads as nulls: ``schema.backfill``
    return store.read_parquet_where(folder, None, columns, schema=EXPLANATIONS).to_pandas()


def neuron_explanations(store, layer: int, neuron: int) -> pa.Table | None:
    """One neuron's explanation rows (None when the run has none for it), read from its own
    object or the part that holds it, never the whole folder."""
    index = FolderIndex(layout.EXPLANATIONS, store.list(layout.layer_dir(layout.EXPLANATIONS, layer)))
    sources = index.sources(layer, neuron)
    if not sources:
        return None
    t = store.read_parquet_where(sources, neuron_filter(layer, neuron), schema=EXPLANATIONS)
    return t if t.num_rows else None


def jsonl_lines(text: str) -> list[str]:
    """The non-empty lines of a JSONL text. Split on newlines only: corpus text in a JSON string
    may hold U+2028 or U+0085, raw (``ensure_ascii=False``), where ``str.splitlines`` would cut."""
    return [ln for ln in text.split("\n") if ln]


def read_transcript(store, layer: int, neuron: int) -> list[dict] | None:
    """One neuron's transcript, as its stored JSON objects (None when the run has none for it);
    ``read_entries`` types them."""
    index = FolderIndex(layout.TRANSCRIPTS, store.list(layout.layer_dir(layout.TRANSCRIPTS, layer)))
    li = index.layer(layer)
    if neuron in li.single:
        text = store.read_bytes(li.single[neuron]).decode("utf-8")
        return [json.loads(ln) for ln in jsonl_lines(text)]
    prefix = part_line_prefix(layer, neuron)
    for key in reversed(li.part_of(neuron)):  # the newest part name sorts last
        for line in jsonl_lines(store.read_bytes(key).decode("utf-8")):
            if line.startswith(prefix):
                return json.loads(line)["transcript"]
    return None


def read_entries(store, layer: int, neuron: int) -> list[Entry] | None:
    """One neuron's transcript entries, typed (None when the run has none for it)."""
    objects = read_transcript(store, layer, neuron)
    return None if objects is None else entries_from_json(objects)


def iter_transcripts(store):
    """(layer, neuron, entries) of every transcript of the run, parts and own objects alike."""
    index = FolderIndex.listing(store, layout.TRANSCRIPTS)
    for layer, li in sorted(index.layers.items()):
        for _, key in li.parts:
            for line in jsonl_lines(store.read_bytes(key).decode("utf-8")):
                if line:
                    d = json.loads(line)
                    yield d["layer"], d["neuron"], d["transcript"]
        for n, key in sorted(li.single.items()):
            if not li.part_of(n):  # else a merge was cut short: the part holds the same text
                text = store.read_bytes(key).decode("utf-8")
                yield layer, neuron_of(key), [json.loads(ln) for ln in text.splitlines() if ln]
