"""The atlas's static site: the page, its script and style, and data shards that load from file://.

Chromium refuses fetch() on file:// pages, so every shard is a small script that stores its
data in ``window.NS_DATA[name]``; the page adds a <script> tag per shard it needs."""

from __future__ import annotations

import itertools
import json
import posixpath
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from urllib.parse import quote, urlsplit

import numpy as np
import pandas as pd
import pyarrow as pa

from ..explain.outputs import jsonable
from ..store import Store
from .semantic import similar_neurons
from .table import neuron_id

STATIC = ("index.html", "atlas.js", "atlas.css")
DATA_DIR = "data/"
INDEX_SHARD = "index"
HIST_BINS = 24
WRITE_THREADS, WRITE_BATCH = 16, 256  # shards are small: many writes in flight, a bounded batch in memory
INDEX_COLUMNS = [
    "status",
    "n_modes",
    "score",
    "control_score",
    "sim_score",
    "sim_control_score",
    "baseline_score",
    "baseline_explanation",
    "density",
    "max",
]
# JSON may hold any corpus string: these would end the <script> or start markup in the shard.
_UNSAFE = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def js_shard(name: str, obj) -> bytes:
    """``obj`` as a script that stores it in ``window.NS_DATA[name]``."""
    text = json.dumps(jsonable(obj), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return f"window.NS_DATA[{json.dumps(name).translate(_UNSAFE)}]={text.translate(_UNSAFE)};\n".encode()


def relative_link(run: Store, out: Store, key: str) -> str:
    """The run's ``key`` as a link from the atlas folder: relative where both are on one disk or
    in one bucket (so the pair can move together), else the object's URI."""
    src, dest = urlsplit(run.url(key)), urlsplit(out.uri.rstrip("/") + "/")
    if (src.scheme, src.netloc) != (dest.scheme, dest.netloc):
        return run.url(key)
    return quote(posixpath.relpath(src.path, dest.path))


def _modes(rows: list[dict]) -> list[dict]:
    return [{k: r[k] for k in ("mode", "explanation", "mode_score")} for r in rows if r["mode"] >= 0]


def index_shard(neurons: dict, manifest: dict) -> dict:
    """Every neuron in one row (its modes nested) for the index page's table, filters and search."""
    out = [
        {
            "id": neuron_id(*key),
            "layer": key[0],
            "neuron": key[1],
            **{c: rows[0][c] for c in INDEX_COLUMNS},
            "modes": _modes(rows),
            "top_tokens": rows[0]["top_tokens"][:8],
        }
        for key, rows in neurons.items()
    ]
    record = manifest.get("stages", {}).get("record", {}).get("inputs", {})
    return {"model": record.get("model"), "corpus": record.get("corpus"), "neurons": out}


def _exemplars(records: pd.DataFrame, rows: list[dict]) -> list[dict]:
    """The neuron's exemplars, top first then random then quantile samples; top ones name their mode."""
    mode_of = {w: r["mode"] for r in rows if r["mode"] >= 0 for w in r["exemplar_ids"]}
    order = records.assign(_top=records["kind"] != "top").sort_values(["_top", "kind", "rank"])
    return [
        {
            "kind": r.kind,
            "rank": int(r.rank),
            "window_id": int(r.window_id),
            "tokens": list(r.tokens),
            "acts": np.round(np.asarray(r.activations, dtype=float), 4),
            "max_act": float(r.max_act),
            "max_pos": int(r.max_pos),
            "mode": mode_of.get(int(r.window_id)) if r.kind == "top" else None,
        }
        for r in order.itertuples(index=False)
    ]


def histogram(records: pd.DataFrame) -> dict | None:
    """Activation counts over the uniform samples (random and quantile exemplars), else the top ones."""
    sample = records[records["kind"] != "top"]
    source = "random and quantile exemplars" if len(sample) else "top exemplars"
    sample = sample if len(sample) else records
    if sample.empty:
        return None
    acts = np.concatenate(sample["activations"].to_numpy()).astype(float)
    counts, edges = np.histogram(acts, bins=HIST_BINS)
    return {"counts": counts, "edges": np.round(edges, 4), "source": source, "n": len(acts)}


def neuron_shard(
    rows: list[dict], records: pd.DataFrame, similar: list, explanations: dict, transcript: str | None
) -> dict:
    layer, neuron = rows[0]["layer"], rows[0]["neuron"]
    return {
        "id": neuron_id(layer, neuron),
        "layer": layer,
        "neuron": neuron,
        "rows": [{k: v for k, v in r.items() if k != "exemplar_ids"} for r in rows],
        "exemplars": _exemplars(records, rows),
        "histogram": histogram(records),
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


def _neuron_slices(records: pa.Table) -> tuple[pa.Table, dict]:
    """``records`` sorted by layer and neuron (the record stage writes them so), and each neuron's
    (offset, length) in it: a neuron's rows are then a zero-copy slice."""
    key = records["layer"].to_numpy().astype(np.int64) << 32 | records["neuron"].to_numpy().astype(np.int64)
    if len(key) and np.any(key[1:] < key[:-1]):
        records = records.sort_by([("layer", "ascending"), ("neuron", "ascending")])
        key = np.sort(key)
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], len(key)]
    return records, {
        (int(k >> 32), int(k & 0xFFFFFFFF)): (int(a), int(b - a)) for k, a, b in zip(key[starts], starts, ends)
    }


def _write_all(out: Store, items) -> list[str]:
    """Write (key, bytes) pairs, many at once; returns the keys."""
    keys = []
    with ThreadPoolExecutor(WRITE_THREADS) as pool:
        for batch in iter(lambda: list(itertools.islice(items, WRITE_BATCH)), []):
            list(pool.map(lambda kv: out.write_bytes(*kv), batch))
            keys += [k for k, _ in batch]
    return keys


def _shards(run: Store, out: Store, built):
    """(key, bytes) of the index shard, then of each neuron's shard, made one at a time."""
    tables = built.tables
    neurons: dict = {}  # (layer, neuron) -> its rows, in table order (sorted)
    for row in built.table.to_pylist():
        neurons.setdefault((row["layer"], row["neuron"]), []).append(row)
    similar = (
        similar_neurons(built.atlas.neurons, built.atlas.index, built.vectors, built.ids) if len(built.ids) else {}
    )
    explanations = {key: rows[0]["explanation"] for key, rows in neurons.items()}
    records, slices = _neuron_slices(tables.records)
    yield DATA_DIR + INDEX_SHARD + ".js", js_shard(INDEX_SHARD, index_shard(neurons, tables.manifest))
    for key, rows in neurons.items():
        transcript = tables.transcript(*key)
        shard = neuron_shard(
            rows,
            records.slice(*slices.get(key, (0, 0))).to_pandas(),
            similar.get(key, []),
            explanations,
            relative_link(run, out, transcript) if transcript else None,
        )
        yield DATA_DIR + shard["id"] + ".js", js_shard(shard["id"], shard)


def write_site(run: Store, out: Store, built, progress=None) -> None:
    """index.html, its script, style and data shards; shards of neurons no longer in the run are removed."""
    static = resources.files(__package__).joinpath("static")
    written = set(_write_all(out, _shards(run, out, built)))
    for key in out.list(DATA_DIR):
        if key not in written:
            out.delete(key)
    _write_all(out, iter([(name, static.joinpath(name).read_bytes()) for name in STATIC]))
    if progress:
        progress(f"atlas: {len(written) - 1} neuron pages in {out.uri}")
