"""What ``neuronscope explain`` and ``demo`` print when a stage ends: the run's table of scores
beside their controls, and the ``--dry-run`` verdict."""

from __future__ import annotations

import numpy as np

from . import layout, manifest
from .causal import verdict
from .explain import Estimate
from .report import half_width, number, polysemanticity, polysemanticity_line, score_vs_control
from .results import read_explanations, read_stage
from .schema import backfill
from .store import Store


def estimate_line(e: Estimate) -> str:
    """The ``--dry-run`` verdict in one line."""
    hours = e.seconds / 3600
    negative = f" with {e.negative} negative sides ({e.pending + e.negative} workflows)" if e.negative else ""
    causal = (
        ""
        if e.causal_seconds is None
        else f"; the causal check: {e.causal_seconds_per_neuron:.1f} s per neuron, ~{e.causal_seconds / 3600:.1f} h more"
    )
    return (
        f"dry run: {e.sample} of {e.pending} pending neurons explained in {e.sample_seconds} s "
        f"({e.sample_failed} failed), {e.tokens_per_neuron:,} LLM tokens per neuron; the whole "
        f"selection{negative}: ~{e.tokens:,} tokens, ~{hours:.1f} h at this LLM pool's pace{causal} (nothing was kept)"
    )


def causal_line(store: Store) -> str:
    """The causal check in one line: how often a neuron's top mode matters more than its control."""
    table = read_stage(store, layout.prefix(layout.CAUSAL))
    if table is None:
        return "causal check: none in this run"
    df = table.to_pandas()
    v = verdict(df)
    if not v["neurons"]:
        return "causal check: no mode had a window to measure"
    return (
        f"causal check ({df['ablation'].iloc[0]} ablation; mean KL of the next-token distribution): top modes "
        f"{score_vs_control(v['top_mode_effect'], v['top_mode_control'], '.1e')} on average; the interval lies above "
        f"the control for {v['top_mode_above_control']:.0%} of {v['neurons']} neurons"
    )


def _judge_line(store: Store, scorer: str) -> str:
    check = (manifest.load(store)["stages"].get("explain") or {}).get("self_check")
    if not check:
        return f"scorer: {scorer} (no self-check ran: its scores are uncalibrated)"
    verdict = "passed" if check["passed"] else "FAILED: scores uncalibrated"
    kinds = check.get("kinds") or {}
    worst = f" against its worst false-explanation kind ({min(kinds, key=lambda k: kinds[k])})" if kinds else ""
    return f"scorer: {scorer}, self-check {verdict} (the right name scores higher on {check['discrimination']:.0%} of pairs{worst})"


# The neuron-level scores (the same on each of a neuron's rows), their intervals and controls.
NEURON_SCORES = ("score", "baseline_score", "lexical_score", "control_score")
SIM_SCORES = ("sim_score", "sim_baseline_score", "sim_control_score")
NEURON_SCORE_COLUMNS = (*NEURON_SCORES, *(f"{c}_ci" for c in NEURON_SCORES), *SIM_SCORES)
HEADER = "layer  neuron  side  modes  neuronscope  single-pass  words        control      status"
SIDE = {1: "+", -1: "-"}  # the positive side, the negative side


def _row(r) -> str:
    modes = int(r.n_modes) if r.status == "ok" else 0
    cells = "  ".join(f"{half_width(getattr(r, c), getattr(r, c + '_ci')):<11}" for c in NEURON_SCORES)
    return f"{r.layer:5d}  {r.neuron:6d}  {SIDE[r.polarity]:>4}  {modes:5d}  {cells}  {r.status}"


def _means(ok, scorer: str, what: str = "neurons") -> list[str]:
    m = ok[list(NEURON_SCORES + SIM_SCORES)].mean()
    widths = [(ci[1] - ci[0]) / 2 for c in NEURON_SCORES for ci in ok[c + "_ci"] if len(ci) == 2 and ci[0] == ci[0]]
    lines = [
        f"mean over {len(ok)} {what}: {scorer} neuronscope {number(m.score)}, single-pass "
        f"{number(m.baseline_score)}, words {number(m.lexical_score)}, control {number(m.control_score)}; "
        f"median 95 % interval half-width {number(float(np.median(widths)) if widths else None)}"
    ]
    if ok["sim_control_score"].notna().any():
        lines.append(
            f"simulation r: neuronscope {score_vs_control(m.sim_score, m.sim_control_score)}, single-pass "
            f"{score_vs_control(m.sim_baseline_score, m.sim_control_score)} (score vs control)"
        )
    return lines


def summary_table(store: Store) -> str:
    """One line per neuron and side (+, and - for its negative side where explained): its modes,
    then each explanation's score (± half its 95 % interval) under the decision scorer:
    NeuronScope's, the single-pass one's, the words baseline's and the control's; means (the
    negative sides' apart), and the simulation scorer's where it ran."""
    columns = ["layer", "neuron", "polarity", "mode", "scorer", "n_modes", "status", *NEURON_SCORE_COLUMNS]
    df = backfill(read_explanations(store, columns))
    per = df.sort_values(["layer", "neuron", "polarity", "mode"], ascending=[True, True, False, True])
    per = per.drop_duplicates(["layer", "neuron", "polarity"])
    scorer = next((x for x in per["scorer"] if x), "?")
    lines = [_judge_line(store, scorer), f"{'':20}{scorer} score ± half its 95 % interval", HEADER]
    lines += [_row(r) for r in per.itertuples(index=False)]
    ok = per[per["status"] == "ok"]
    if len(ok):
        lines += _means(ok[ok["polarity"] > 0], scorer)
        negative = ok[ok["polarity"] < 0]
        lines += _means(negative, scorer, "negative sides") if len(negative) else []
        lines.append(polysemanticity_line(polysemanticity(df[df["polarity"] > 0])))
    if store.list(layout.prefix(layout.CAUSAL)):
        lines.append(causal_line(store))
    return "\n".join(lines)
