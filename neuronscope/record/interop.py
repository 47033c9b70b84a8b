"""Importing OpenAI automated-interpretability ``NeuronRecord`` JSON into RECORDS / STATS tables.

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
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..errors import CorpusError
from ..schema import RECORDS, STATS, conform


def _records_of(obj: dict, key: str, where: str) -> list[dict]:
    value = obj.get(key) or []
    if not isinstance(value, list) or not all(isinstance(r, dict) and "tokens" in r and "activations" in r for r in value):
        raise CorpusError(f"{where}: field {key!r} is not a list of {{tokens, activations}} records")
    return value


def neuron_record_tables(data: dict | str | bytes, where: str = "NeuronRecord") -> tuple[pa.Table, pa.Table]:
    """(RECORDS rows, one STATS row) of one NeuronRecord given as JSON text or a parsed dict."""
    obj = json.loads(data) if isinstance(data, (str, bytes)) else data
    try:
        layer, neuron = int(obj["neuron_id"]["layer_index"]), int(obj["neuron_id"]["neuron_index"])
    except (KeyError, TypeError, ValueError):
        raise CorpusError(f"{where}: not a NeuronRecord (no neuron_id.layer_index/neuron_index)") from None
    groups = [("top", _records_of(obj, "most_positive_activation_records", where)),
              ("random", _records_of(obj, "random_sample", where))]
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
    stats = pa.table({
        "layer": [layer], "neuron": [neuron],
        "mean": [_num(obj.get("mean"))],
        "std": [math.sqrt(variance) if _num(variance) >= 0 else math.nan],
        "min": [math.nan], "max": [top_max],
        "quantile_levels": [[]],
        "quantiles": [[float(b) for b in obj.get("quantile_boundaries") or []]],
        "n_tokens": [-1],
    })
    return conform(records, RECORDS), conform(stats, STATS)


def _num(x) -> float:
    return math.nan if x is None else float(x)


def import_openai(src: str, store) -> dict:
    """Import every ``*.json`` NeuronRecord under ``src`` (a file or folder, e.g. their
    ``neurons/<layer>/<neuron>.json`` layout) into ``store`` with the record stage's keys."""
    from .pipeline import SHARD_NEURONS, records_key, stats_key

    root = Path(src)
    files = sorted(root.rglob("*.json")) if root.is_dir() else [root]
    if not files or not files[0].is_file():
        raise CorpusError(f"no NeuronRecord JSON files at {src!r}")
    parts: dict[tuple[int, int], tuple[list, list]] = {}
    for f in files:
        rec, st = neuron_record_tables(f.read_bytes(), where=str(f))
        layer, neuron = st["layer"][0].as_py(), st["neuron"][0].as_py()
        recs, stats = parts.setdefault((layer, neuron // SHARD_NEURONS), ([], []))
        recs.append(rec)
        stats.append(st)
    for (layer, shard), (recs, stats) in sorted(parts.items()):
        store.write_parquet(records_key(layer, shard), pa.concat_tables(recs).sort_by([("neuron", "ascending")]))
        store.write_parquet(stats_key(layer, shard), pa.concat_tables(stats).sort_by([("neuron", "ascending")]))
    return {"neurons": len(files), "parts": len(parts)}
