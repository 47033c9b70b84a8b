"""The data contracts between stages: every Parquet table NeuronScope reads or writes.

One module, so that the recorder, importers, explainer, atlas and tests agree on one shape.
"""

from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.dataset as ds

SCHEMA_VERSION = "6"


def _schema(spec: str) -> pa.Schema:
    """A schema from ``name: type`` lines (``# why`` comments allowed); a type is an Arrow alias
    (int32, float64, string, bool, ...) or ``list<alias>``."""
    fields = []
    for line in spec.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, kind = (x.strip() for x in line.split(":", 1))
            inner = kind.removeprefix("list<").removesuffix(">")
            t = pa.type_for_alias(inner)
            fields.append(pa.field(name, pa.list_(t) if inner != kind else t))
    return pa.schema(fields)


# One row per (layer, neuron, exemplar); ``rank`` orders the exemplars of one kind. Kinds:
# - "top": the top-k tokens, rank 0 the highest activation; max_pos / max_act are that token.
# - "random": windows of uniformly sampled tokens, in sample order; max_pos / max_act: the window's max.
# - "quantile_j" (j = 0 .. quantile_bins-1, lowest first): the windows of the neuron's octave
#   stratum j, those whose max lies in [2**(o-B+1+j), 2**(o-B+2+j)) for B bins and the neuron's
#   max in [2**o, 2**(o+1)), a hash-sampled quantile_k of them in sample order; max_pos / max_act:
#   the window's max. (Imported OpenAI records: their quantile bins of the activation distribution.)
# - "bottom" (the negative side, when recorded): the bottom-k tokens, rank 0 the most negative;
#   max_pos / max_act are that token.
# - "negative_quantile_j": the strata of minus the window's min, as above; max_pos / max_act:
#   the window's min.
# One window may appear under several kinds.
RECORDS = _schema(
    """
    layer: int32
    neuron: int32
    kind: string
    rank: int32
    window_id: int64
    tokens: list<string>
    token_ids: list<int32>
    activations: list<float32>
    max_pos: int32
    max_act: float32
    """
)
# Rows per row group of a records part (rows sorted by neuron): about 14 neurons at 288 exemplars
# each, so a workflow's filtered read of one neuron decodes one or two groups, not the part's 256
# neurons (0.107 -> 0.009 CPU s per neuron measured on a 256-neuron part).
RECORDS_ROW_GROUP_ROWS = 4096

# One row per (layer, neuron): summary of the neuron over every recorded token.
STATS = _schema(
    """
    layer: int32
    neuron: int32
    mean: float64
    std: float64
    min: float32
    max: float32
    quantile_levels: list<float32>
    quantiles: list<float32>
    n_tokens: int64
    """
)

# One row per (layer, neuron): the output side of the neuron, what its write direction does to
# the next-token logits read straight through the final norm's scale and the unembedding (the
# logit lens of its down-projection column). Weights are logits per unit of activation; tokens
# are each vocabulary entry decoded alone.
OUTPUT_TOKENS = _schema(
    """
    layer: int32
    neuron: int32
    promoted_tokens: list<string>     # the tokens it raises most, strongest first
    promoted_ids: list<int32>
    promoted_weights: list<float32>
    suppressed_tokens: list<string>   # the tokens it lowers most, most negative weight first
    suppressed_ids: list<int32>
    suppressed_weights: list<float32>
    """
)

# One row per (layer, neuron, polarity, mode) of the NeuronScope method: polarity 1 explains what
# the neuron fires on, -1 (where its negative side is explained) what drives it most negative. A
# side whose workflow failed has a single row with status "failed", mode -1 and the reason in ``error``. Every score is on
# the neuron's held-out exemplars; its ``_ci`` column is its 95 % bootstrap interval [lo, hi]
# over the held-out windows.
EXPLANATIONS = _schema(
    """
    layer: int32
    neuron: int32
    polarity: int8                # 1: the positive side; -1: the negative side (the negated neuron's view)
    mode: int32
    n_modes: int32
    explanation: string
    source: string                # where the mode's explanation came from: llm, refined, words, llm+words, refined+words
    mode_size: int32
    exemplar_ids: list<int64>
    mode_share: float64           # the mode's share of the neuron's explain top exemplars
    mode_tokens: list<string>     # its firing words, most frequent first: "king (5)"
    scorer: string                # the decision scorer of the scores below
    calibrated: bool              # it passed the run's self-check; null when none ran
    mode_score: float64
    mode_score_ci: list<float64>
    mode_lexical_explanation: string  # the mode's words baseline: its most frequent firing words
    mode_lexical_score: float64
    mode_lexical_score_ci: list<float64>
    score: float64                # the neuron's modes together (the best mode per held-out item)
    score_ci: list<float64>
    coverage: float64
    lexical_explanation: string   # the neuron's words baseline: the explain exemplars' most frequent firing words
    lexical_score: float64
    lexical_score_ci: list<float64>
    baseline_explanation: string  # the single-pass explanation (Bills et al.)
    baseline_score: float64
    baseline_score_ci: list<float64>
    control_explanation: string   # an unrelated explanation: the scores' control
    control_score: float64
    control_score_ci: list<float64>
    sim_mode_score: float64       # the same four under the simulation scorer (Pearson r)
    sim_score: float64
    sim_baseline_score: float64
    sim_control_score: float64
    rounds: int32
    malformed_answers: int32      # agent answers rejected (bad format, copies), retried or not
    llm_calls: int64
    llm_tokens_in: int64
    llm_tokens_out: int64
    baseline_llm_tokens_in: int64
    baseline_llm_tokens_out: int64
    template_version: string
    method: string
    status: string
    error: string
    timings: string               # where the neuron's task time went: its "timing" transcript entry as JSON, null where not measured
    """
)

# One row per (layer, neuron, polarity, mode) of an explained neuron: the causal check of the
# mode. The neuron is ablated (its activation set to ``ablation_value``: its STATS mean, or zero)
# from each window's activating position on, and the model's next-token predictions at that
# position and the ``horizon`` - 1 after it are compared with the clean forward. Per window: the
# mean KL(clean || ablated) of the next-token distribution (nats) and the mean drop of the log
# probability of the window's actual next tokens; per row their mean over the windows, each with
# its 95 % bootstrap interval [lo, hi] over the windows. The mode's windows are its explain
# exemplars (EXPLANATIONS ``exemplar_ids``), at the token their top record names.
CAUSAL = _schema(
    """
    layer: int32
    neuron: int32
    polarity: int32                 # the side the mode explains: 1 (top exemplars), -1 (bottom)
    mode: int32
    ablation: string                # mean or zero
    ablation_value: float64
    n_windows: int32                # the mode's windows measured
    causal_effect: float64          # mean KL of the next-token distribution, the neuron ablated on them
    causal_effect_ci: list<float64>
    causal_control: float64         # the same for control_neuron ablated on the same windows
    causal_control_ci: list<float64>
    control_neuron: int32           # a random other neuron of the layer
    causal_random: float64          # the same for the neuron ablated on its random windows
    causal_random_ci: list<float64>
    n_random: int32
    causal_logprob: float64         # mean drop of log p of the actual next tokens (> 0: the neuron helped predict them)
    causal_logprob_ci: list<float64>
    causal_logprob_control: float64
    causal_logprob_random: float64
    """
)

# A neuron's LLM tokens (one row per neuron and polarity carries them): the NeuronScope method's and the
# single-pass baseline's; a budget and every token count of a run sum all four.
TOKEN_COLUMNS = ("llm_tokens_in", "llm_tokens_out", "baseline_llm_tokens_in", "baseline_llm_tokens_out")


# What an EXPLANATIONS row holds in a column it does not set, where not its type's empty value
# (``_empty``): a row without a mode (single-pass, failed) has mode -1; a row is the positive
# side's unless it says otherwise (so are those of runs written before ``polarity`` existed).
EXPLANATION_DEFAULTS = {"polarity": 1, "mode": -1, "scorer": "", "template_version": "", "method": "", "status": "ok"}


def _empty(t: pa.DataType):
    """A column's value in a row that does not set it: [] for lists, NaN, 0, else null."""
    if pa.types.is_list(t):
        return []
    if pa.types.is_floating(t):
        return math.nan
    return 0 if pa.types.is_integer(t) else None


def explanation_row(layer: int, neuron: int, **columns) -> dict:
    """One EXPLANATIONS row of the neuron, in schema order: ``columns``, every other column at its
    default (``EXPLANATION_DEFAULTS``, else empty)."""
    row = {f.name: EXPLANATION_DEFAULTS.get(f.name, _empty(f.type)) for f in EXPLANATIONS}
    row.update(layer=layer, neuron=neuron, **columns)
    return row


def backfill(df):
    """An EXPLANATIONS frame (pandas) read from a run written before some columns existed (absent,
    or read as nulls): those with a default (``EXPLANATION_DEFAULTS``) take it."""
    for name, value in EXPLANATION_DEFAULTS.items():
        if name not in df.columns:
            df[name] = value
        elif df[name].isna().any():
            df[name] = df[name].fillna(value).astype(type(value))
    return df


def neuron_filter(layer: int, neuron: int) -> ds.Expression:
    """The rows of one neuron, in any of these tables: a filter for ``Store.read_parquet_where``."""
    return (ds.field("layer") == layer) & (ds.field("neuron") == neuron)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly ``schema``'s columns, order and types; names a missing column."""
    missing = [f.name for f in schema if f.name not in table.column_names]
    if missing:
        raise ValueError(f"table lacks column(s) {missing} required by the schema")
    return table.select(schema.names).cast(schema)


def _fields(source: pa.Schema, names) -> list[pa.Field]:
    return [source.field(n) for n in names]


# The causal check's figures the atlas and ``show`` carry: each beside its control.
CAUSAL_SHOWN = [
    "ablation",
    "n_windows",
    "causal_effect",
    "causal_effect_ci",
    "causal_control",
    "causal_control_ci",
    "control_neuron",
    "causal_random",
    "causal_random_ci",
    "causal_logprob",
    "causal_logprob_control",
]

# Every explanation score, its interval and its control, carried into the atlas unchanged.
SCORE_COLUMNS = [n for n in EXPLANATIONS.names if n.endswith(("score", "score_ci")) or "control" in n or "lexical" in n]

# The atlas table (``atlas/neurons.parquet``): one row per (layer, neuron, polarity, mode). A neuron with
# records but no explanation has one row, mode -1, status "unexplained".
ATLAS_NEURONS = pa.schema(
    _fields(
        EXPLANATIONS,
        [
            "layer",
            "neuron",
            "polarity",
            "mode",
            "n_modes",
            "mode_share",
            "mode_size",
            "explanation",
            "source",
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
    + list(_schema("density: float64  # share of tokens above a quarter of the neuron's max"))
    + _fields(STATS, ["mean", "std", "min", "max", "quantile_levels", "quantiles", "n_tokens"])
    + list(
        _schema(
            """
            top_tokens: list<string>        # most frequent activating tokens first
            top_token_counts: list<int32>
            top_token_acts: list<float32>   # each token's highest activation
            link: string                    # the neuron's page, relative to the atlas folder
            """
        )
    )
    # the output side (OUTPUT_TOKENS), empty where the run has none
    + _fields(OUTPUT_TOKENS, ["promoted_tokens", "promoted_weights", "suppressed_tokens", "suppressed_weights"])
    # the mode's causal check (CAUSAL), null where the run has none
    + _fields(CAUSAL, CAUSAL_SHOWN)
)

# The token index (``atlas/tokens.parquet``): which neurons fire on which token.
ATLAS_TOKENS = _schema(
    """
    token: string
    layer: int32
    neuron: int32
    count: int32        # top-exemplar tokens of this text at or above the firing threshold
    max_act: float32
    """
)
