"""`neuronscope show`: one neuron's explanations (its negative side's after, where explained),
scores, output tokens and top (and most negative) exemplars in the terminal."""

from __future__ import annotations

import json

from . import layout
from .errors import NeuronScopeError
from .report import causal_vs_control, detail_vs_control, judged
from .results import neuron_rows, read_transcript
from .schema import backfill
from .store import Store

# How each side's modes read: the negative side's explanations say what drives it most negative.
FIRES = {1: "fires on", -1: "fires negative on"}


def _exemplar_line(tokens: list[str], acts: list[float], max_pos: int, width: int = 12) -> str:
    lo, hi = max(0, max_pos - width), min(len(tokens), max_pos + 4)
    text = "".join(f"[[{t}]]" if i == max_pos else t for i, t in enumerate(tokens[lo:hi], start=lo))
    return text.replace("\n", "⏎")


def _judge(r) -> str:
    verdict = {None: "", True: ", self-check passed"}.get(r["calibrated"], ", self-check FAILED: uncalibrated")
    return r["scorer"] + verdict


def _causal_line(causal, m) -> list[str]:
    """The mode's causal check beside its control, where the run has one."""
    if causal is None or causal.empty:
        return []
    row = causal[(causal["mode"] == m["mode"]) & (causal["polarity"] == m.get("polarity", 1))]
    if row.empty:
        return []
    r = row.iloc[0]
    return [f"      causal ({r['ablation']} ablation, {int(r['n_windows'])} windows): {causal_vs_control(r)}"]


def _explanation_lines(exp, causal=None) -> list[str]:
    """Scores under the run's judge, each with its interval, beside the words baseline and the
    control; then the simulation's, where it ran (``exp``: one side's rows)."""
    r = exp.iloc[0]
    fires = FIRES[int(r["polarity"])]
    words, ctrl = (r["lexical_score"], r["lexical_score_ci"]), (r["control_score"], r["control_score_ci"])
    out = [
        f"  scorer: {_judge(r)}",
        f"  words baseline: {r['lexical_explanation']}; control explanation: {r['control_explanation']}",
    ]
    if r["n_modes"] > 0:
        out.append(
            f"  neuronscope {judged(r['score'], r['score_ci'], *ctrl, *words)}, {int(r['n_modes'])} mode(s), "
            f"coverage {r['coverage']:.2f}:"
        )
    for _, m in exp.iterrows():
        if m["mode"] >= 0:
            out.append(
                f"    mode {int(m['mode'])} ({m['source']}; {int(m['mode_size'])} exemplars, {m['mode_share']:.0%} of "
                f"the top): {m['explanation']}"
            )
            mode_words = (m["mode_lexical_score"], m["mode_lexical_score_ci"])
            out.append(f"      {judged(m['mode_score'], m['mode_score_ci'], *ctrl, *mode_words)}")
            out += _causal_line(causal, m)
            out.append(f"      words baseline: {m['mode_lexical_explanation']}")
            out.append(f"      {fires}: {', '.join(m['mode_tokens'])}")
            out.append(f"      exemplars: {', '.join(str(w) for w in m['exemplar_ids'])}")
    if r["baseline_explanation"] is not None:
        out.append(
            f"  single-pass {judged(r['baseline_score'], r['baseline_score_ci'], *ctrl, *words)}: "
            f"{r['baseline_explanation']}"
        )
    if r["sim_control_score"] == r["sim_control_score"]:  # the simulation scorer ran
        out.append(
            f"  simulation r: neuronscope {detail_vs_control(r['sim_score'], r['sim_control_score'])}, "
            f"single-pass {detail_vs_control(r['sim_baseline_score'], r['sim_control_score'])}"
        )
    return out


def _sides_lines(exp, causal=None) -> list[str]:
    """Each side's explanation lines (with its modes' causal checks from ``causal``), the positive
    side first; the negative side's under a heading that says so."""
    out = []
    for polarity, side in exp.sort_values(["polarity", "mode"], ascending=[False, True]).groupby(
        "polarity", sort=False
    ):
        r = side.iloc[0]
        if polarity < 0:
            out.append("  negative side (the explanations say what drives the neuron most negative):")
        out += [f"  explain failed: {r['error']}"] if r["status"] != "ok" else _explanation_lines(side, causal)
    return out


def _exemplar_lines(rec, kind: str, heading: str, n: int) -> list[str]:
    rows = rec[rec["kind"] == kind].sort_values("rank").head(n)
    lines = [f"  {heading}"] if len(rows) else []
    for _, e in rows.iterrows():
        text = _exemplar_line(list(e["tokens"]), list(e["activations"]), int(e["max_pos"]))
        lines.append(f"    {e['max_act']:8.3f}  {text}")
    return lines


def _output_lines(out) -> list[str]:
    """The tokens the neuron's output promotes and suppresses, each quoted, with its weight."""
    r = out.iloc[0]

    def tokens(texts, weights) -> str:
        return ", ".join(f"{json.dumps(t, ensure_ascii=False)} {w:+.2f}" for t, w in zip(texts, weights))

    return [
        "  output (logits per unit of activation):",
        f"    promotes: {tokens(r['promoted_tokens'], r['promoted_weights'])}",
        f"    suppresses: {tokens(r['suppressed_tokens'], r['suppressed_weights'])}",
    ]


def _transcript_lines(store: Store, layer: int, neuron: int) -> list[str]:
    entries = read_transcript(store, layer, neuron)
    if entries is None:
        return ["  no transcript in this run"]
    return [f"  transcript ({len(entries)} entries):"] + [f"    {json.dumps(e, ensure_ascii=False)}" for e in entries]


def show_neuron(run: str, layer: int, neuron: int, n_exemplars: int = 5, transcript: bool = False) -> str:
    store = Store.open(run)
    rec = neuron_rows(store, layout.prefix(layout.RECORDS), layer, neuron)
    exp = neuron_rows(store, layout.prefix(layout.EXPLANATIONS), layer, neuron)
    out_tokens = neuron_rows(store, layout.prefix(layout.OUTPUT_TOKENS), layer, neuron)
    if all(t is None or t.empty for t in (rec, exp, out_tokens)):
        raise NeuronScopeError(f"run {store.uri} has no records or explanations for layer {layer} neuron {neuron}")
    out = [f"layer {layer} neuron {neuron}"]
    if exp is not None and not exp.empty:
        out += _sides_lines(backfill(exp), neuron_rows(store, layout.prefix(layout.CAUSAL), layer, neuron))
    if out_tokens is not None and not out_tokens.empty:
        out += _output_lines(out_tokens)
    if rec is not None and not rec.empty:
        out += _exemplar_lines(rec, "top", "top exemplars (max token in [[ ]]):", n_exemplars)
        out += _exemplar_lines(rec, "bottom", "most negative exemplars (min token in [[ ]]):", n_exemplars)
    if transcript:
        out += _transcript_lines(store, layer, neuron)
    return "\n".join(out)
