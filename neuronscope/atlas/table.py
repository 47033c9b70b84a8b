"""The atlas table: one row per (layer, neuron, polarity, mode), and the top-token profile of every neuron."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..schema import ATLAS_NEURONS, ATLAS_TOKENS, CAUSAL_SHOWN, EXPLANATIONS, OUTPUT_TOKENS, STATS, conform
from .collect import KEYS, RunTables, neuron_ids
from .exemplars import large_lists

# A token fires at this share of its neuron's max: the density and the top-token profile use it.
FIRE_FRACTION = 0.25
TOP_TOKENS = 20  # kept per neuron in the table (the token index keeps them all)


def neuron_id(layer: int, neuron: int) -> str:
    return f"L{int(layer)}_N{int(neuron)}"


def page_link(layer: int, neuron: int) -> str:
    """The neuron's page relative to the atlas folder (hash routing: works from file://)."""
    return f"index.html#/L{int(layer)}/N{int(neuron)}"


def density(levels, quantiles, lo: float, hi: float) -> float:
    """Share of tokens above FIRE_FRACTION of the max, read off the stats' quantile curve
    (linear between its points, closed by min and max); NaN where no curve was recorded."""
    levels, quantiles = np.asarray(levels, dtype=float), np.asarray(quantiles, dtype=float)
    if not len(levels) or len(levels) != len(quantiles) or not math.isfinite(hi):
        return math.nan
    if hi <= 0:
        return 0.0
    # np.concatenate, not np.r_: this runs once per neuron, and np.r_'s overhead was most of it
    xs, ys = np.concatenate(([lo], quantiles, [hi])), np.concatenate(([0.0], levels, [1.0]))
    return float(1.0 - np.interp(FIRE_FRACTION * hi, xs, ys))


def _flat_top(records: pa.Table) -> tuple:
    """Every token of the top exemplars: (its neuron's group, token text code, texts, activation).

    In Arrow and numpy: a whole-model run has ~60 M such tokens, too many for Python objects.
    """
    cols = records.select(["layer", "neuron", "kind", "tokens", "activations"])  # filter copies only these
    top = cols.filter(pc.equal(cols["kind"], "top"))
    keys = top["layer"].to_numpy().astype(np.int64) << 32 | top["neuron"].to_numpy().astype(np.int64)
    uniq, group = np.unique(keys, return_inverse=True)
    lens = pc.list_value_length(top["tokens"]).to_numpy()
    texts = pc.list_flatten(large_lists(top["tokens"]))
    encoded = pc.dictionary_encode(texts)
    act = pc.list_flatten(large_lists(top["activations"])).to_numpy(zero_copy_only=False).astype(np.float32)
    return np.repeat(group, lens), encoded.indices.to_numpy(), encoded.dictionary, act, uniq, lens


def token_profiles(tables: RunTables) -> pd.DataFrame:
    """ATLAS_TOKENS rows: per neuron, each token text that fires in its top exemplars, with how
    often and how strongly; most frequent first. A layer at a time: one layer's records in memory."""
    parts = [p for p in map(_layer_profiles, map(tables.layer_records, tables.layers)) if len(p)]
    return pd.concat(parts, ignore_index=True) if parts else ATLAS_TOKENS.empty_table().to_pandas()


def _layer_profiles(records: pa.Table) -> pd.DataFrame:
    """token_profiles of one layer's records."""
    if not pc.any(pc.equal(records["kind"], "top")).as_py():
        return ATLAS_TOKENS.empty_table().to_pandas()
    group, code, texts, act, uniq, lens = _flat_top(records)
    peak = np.full(len(uniq), -np.inf, np.float32)
    starts = np.r_[0, np.cumsum(lens)[:-1]]
    np.maximum.at(peak, group[starts], np.maximum.reduceat(act, starts))
    p = peak[group]
    hot = (p > 0) & (act >= FIRE_FRACTION * p)
    key = group[hot].astype(np.int64) * len(texts) + code[hot]
    pairs, inverse, count = np.unique(key, return_inverse=True, return_counts=True)
    best = np.full(len(pairs), -np.inf, np.float32)
    np.maximum.at(best, inverse, act[hot])
    g = pairs // len(texts)
    prof = pd.DataFrame(
        {
            "token": texts.take(pa.array(pairs % len(texts))).to_numpy(zero_copy_only=False),
            "layer": (uniq[g] >> 32).astype(np.int32),
            "neuron": (uniq[g] & 0xFFFFFFFF).astype(np.int32),
            "count": count.astype(np.int32),
            "max_act": best,
        }
    )
    prof = prof.sort_values([*KEYS, "count", "max_act", "token"], ascending=[True, True, False, False, True])
    return prof[ATLAS_TOKENS.names].reset_index(drop=True)


def _top_lists(profiles: pd.DataFrame) -> pd.DataFrame:
    """Each neuron's first TOP_TOKENS profile rows as lists; numpy slices of the sorted profiles
    (a pandas list aggregation runs Python per neuron)."""
    head = profiles.groupby(KEYS, sort=False).head(TOP_TOKENS)
    key = head["layer"].to_numpy().astype(np.int64) << 32 | head["neuron"].to_numpy().astype(np.int64)
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else np.zeros(0, np.int64)
    cols = {c: head[c].to_numpy() for c in ("token", "count", "max_act")}
    lists = {c: np.split(v, starts[1:]) if len(v) else [] for c, v in cols.items()}
    return pd.DataFrame(
        {
            "layer": head["layer"].to_numpy()[starts],
            "neuron": head["neuron"].to_numpy()[starts],
            "top_tokens": lists["token"],
            "top_token_counts": lists["count"],
            "top_token_acts": lists["max_act"],
        }
    )


def _stats(stats: pd.DataFrame) -> pd.DataFrame:
    out = stats[[f.name for f in STATS]].copy()
    out["density"] = [density(*r) for r in zip(out["quantile_levels"], out["quantiles"], out["min"], out["max"])]
    return out


def _with_causal(rows: pd.DataFrame, causal: pd.DataFrame) -> pd.DataFrame:
    """Each mode's row with its causal check (by polarity too, where the rows have one)."""
    on = [*KEYS, "mode", *(["polarity"] if "polarity" in rows.columns else [])]
    if "polarity" not in rows.columns:
        causal = causal[causal["polarity"] == 1]
    return rows.merge(causal[on + CAUSAL_SHOWN], on=on, how="left")


def neurons_table(tables: RunTables, profiles: pd.DataFrame) -> pd.DataFrame:
    """ATLAS_NEURONS rows, sorted by layer, neuron, polarity (1 first), mode (a neuron without
    explanation: mode -1)."""
    explained = [c for c in ATLAS_NEURONS.names if c in EXPLANATIONS.names]
    rows = neuron_ids(tables).merge(tables.explanations[explained], on=KEYS, how="left")
    missing = rows["status"].isna()
    rows.loc[missing, "mode"], rows.loc[missing, "n_modes"], rows.loc[missing, "status"] = -1, 0, "unexplained"
    rows.loc[missing, "polarity"] = 1
    rows = rows.merge(_stats(tables.stats), on=KEYS, how="left").merge(_top_lists(profiles), on=KEYS, how="left")
    output = [c for c in ATLAS_NEURONS.names if c in OUTPUT_TOKENS.names]
    rows = rows.merge(tables.output_tokens[output].drop_duplicates(KEYS), on=KEYS, how="left")
    rows = _with_causal(rows, tables.causal)
    for col in (
        "top_tokens",
        "top_token_counts",
        "top_token_acts",
        "mode_tokens",
        "exemplar_ids",
        "quantile_levels",
        "quantiles",
        *output[2:],
        *(c for c in CAUSAL_SHOWN if c.endswith("_ci")),
    ):
        rows[col] = [v if isinstance(v, (list, np.ndarray)) else [] for v in rows[col]]
    rows["link"] = [page_link(layer, n) for layer, n in zip(rows["layer"], rows["neuron"])]
    # the positive side first: a neuron's first row is what the index and a token hit show
    rows = rows.sort_values([*KEYS, "polarity", "mode"], ascending=[True, True, False, True]).reset_index(drop=True)
    return rows


def to_arrow(rows: pd.DataFrame, table_schema: pa.Schema) -> pa.Table:
    return conform(pa.Table.from_pandas(rows, schema=table_schema, preserve_index=False), table_schema)
