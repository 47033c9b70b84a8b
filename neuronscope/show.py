"""`neuronscope show`: one neuron's explanations, scores and top exemplars in the terminal."""

from __future__ import annotations

import json

from . import layout
from .errors import NeuronScopeError
from .report import detail_vs_control
from .results import neuron_rows, read_transcript
from .store import Store


def _exemplar_line(tokens: list[str], acts: list[float], max_pos: int, width: int = 12) -> str:
    lo, hi = max(0, max_pos - width), min(len(tokens), max_pos + 4)
    text = "".join(f"[[{t}]]" if i == max_pos else t for i, t in enumerate(tokens[lo:hi], start=lo))
    return text.replace("\n", "⏎")


def _explanation_lines(exp) -> list[str]:
    """Scores under the run's judge, each beside its control, then the simulation's."""
    r = exp.iloc[0]
    judge = r["scorer"] + (
        ""
        if r["calibrated"] is None
        else ", self-check passed"
        if r["calibrated"]
        else ", self-check FAILED: uncalibrated"
    )
    out = [
        f"  scorer: {judge}; control explanation: {r['control_explanation']}",
        f"  baseline    {detail_vs_control(r['baseline_score'], r['control_score'])} (simulation r "
        f"{detail_vs_control(r['sim_baseline_score'], r['sim_control_score'])}): {r['baseline_explanation']}",
        f"  neuronscope {detail_vs_control(r['score'], r['control_score'])} (simulation r {detail_vs_control(r['sim_score'], r['sim_control_score'])}), "
        f"{int(r['n_modes'])} mode(s), coverage {r['coverage']:.2f}:",
    ]
    for _, m in exp.iterrows():
        if m["mode"] >= 0:
            out.append(
                f"    mode {int(m['mode'])} ({m['mode_score']:.3f}, simulation r {m['sim_mode_score']:.3f}, "
                f"{int(m['mode_size'])} exemplars, {m['mode_share']:.0%} of the top): {m['explanation']}"
            )
            out.append(f"      fires on: {', '.join(m['mode_tokens'])}")
            out.append(f"      exemplars: {', '.join(str(w) for w in m['exemplar_ids'])}")
    return out


def _transcript_lines(store: Store, layer: int, neuron: int) -> list[str]:
    entries = read_transcript(store, layer, neuron)
    if entries is None:
        return ["  no transcript in this run"]
    return [f"  transcript ({len(entries)} entries):"] + [f"    {json.dumps(e, ensure_ascii=False)}" for e in entries]


def show_neuron(run: str, layer: int, neuron: int, n_exemplars: int = 5, transcript: bool = False) -> str:
    store = Store.open(run)
    rec = neuron_rows(store, layout.prefix(layout.RECORDS), layer, neuron)
    exp = neuron_rows(store, layout.prefix(layout.EXPLANATIONS), layer, neuron)
    if (rec is None or rec.empty) and (exp is None or exp.empty):
        raise NeuronScopeError(f"run {store.uri} has no records or explanations for layer {layer} neuron {neuron}")
    out = [f"layer {layer} neuron {neuron}"]
    if exp is not None and not exp.empty:
        exp = exp.sort_values("mode")
        r = exp.iloc[0]
        if r["status"] != "ok":
            out.append(f"  explain failed: {r['error']}")
        else:
            out += _explanation_lines(exp)
    if rec is not None and not rec.empty:
        top = rec[rec["kind"] == "top"].sort_values("rank").head(n_exemplars)
        out.append("  top exemplars (max token in [[ ]]):")
        for _, e in top.iterrows():
            out.append(
                f"    {e['max_act']:8.3f}  {_exemplar_line(list(e['tokens']), list(e['activations']), int(e['max_pos']))}"
            )
    if transcript:
        out += _transcript_lines(store, layer, neuron)
    return "\n".join(out)
