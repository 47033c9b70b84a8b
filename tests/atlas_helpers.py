"""A small run for the atlas tests, made without any model or LLM (no tests here).

Layer 3: neuron 0 fires on month names (one mode), neuron 1 on animals and on colours (two
modes), neuron 2 on hostile markup tokens (explained, with hostile text in its explanation),
neuron 3 has records only. Layer 5 neuron 7: records and a failed explanation. Neurons 0 and 1
of layer 3 have an output side (OUTPUT_TOKENS): both promote " fetch", neuron 1 more. Variants: a
neuron explained by the single pass only (``single_pass_row``), objects written before the judge's
columns existed (``as_old_schema``), neuron 0 with a negative side on animals (``with_negative_side``)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
from explain_helpers import ANIMAL_SENTENCES, ANIMALS, MONTH_SENTENCES, MONTHS, PLAIN_SENTENCES, records, with_negative

from neuronscope import layout
from neuronscope.exemplars import flipped
from neuronscope.layout import explanation_key, output_tokens_key, records_key, stats_key
from neuronscope.results import write_result
from neuronscope.results.transcript import entries_from_json
from neuronscope.schema import EXPLANATIONS, OUTPUT_TOKENS, RECORDS, STATS, conform, explanation_row

SCRIPT_TOKEN = "<script>alert(1)</script>"
IMG_TOKEN = '"><img src=x onerror=alert(1)>'
HOSTILE_EXPLANATION = 'markup like <b>bold</b> "><img src=x onerror=alert(2)> and </script><script>alert(3)</script>'
COLOURS = {"red", "green", "blue", "yellow"}
COLOUR_SENTENCES = [
    "She painted the old door red and the window frames green.",
    "A yellow kite rose above the blue water of the bay.",
    "His coat was green and his hat was red.",
    "The sky turned yellow and then a deep blue at dusk.",
]
MONTHS_TEXT = "names of calendar months such as January, March and October"
EXPLAINED = {
    (3, 0): [MONTHS_TEXT],
    (3, 1): ["animals such as dogs, horses and cats", "colour words like red and green"],
    (3, 2): [HOSTILE_EXPLANATION],
}
QUANTILE_LEVELS = [0.5, 0.9, 0.99]
WORDS_BASELINE = "Rosalind, Touchstone"  # every neuron's words baseline; its modes': this and their number
SOURCES = ["llm", "refined+words"]  # where each mode's explanation came from
SINGLE_PASS_TEXT = "weather words such as rain, snow and wind"
# The explanation columns of the reader judge: a run written before it lacks them.
JUDGE_COLUMNS = [c for c in EXPLANATIONS.names if c == "source" or c.endswith("_ci") or "lexical" in c]


def _hostile_records(layer: int, neuron: int) -> pd.DataFrame:
    """Windows with markup tokens; the script token is the neuron's strongest, a word is negative."""
    windows = [
        [" a", " tag", " " + SCRIPT_TOKEN, " and", " " + IMG_TOKEN, " end"],
        [" plain", " " + IMG_TOKEN, " words", " here"],
        [" the", " quiet", " line", " ."],
    ]
    acts = [[0.1, -0.8, 4.0, 0.2, 3.0, 0.0], [0.0, 2.5, 0.1, 0.0], [0.0, 0.1, 0.0, 0.0]]
    rows = []
    for wid, (toks, a) in enumerate(zip(windows, acts)):
        kind = "top" if wid < 2 else "random"
        rows.append(
            {
                "layer": layer,
                "neuron": neuron,
                "kind": kind,
                "rank": wid if kind == "top" else 0,
                "window_id": 500 + wid,
                "tokens": toks,
                "token_ids": list(range(len(toks))),
                "activations": a,
                "max_pos": int(np.argmax(a)),
                "max_act": float(max(a)),
            }
        )
    return pd.DataFrame(rows)


def _with_quantile_and_negatives(df: pd.DataFrame) -> pd.DataFrame:
    """Some quiet tokens made negative; the first random window also serves as a quantile sample."""
    df = df.copy()
    df["activations"] = [
        [-0.4 if t.strip() == "the" else a for t, a in zip(toks, acts)]
        for toks, acts in zip(df["tokens"], df["activations"])
    ]
    quantile = df[df["kind"] == "random"].groupby(["layer", "neuron"]).head(1).assign(kind="quantile_1", rank=0)
    return pd.concat([df, quantile], ignore_index=True)


def run_records() -> pd.DataFrame:
    parts = [
        records(MONTH_SENTENCES[:10], MONTHS, layer=3, neuron=0, randoms=PLAIN_SENTENCES[:4]),
        records(ANIMAL_SENTENCES + COLOUR_SENTENCES, ANIMALS | COLOURS, layer=3, neuron=1, randoms=PLAIN_SENTENCES[4:]),
        _hostile_records(3, 2),
        records(MONTH_SENTENCES[10:], MONTHS, layer=3, neuron=3, randoms=PLAIN_SENTENCES[:2]),
        records(ANIMAL_SENTENCES, ANIMALS, layer=5, neuron=7, randoms=PLAIN_SENTENCES[:2]),
    ]
    return _with_quantile_and_negatives(pd.concat(parts, ignore_index=True))


def run_stats(recs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (layer, neuron), g in recs.groupby(["layer", "neuron"]):
        a = np.concatenate(g["activations"].to_numpy()).astype(float)
        rows.append(
            {
                "layer": layer,
                "neuron": neuron,
                "mean": a.mean(),
                "std": a.std(),
                "min": a.min(),
                "max": a.max(),
                "quantile_levels": QUANTILE_LEVELS,
                "quantiles": np.quantile(a, QUANTILE_LEVELS).tolist(),
                "n_tokens": len(a),
            }
        )
    return pd.DataFrame(rows)


def explanation_rows(layer: int, neuron: int, texts: list[str], recs: pd.DataFrame) -> list[dict]:
    """One row per mode; the top exemplars are dealt to the modes by which planted words they hold."""
    top = recs[(recs["layer"] == layer) & (recs["neuron"] == neuron) & (recs["kind"] == "top")]
    groups = (
        [top["window_id"].tolist()]
        if len(texts) == 1
        else [
            [w for w, toks in zip(top["window_id"], top["tokens"]) if any(t.strip(" ,.") in words for t in toks)]
            for words in (ANIMALS, COLOURS)
        ]
    )
    base = dict(
        n_modes=len(texts),
        scorer="reader",
        calibrated=True,
        score=0.9,
        score_ci=[0.85, 0.95],
        coverage=1.0,
        lexical_explanation=WORDS_BASELINE,
        lexical_score=0.64,
        lexical_score_ci=[0.55, 0.72],
        baseline_explanation=f"single pass: {texts[0]}",
        baseline_score=0.8,
        baseline_score_ci=[0.7, 0.88],
        control_explanation="kitchen furniture",
        control_score=0.45,
        control_score_ci=[0.38, 0.52],
        sim_score=0.6,
        sim_baseline_score=0.5,
        sim_control_score=0.1,
        method="neuronscope",
    )
    return [
        explanation_row(
            layer,
            neuron,
            mode=m,
            explanation=t,
            mode_size=len(g),
            exemplar_ids=g,
            mode_share=len(g) / len(top),
            mode_tokens=["word (3)"],
            source=SOURCES[m],
            mode_score=0.9 - 0.1 * m,
            mode_score_ci=[round(0.85 - 0.1 * m, 2), round(0.95 - 0.1 * m, 2)],
            mode_lexical_explanation=f"{WORDS_BASELINE} ({m})",
            mode_lexical_score=0.7,
            mode_lexical_score_ci=[0.6, 0.8],
            sim_mode_score=0.5,
            **base,
        )
        for m, (t, g) in enumerate(zip(texts, groups))
    ]


# (layer, neuron) -> promoted tokens with weights; each suppresses " quiet"
OUTPUTS = {(3, 0): [(" January", 2.5), (" fetch", 1.0)], (3, 1): [(" fetch", 2.0), ("Fetch", 1.5), (" bark", 1.2)]}


def output_rows() -> pa.Table:
    rows = [
        {
            "layer": layer,
            "neuron": neuron,
            "promoted_tokens": [t for t, _ in promoted],
            "promoted_ids": list(range(len(promoted))),
            "promoted_weights": [w for _, w in promoted],
            "suppressed_tokens": [" quiet"],
            "suppressed_ids": [99],
            "suppressed_weights": [-1.0],
        }
        for (layer, neuron), promoted in OUTPUTS.items()
    ]
    return pa.Table.from_pylist(rows, schema=OUTPUT_TOKENS)


def make_run(store) -> pd.DataFrame:
    """Write the run into ``store``; returns its records."""
    recs = run_records()
    for layer, g in recs.groupby("layer"):
        store.write_parquet(records_key(int(layer)), conform(pa.Table.from_pandas(g, preserve_index=False), RECORDS))
    stats = run_stats(recs)
    for layer, g in stats.groupby("layer"):
        store.write_parquet(stats_key(int(layer)), conform(pa.Table.from_pandas(g, preserve_index=False), STATS))
    store.write_parquet(output_tokens_key(3), output_rows())
    for (layer, neuron), texts in EXPLAINED.items():
        write_result(
            store,
            layer,
            neuron,
            explanation_rows(layer, neuron, texts, recs),
            entries_from_json([{"agent": "explain", "prompt": f"<b>{SCRIPT_TOKEN}</b>", "answer": texts[0]}]),
        )
    failed = explanation_row(
        5, 7, status="failed", error="explainer answers were malformed 3 times", method="neuronscope"
    )
    write_result(store, 5, 7, [failed], entries_from_json([{"agent": "explain", "error": failed["error"]}]))
    store.write_json(
        "manifest.json", {"stages": {"record": {"inputs": {"model": "planted", "corpus": "test sentences"}}}}
    )
    return recs


def single_pass_row(layer: int, neuron: int, text: str = SINGLE_PASS_TEXT) -> dict:
    """The one row of a neuron explained by the single pass only (method single-pass, or triage
    without the full workflow): mode -1, no modes, no NeuronScope scores."""
    nan = [math.nan, math.nan]
    return explanation_row(
        layer,
        neuron,
        n_modes=0,
        scorer="reader",
        calibrated=True,
        score_ci=nan,
        lexical_explanation=WORDS_BASELINE,
        lexical_score=0.6,
        lexical_score_ci=[0.5, 0.7],
        baseline_explanation=text,
        baseline_score=0.77,
        baseline_score_ci=[0.69, 0.85],
        control_explanation="kitchen furniture",
        control_score=0.45,
        control_score_ci=[0.38, 0.52],
        method="triage/single-pass",
    )


def as_old_schema(store, neurons=None) -> None:
    """Rewrite the explanation objects of ``neurons`` (default: every one, failed ones included)
    without JUDGE_COLUMNS, as a run written before the reader judge holds them."""
    keys = [explanation_key(*n) for n in neurons] if neurons else store.list(layout.prefix(layout.EXPLANATIONS))
    for key in keys:
        store.write_parquet(key, store.read_parquet(key).drop_columns(JUDGE_COLUMNS))


NEGATIVE_TEXT = "farm animals and pets"  # what drives neuron (3, 0) most negative
NEGATIVE_CONTROL = 0.41  # its negative side's control score


def with_negative_side(store, recs: pd.DataFrame) -> None:
    """Neuron (3, 0) of a ``make_run`` run also goes most negative on animals: its bottom-k in the
    records and its negative side's rows (one mode) beside its positive side's."""
    month = recs[(recs["layer"] == 3) & (recs["neuron"] == 0)]
    signed = with_negative(month, records(ANIMAL_SENTENCES, ANIMALS, layer=3, neuron=0))
    others = store.read_parquet(records_key(3)).to_pandas().query("neuron != 0")
    table = pa.Table.from_pandas(pd.concat([others, signed], ignore_index=True), schema=RECORDS, preserve_index=False)
    store.write_parquet(records_key(3), table)
    negative = [
        {**r, "polarity": -1, "control_score": NEGATIVE_CONTROL}
        for r in explanation_rows(3, 0, [NEGATIVE_TEXT], flipped(signed).assign(neuron=0))
    ]
    write_result(store, 3, 0, explanation_rows(3, 0, [EXPLAINED[(3, 0)][0]], recs) + negative, [])
