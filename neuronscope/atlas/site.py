"""The atlas's static site: the page, its script and style, and data shards that load from file://.

Chromium refuses fetch() on file:// pages, so every shard is a small script that stores its
data in ``window.NS_DATA[name]``; the page adds a <script> tag per shard it needs."""

from __future__ import annotations

import itertools
import json
import math
import posixpath
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from urllib.parse import quote, urlsplit

import pyarrow as pa
import pyarrow.compute as pc

from ..results import jsonable
from ..store import Store
from .exemplars import Exemplars, Texts, exemplars
from .semantic import shown, similar_neurons
from .table import neuron_id

STATIC = ("index.html", "atlas.js", "atlas.css")
DATA_DIR = "data/"
INDEX_SHARD = "index"
NEURONS_PER_SHARD = 64  # a neuron's page loads the shard of its 64 neighbours in the layer (~1 MB)
TEXTS_SHARD, TEXTS_PER_SHARD = "texts_", 64  # distinct token lists: a page loads those of its exemplars
# many writes in flight, a bounded batch in memory: by size, as a whole-model run's neuron shards
# are megabytes each (256 of them held at once were gigabytes)
WRITE_THREADS, WRITE_BATCH_BYTES = 16, 256 << 20
INDEX_COLUMNS = [
    "status",
    "n_modes",
    "score",
    "score_ci",
    "baseline_score",
    "baseline_score_ci",
    "lexical_score",
    "lexical_score_ci",
    "control_score",
    "control_score_ci",
    "baseline_explanation",
    "density",
    "max",
]
# JSON may hold any corpus string: these would end the <script> or start markup in the shard.
_UNSAFE = (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029"))


def _json(obj) -> str:
    """Strict JSON text; the generic clean-up (NaN as null, numpy values) only where it is needed."""
    try:
        text = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (ValueError, TypeError):
        text = json.dumps(jsonable(obj), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    for bad, escaped in _UNSAFE:  # str.replace: much faster than translate() on megabytes
        text = text.replace(bad, escaped)
    return text


def js_shard(name: str, obj) -> bytes:
    """``obj`` as a script that stores it in ``window.NS_DATA[name]``."""
    return f"window.NS_DATA[{_json(name)}]={_json(obj)};\n".encode()


def relative_link(run: Store, out: Store, key: str) -> str:
    """The run's ``key`` as a link from the atlas folder: relative where both are on one disk or
    in one bucket (so the pair can move together), else the object's URI."""
    src, dest = urlsplit(run.url(key)), urlsplit(out.uri.rstrip("/") + "/")
    if (src.scheme, src.netloc) != (dest.scheme, dest.netloc):
        return run.url(key)
    return quote(posixpath.relpath(src.path, dest.path))


def _modes(rows: list[dict]) -> list[dict]:
    return [{k: r[k] for k in ("polarity", "mode", "explanation", "mode_score")} for r in rows if r["mode"] >= 0]


def _short(x):
    """Floats, and those of an interval, to 4 decimals (the index shows at most 4): a whole-model
    index is megabytes of them."""
    if isinstance(x, list):
        return [_short(v) for v in x]
    return round(x, 4) if isinstance(x, float) and math.isfinite(x) else x


def index_shard(neurons: dict, manifest: dict) -> dict:
    """Every neuron (its modes nested) for the index page's table, filters and search, column-wise:
    a whole-model index is tens of thousands of rows, and its keys repeated per row would be most
    of its megabytes (the page rebuilds the rows, with their ids, from the columns)."""
    firsts = [rows[0] for rows in neurons.values()]
    record = manifest.get("stages", {}).get("record", {}).get("inputs", {})
    return {
        "model": record.get("model"),
        "corpus": record.get("corpus"),
        "neurons_per_shard": NEURONS_PER_SHARD,
        "texts_per_shard": TEXTS_PER_SHARD,
        "columns": {
            "layer": [key[0] for key in neurons],
            "neuron": [key[1] for key in neurons],
            **{c: [_short(r[c]) for r in firsts] for c in INDEX_COLUMNS},
            "modes": [_modes(rows) for rows in neurons.values()],
            "top_tokens": [r["top_tokens"][:8] for r in firsts],
        },
    }


def neuron_entry(rows: list[dict], exemplars: dict, similar: list, explanations: dict, transcript: str | None) -> dict:
    """What the neuron's page shows: its table rows (their exemplar ids give each top exemplar its
    mode), exemplars as columns, similar neurons and the transcript link."""
    layer, neuron = rows[0]["layer"], rows[0]["neuron"]
    return {
        "id": neuron_id(layer, neuron),
        "layer": layer,
        "neuron": neuron,
        "rows": rows,
        "exemplars": exemplars,
        "transcript": transcript,
        "similar": [
            {
                "id": neuron_id(lay, n),
                "layer": lay,
                "neuron": n,
                "similarity": round(s, 4),
                "explanation": explanations.get((lay, n)),
            }
            for lay, n, s in similar
        ],
    }


def shard_name(layer: int, neuron: int) -> str:
    """The data shard holding the neuron's page data."""
    return f"L{int(layer)}_S{int(neuron) // NEURONS_PER_SHARD}"


def _batches(items):
    """The (key, bytes) pairs in lists that end once they hold WRITE_BATCH_BYTES."""
    batch, size = [], 0
    for kv in items:
        batch.append(kv)
        size += len(kv[1])
        if size >= WRITE_BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _write_all(out: Store, items) -> list[str]:
    """Write (key, bytes) pairs, many at once; returns the keys."""
    keys = []
    with ThreadPoolExecutor(WRITE_THREADS) as pool:
        for batch in _batches(items):
            list(pool.map(lambda kv: out.write_bytes(*kv), batch))
            keys += [k for k, _ in batch]
    return keys


def _page_entry(run: Store, out: Store, built, neurons: dict):
    """A function making a neuron's page entry from its key and its layer's exemplars."""
    similar = (
        similar_neurons(built.atlas.neurons, built.atlas.index, built.vectors, built.ids) if len(built.ids) else {}
    )
    first = built.atlas.neurons.assign(shown=shown(built.atlas.neurons)).drop_duplicates(["layer", "neuron"])
    explanations = dict(zip(zip(first["layer"].astype(int), first["neuron"].astype(int)), first["shown"]))

    def entry(key: tuple[int, int], ex: Exemplars) -> dict:
        transcript = built.tables.transcript(*key)
        link = relative_link(run, out, transcript) if transcript else None
        return neuron_entry(neurons[key], ex.columns(key), similar.get(key, []), explanations, link)

    return entry


def _layer_shards(keys, ex: Exemplars, entry):
    """(key, bytes) of each shard of NEURONS_PER_SHARD neurons of one layer (``keys``, sorted)."""
    for name, shard_keys in itertools.groupby(keys, key=lambda k: shard_name(*k)):
        entries = {e["id"]: e for e in (entry(key, ex) for key in shard_keys)}
        yield DATA_DIR + name + ".js", js_shard(name, entries)


def _neuron_shards(run: Store, out: Store, built, neurons: dict):
    """(key, bytes) of the neuron shards, then of the text shards (the run's distinct token lists).
    A layer at a time: a whole-model run's records do not fit in memory at once; a layer's
    exemplars live in its ``_layer_shards`` generator, freed when it ends."""
    entry, texts = _page_entry(run, out, built, neurons), Texts()
    for layer, keys in itertools.groupby(neurons, key=lambda k: k[0]):
        yield from _layer_shards(keys, exemplars(built.tables.layer_records(layer), texts), entry)
    lists = texts.lists()
    for k in range(0, len(lists), TEXTS_PER_SHARD):
        name = f"{TEXTS_SHARD}{k // TEXTS_PER_SHARD}"
        yield DATA_DIR + name + ".js", js_shard(name, lists.slice(k, TEXTS_PER_SHARD).to_pylist())


def _finite_values(col, t: pa.DataType):
    return pc.if_else(pc.is_finite(col), col, pa.scalar(None, t))


def _finite_lists(col: pa.ChunkedArray) -> pa.Array:
    """A list<float> column (the intervals) with its non-finite values as nulls."""
    arr = col.combine_chunks()
    start, end = arr.offsets[0].as_py(), arr.offsets[-1].as_py()
    values = _finite_values(arr.values.slice(start, end - start), arr.type.value_type)
    return pa.ListArray.from_arrays(pc.subtract(arr.offsets, start), values, mask=arr.is_null())


def _finite(table: pa.Table) -> pa.Table:
    """NaN and infinities of the float columns and of the lists of floats as nulls (strict JSON),
    column by column in Arrow: the shards then need no clean-up row by row."""
    for i, field in enumerate(table.schema):
        if pa.types.is_floating(field.type):
            table = table.set_column(i, field, _finite_values(table.column(i), field.type))
        elif pa.types.is_list(field.type) and pa.types.is_floating(field.type.value_type):
            table = table.set_column(i, field, _finite_lists(table.column(i)))
    return table


def _shards(run: Store, out: Store, built):
    """(key, bytes) of the index shard, then of the neuron and text shards, made one at a time."""
    neurons: dict = {}  # (layer, neuron) -> its rows, in table order (sorted)
    for row in _finite(built.table).to_pylist():
        neurons.setdefault((row["layer"], row["neuron"]), []).append(row)
    yield DATA_DIR + INDEX_SHARD + ".js", js_shard(INDEX_SHARD, index_shard(neurons, built.tables.manifest))
    yield from _neuron_shards(run, out, built, neurons)


def write_site(run: Store, out: Store, built, progress=None) -> None:
    """index.html, its script, style and data shards; shards of neurons no longer in the run are removed."""
    static = resources.files(__package__).joinpath("static")
    written = set(_write_all(out, _shards(run, out, built)))
    neurons = {(r["layer"], r["neuron"]) for r in built.table.select(["layer", "neuron"]).to_pylist()}
    for key in out.list(DATA_DIR):
        if key not in written:
            out.delete(key)
    _write_all(out, iter([(name, static.joinpath(name).read_bytes()) for name in STATIC]))
    if progress:
        progress(f"atlas: {len(neurons)} neuron pages in {out.uri}")
