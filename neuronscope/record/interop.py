"""OpenAI automated-interpretability formats <-> RECORDS / STATS tables.

Imports ``NeuronRecord`` JSON and the neuron-puzzle JSON; exports ``NeuronRecord`` JSON.

The format (``neuron_explainer.activations.activations.NeuronRecord``, serialized by their
FastDataclass, which may add a ``"dataclass_name"`` key to every object):
``neuron_id {layer_index, neuron_index}``, ``most_positive_activation_records`` and
``random_sample`` (lists of ``{tokens, activations}``), optional ``random_sample_by_quantile``
(a list per quantile) with ``quantile_boundaries``, and moments ``mean`` / ``variance``.

Mapping: most-positive records -> kind "top" (file order = rank, 0 highest), random sample ->
"random", quantile q's sample -> "quantile_q". The format has no corpus positions or token
ids, so ``window_id`` is the record's index within the neuron's file (unique per neuron, not a
corpus position) and ``token_ids`` is empty. In the stats, ``min`` is NaN (not recorded),
``max`` is the largest top activation, ``quantiles`` are the quantile boundaries with empty
``quantile_levels`` (the levels are not recorded), and ``n_tokens`` is -1 (unknown).

Neuron puzzles (their ``explanations/puzzles.json``: ``{name: {name, explanation, sentences,
false_explanations}}``, a sentence being a list of tokens, each a string (activation 0) or a
``[token, activation]`` pair) import as layer 0, neuron = the puzzle's index in the file; every
sentence is a "top" record (``window_id`` = its index in the puzzle, rank by max activation,
ties in file order); stats are over the puzzle's tokens. Names and (false) explanations go to
``puzzles.json`` in the run: ``{neuron: {name, explanation, false_explanations}}``.

Export: one neuron's RECORDS (+ STATS) rows -> a ``NeuronRecord`` dict that the importer reads
back to the same rows, except what the format cannot hold: ``window_id`` (becomes the record's
index), ``token_ids``, a top record's ``max_pos`` / ``max_act`` when it is not its window's
maximum, the negative side (kinds ``bottom``, ``negative_quantile_j``), and the stats' ``min``,
``quantile_levels`` and ``n_tokens``. Kinds ``quantile_j`` become ``random_sample_by_quantile[j]``,
lowest first as in their files. Their bins differ: OpenAI's are quantiles of the activation
distribution, NeuronScope's recorded strata are octaves of the window's max activation, bin j of
B holding windows whose max lies in [2**(o-B+1+j), 2**(o-B+2+j)), o the octave of the neuron's
max (2**o <= max < 2**(o+1)). For recorded strata ``quantile_boundaries`` are then the B-1
octave edges between the bins (one fewer than the bins, as in their files; the lowest bin starts
at 2**(o-B+1), not at 0); otherwise (imported quantiles, or none) they are the stats' quantiles.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..errors import CorpusError
from ..schema import RECORDS, RECORDS_ROW_GROUP_ROWS, STATS, conform


def _records_of(obj: dict, key: str, where: str) -> list[dict]:
    value = obj.get(key) or []
    if not isinstance(value, list) or not all(
        isinstance(r, dict) and "tokens" in r and "activations" in r for r in value
    ):
        raise CorpusError(f"{where}: field {key!r} is not a list of {{tokens, activations}} records")
    return value


def neuron_record_tables(data: dict | str | bytes, where: str = "NeuronRecord") -> tuple[pa.Table, pa.Table]:
    """(RECORDS rows, one STATS row) of one NeuronRecord given as JSON text or a parsed dict."""
    obj = json.loads(data) if isinstance(data, (str, bytes)) else data
    try:
        layer, neuron = int(obj["neuron_id"]["layer_index"]), int(obj["neuron_id"]["neuron_index"])
    except (KeyError, TypeError, ValueError):
        raise CorpusError(f"{where}: not a NeuronRecord (no neuron_id.layer_index/neuron_index)") from None
    groups = [
        ("top", _records_of(obj, "most_positive_activation_records", where)),
        ("random", _records_of(obj, "random_sample", where)),
    ]
    for q, sample in enumerate(obj.get("random_sample_by_quantile") or []):
        groups.append((f"quantile_{q}", _records_of({"s": sample}, "s", where)))
    rows: dict[str, list] = {name: [] for name in RECORDS.names}
    for kind, records in groups:
        for rank, r in enumerate(records):
            acts = np.asarray(r["activations"], np.float32)
            if len(acts) != len(r["tokens"]):
                raise CorpusError(f"{where}: a {kind} record has {len(r['tokens'])} tokens but {len(acts)} activations")
            pos = int(acts.argmax()) if len(acts) else 0
            rows["layer"].append(layer)
            rows["neuron"].append(neuron)
            rows["kind"].append(kind)
            rows["rank"].append(rank)
            rows["window_id"].append(len(rows["window_id"]))
            rows["tokens"].append([str(t) for t in r["tokens"]])
            rows["token_ids"].append([])
            rows["activations"].append(acts)
            rows["max_pos"].append(pos)
            rows["max_act"].append(float(acts[pos]) if len(acts) else math.nan)
    records = pa.table({k: pa.array(v, type=RECORDS.field(k).type) for k, v in rows.items()})
    top_max = max((max(r["activations"]) for r in groups[0][1] if r["activations"]), default=math.nan)
    variance = obj.get("variance")
    stats = pa.table(
        {
            "layer": [layer],
            "neuron": [neuron],
            "mean": [_num(obj.get("mean"))],
            "std": [math.sqrt(_num(variance)) if _num(variance) >= 0 else math.nan],
            "min": [math.nan],
            "max": [top_max],
            "quantile_levels": [[]],
            "quantiles": [[float(b) for b in obj.get("quantile_boundaries") or []]],
            "n_tokens": [-1],
        }
    )
    return conform(records, RECORDS), conform(stats, STATS)


def _num(x) -> float:
    return math.nan if x is None else float(x)


def _write(store, tables: list[tuple[pa.Table, pa.Table]]) -> int:
    """Write (records, stats) pairs under the record stage's keys, grouped into its shards."""
    from ..layout import records_key, stats_key
    from .driver import SHARD_NEURONS

    parts: dict[tuple[int, int], tuple[list, list]] = {}
    for rec, st in tables:
        layer, neuron = st["layer"][0].as_py(), st["neuron"][0].as_py()
        recs, stats = parts.setdefault((layer, neuron // SHARD_NEURONS), ([], []))
        recs.append(rec)
        stats.append(st)
    for (layer, shard), (recs, stats) in sorted(parts.items()):
        recs_table = pa.concat_tables(recs).sort_by([("neuron", "ascending")])
        store.write_parquet(records_key(layer, shard), recs_table, row_group_size=RECORDS_ROW_GROUP_ROWS)
        store.write_parquet(stats_key(layer, shard), pa.concat_tables(stats).sort_by([("neuron", "ascending")]))
    return len(parts)


def import_openai(src: str, store) -> dict:
    """Import every ``*.json`` NeuronRecord under ``src`` (a file or folder, e.g. their
    ``neurons/<layer>/<neuron>.json`` layout) into ``store`` with the record stage's keys."""
    root = Path(src)
    files = sorted(root.rglob("*.json")) if root.is_dir() else [root]
    if not files or not files[0].is_file():
        raise CorpusError(f"no NeuronRecord JSON files at {src!r}")
    tables = [neuron_record_tables(f.read_bytes(), where=str(f)) for f in files]
    return {"neurons": len(files), "parts": _write(store, tables)}


# --- neuron puzzles -------------------------------------------------------------------------


def _puzzle_sentence(sentence, where: str) -> tuple[list[str], list[float]]:
    tokens, acts = [], []
    for t in sentence if isinstance(sentence, list) else [None]:
        if isinstance(t, str):
            tokens.append(t)
            acts.append(0.0)
        elif isinstance(t, list) and len(t) == 2 and isinstance(t[0], str) and isinstance(t[1], (int, float)):
            tokens.append(t[0])
            acts.append(float(t[1]))
        else:
            raise CorpusError(f"{where}: a sentence token is {t!r}, not a string or a [token, activation] pair")
    return tokens, acts


def puzzle_tables(puzzle: dict, neuron: int, where: str = "puzzle") -> tuple[pa.Table, pa.Table]:
    """(RECORDS rows, one STATS row) of one neuron puzzle, recorded as layer 0, ``neuron``."""
    if not isinstance(puzzle, dict) or not isinstance(puzzle.get("sentences"), list) or not puzzle["sentences"]:
        raise CorpusError(f"{where}: not a neuron puzzle (no list of sentences)")
    sentences = [_puzzle_sentence(s, where) for s in puzzle["sentences"]]
    if not all(tokens for tokens, _ in sentences):
        raise CorpusError(f"{where}: a sentence has no tokens")
    peaks = [max(acts) for _, acts in sentences]
    order = sorted(range(len(sentences)), key=lambda i: -peaks[i])  # stable: ties stay in file order
    acts = [np.asarray(sentences[i][1], np.float32) for i in order]
    records = pa.table(
        {
            "layer": np.zeros(len(order), np.int32),
            "neuron": np.full(len(order), neuron, np.int32),
            "kind": ["top"] * len(order),
            "rank": np.arange(len(order), dtype=np.int32),
            "window_id": np.asarray(order, np.int64),
            "tokens": [sentences[i][0] for i in order],
            "token_ids": [[] for _ in order],
            "activations": acts,
            "max_pos": np.asarray([int(a.argmax()) for a in acts], np.int32),
            "max_act": np.asarray([a.max() for a in acts], np.float32),
        }
    )
    every = np.concatenate(acts).astype(np.float64)
    stats = pa.table(
        {
            "layer": [0],
            "neuron": [neuron],
            "mean": [every.mean()],
            "std": [every.std()],
            "min": [every.min()],
            "max": [every.max()],
            "quantile_levels": [[]],
            "quantiles": [[]],
            "n_tokens": [len(every)],
        }
    )
    return conform(records, RECORDS), conform(stats, STATS)


def import_puzzles(src: str, store) -> dict:
    """Import a neuron-puzzle JSON file (``{name: puzzle}``) into ``store``; see the module doc."""
    try:
        data = json.loads(Path(src).read_bytes())
    except OSError as e:
        raise CorpusError(f"cannot read puzzle file {src!r}: {e.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorpusError(f"puzzle file {src!r} is not JSON: {e}") from None
    if not isinstance(data, dict) or not data:
        raise CorpusError(f"puzzle file {src!r} is not a JSON object of puzzles by name")
    tables, index = [], {}
    for neuron, (key, puzzle) in enumerate(data.items()):
        tables.append(puzzle_tables(puzzle, neuron, where=f"{src}: puzzle {key!r}"))
        index[str(neuron)] = {
            "name": puzzle.get("name", key),
            "explanation": puzzle.get("explanation"),
            "false_explanations": list(puzzle.get("false_explanations") or []),
        }
    parts = _write(store, tables)
    store.write_json("puzzles.json", index)
    return {"neurons": len(tables), "parts": parts}


# --- export -----------------------------------------------------------------------------------


def _finite(x) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _activation_records(rows) -> list[dict]:
    return [
        {
            "dataclass_name": "ActivationRecord",
            "tokens": list(r["tokens"]),
            "activations": [float(a) for a in r["activations"]],
        }
        for r in rows
    ]


def neuron_record_json(records: pa.Table, stats: pa.Table | None = None) -> dict:
    """One neuron's RECORDS rows (+ its STATS row) as a ``NeuronRecord`` dict (see the module doc)."""
    rows = records.to_pylist()
    ids = {(r["layer"], r["neuron"]) for r in rows}
    if len(ids) != 1:
        raise ValueError(f"expected the records of one neuron, got {len(ids)} (layer, neuron) pairs")
    ((layer, neuron),) = ids
    by_kind: dict[str, list] = {}
    for r in sorted(rows, key=lambda r: r["rank"]):
        by_kind.setdefault(r["kind"], []).append(r)
    # bins by number, an empty one (no rows) kept in its place
    bins = 1 + max((int(k.split("_")[1]) for k in by_kind if k.startswith("quantile_")), default=-1)
    st = stats.to_pylist()[0] if stats is not None and len(stats) else {}
    boundaries = [float(q) for q in st.get("quantiles") or []] or None
    if bins and st.get("quantile_levels"):  # recorded here (imported stats have no levels): octave strata
        boundaries = _octave_edges(by_kind, bins)
    std = _finite(st.get("std"))
    return {
        "dataclass_name": "NeuronRecord",
        "neuron_id": {"dataclass_name": "NeuronId", "layer_index": layer, "neuron_index": neuron},
        "random_sample": _activation_records(by_kind.get("random", [])),
        "random_sample_by_quantile": [_activation_records(by_kind.get(f"quantile_{j}", [])) for j in range(bins)]
        or None,
        "quantile_boundaries": boundaries,
        "mean": _finite(st.get("mean")),
        "variance": None if std is None else std * std,
        "skewness": None,
        "kurtosis": None,
        "most_positive_activation_records": _activation_records(by_kind.get("top", [])),
    }


def _octave_edges(by_kind: dict[str, list], bins: int) -> list[float] | None:
    """The edges between a recorded neuron's ``bins`` strata: 2**(o-bins+2) .. 2**o, o the
    octave of its max (the top exemplars' first)."""
    peak = max((r["max_act"] for r in by_kind.get("top", [])), default=math.nan)
    if not peak > 0:
        return None
    top = math.frexp(peak)[1] - 1  # 2**top <= peak < 2**(top + 1), as the recorder reads its float bits
    return [2.0 ** (top - bins + 1 + j) for j in range(1, bins)]


def export_neuron(run: str, layer: int, neuron: int) -> dict:
    """The ``NeuronRecord`` dict of one neuron of a run's records."""
    from .. import layout
    from ..errors import NeuronScopeError
    from ..results import neuron_rows
    from ..store import Store

    store = Store.open(run)
    records = neuron_rows(store, layout.prefix(layout.RECORDS), layer, neuron)
    if records is None or records.empty:
        raise NeuronScopeError(f"run {store.uri} has no records for layer {layer} neuron {neuron}")
    stats = neuron_rows(store, layout.prefix(layout.STATS), layer, neuron)
    as_table = lambda df, schema: conform(pa.Table.from_pandas(df, preserve_index=False), schema)
    return neuron_record_json(as_table(records, RECORDS), None if stats is None else as_table(stats, STATS))
