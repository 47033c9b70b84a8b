"""The data contracts between stages: every Parquet table NeuronScope reads or writes.

One module, so that the recorder, importers, explainer, atlas and tests agree on one shape.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = "3"

# One row per (layer, neuron, exemplar). ``kind`` is "top" or "random"; ``rank`` orders the
# exemplars of one kind (0 = highest activation for "top", sample order for "random").
RECORDS = pa.schema(
    [
        ("layer", pa.int32()),
        ("neuron", pa.int32()),
        ("kind", pa.string()),
        ("rank", pa.int32()),
        ("window_id", pa.int64()),
        ("tokens", pa.list_(pa.string())),
        ("token_ids", pa.list_(pa.int32())),
        ("activations", pa.list_(pa.float32())),
        ("max_pos", pa.int32()),
        ("max_act", pa.float32()),
    ]
)

# One row per (layer, neuron): summary of the neuron over every recorded token.
STATS = pa.schema(
    [
        ("layer", pa.int32()),
        ("neuron", pa.int32()),
        ("mean", pa.float64()),
        ("std", pa.float64()),
        ("min", pa.float32()),
        ("max", pa.float32()),
        ("quantile_levels", pa.list_(pa.float32())),
        ("quantiles", pa.list_(pa.float32())),
        ("n_tokens", pa.int64()),
    ]
)

# One row per (layer, neuron, mode) of the NeuronScope method. A neuron whose workflow failed
# has a single row with status "failed", mode -1 and the reason in ``error``.
EXPLANATIONS = pa.schema(
    [
        ("layer", pa.int32()),
        ("neuron", pa.int32()),
        ("mode", pa.int32()),
        ("n_modes", pa.int32()),
        ("explanation", pa.string()),
        ("mode_size", pa.int32()),
        ("exemplar_ids", pa.list_(pa.int64())),
        ("mode_share", pa.float64()),  # the mode's share of the neuron's explain top exemplars
        ("mode_tokens", pa.list_(pa.string())),  # its activating tokens, most frequent first: "king (5)"
        ("scorer", pa.string()),  # the decision scorer of the four scores below
        ("calibrated", pa.bool_()),  # it passed the run's self-check; null when none ran
        ("mode_score", pa.float64()),
        ("score", pa.float64()),
        ("coverage", pa.float64()),
        ("baseline_explanation", pa.string()),
        ("baseline_score", pa.float64()),
        ("control_explanation", pa.string()),  # an unrelated explanation: the scores' control
        ("control_score", pa.float64()),
        ("sim_mode_score", pa.float64()),  # the same four under the simulation scorer (Pearson r)
        ("sim_score", pa.float64()),
        ("sim_baseline_score", pa.float64()),
        ("sim_control_score", pa.float64()),
        ("rounds", pa.int32()),
        ("malformed_answers", pa.int32()),  # agent answers rejected (bad format, copies), retried or not
        ("llm_calls", pa.int64()),
        ("llm_tokens_in", pa.int64()),
        ("llm_tokens_out", pa.int64()),
        ("baseline_llm_tokens_in", pa.int64()),
        ("baseline_llm_tokens_out", pa.int64()),
        ("template_version", pa.string()),
        ("method", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
    ]
)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly ``schema``'s columns, order and types; names a missing column."""
    missing = [f.name for f in schema if f.name not in table.column_names]
    if missing:
        raise ValueError(f"table lacks column(s) {missing} required by the schema")
    return table.select(schema.names).cast(schema)


def empty(schema: pa.Schema) -> pa.Table:
    return schema.empty_table()


def _fields(source: pa.Schema, names) -> list[pa.Field]:
    return [source.field(n) for n in names]


# Every explanation score and its control, carried into the atlas unchanged.
SCORE_COLUMNS = [n for n in EXPLANATIONS.names if n.endswith("score") or "control" in n]

# The atlas table (``atlas/neurons.parquet``): one row per (layer, neuron, mode). A neuron with
# records but no explanation has one row, mode -1, status "unexplained".
ATLAS_NEURONS = pa.schema(
    _fields(
        EXPLANATIONS,
        [
            "layer",
            "neuron",
            "mode",
            "n_modes",
            "mode_share",
            "mode_size",
            "explanation",
            "mode_tokens",
            "exemplar_ids",
            "scorer",
            "calibrated",
            "coverage",
            "baseline_explanation",
            *SCORE_COLUMNS,
            "status",
            "error",
        ],
    )
    + [pa.field("density", pa.float64())]  # share of tokens above a quarter of the neuron's max
    + _fields(STATS, ["mean", "std", "min", "max", "quantile_levels", "quantiles", "n_tokens"])
    + [
        pa.field("top_tokens", pa.list_(pa.string())),  # most frequent activating tokens first
        pa.field("top_token_counts", pa.list_(pa.int32())),
        pa.field("top_token_acts", pa.list_(pa.float32())),  # each token's highest activation
        pa.field("link", pa.string()),  # the neuron's page, relative to the atlas folder
    ]
)

# The token index (``atlas/tokens.parquet``): which neurons fire on which token.
ATLAS_TOKENS = pa.schema(
    [
        ("token", pa.string()),
        ("layer", pa.int32()),
        ("neuron", pa.int32()),
        ("count", pa.int32()),  # top-exemplar tokens of this text at or above the firing threshold
        ("max_act", pa.float32()),
    ]
)
