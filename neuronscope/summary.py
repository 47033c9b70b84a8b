"""What ``neuronscope explain`` and ``demo`` print when a stage ends: the run's table of scores
beside their controls, and the ``--dry-run`` verdict."""

from __future__ import annotations

from . import manifest
from .explain import Estimate
from .report import number, polysemanticity, polysemanticity_line, score_vs_control
from .results import read_explanations
from .store import Store


def estimate_line(e: Estimate) -> str:
    """The ``--dry-run`` verdict in one line."""
    hours = e.seconds / 3600
    return (
        f"dry run: {e.sample} of {e.pending} pending neurons explained in {e.sample_seconds} s "
        f"({e.sample_failed} failed), {e.tokens_per_neuron:,} LLM tokens per neuron; the whole "
        f"selection: ~{e.tokens:,} tokens, ~{hours:.1f} h at this LLM pool's pace (nothing was kept)"
    )


def _judge_line(store: Store, scorer: str) -> str:
    check = (manifest.load(store)["stages"].get("explain") or {}).get("self_check")
    if not check:
        return f"scorer: {scorer} (no self-check ran: its scores are uncalibrated)"
    verdict = "passed" if check["passed"] else "FAILED: scores uncalibrated"
    return f"scorer: {scorer}, self-check {verdict} (right name over wrong on {check['discrimination']:.0%} of pairs)"


# The neuron-level scores (the same on each of a neuron's rows) and their controls.
NEURON_SCORE_COLUMNS = (
    "baseline_score",
    "score",
    "control_score",
    "sim_baseline_score",
    "sim_score",
    "sim_control_score",
)


def summary_table(store: Store) -> str:
    """One line per neuron: modes, then each method's score beside the control's, under the
    decision scorer and under the simulation scorer."""
    df = read_explanations(store, ["layer", "neuron", "mode", "scorer", "n_modes", "status", *NEURON_SCORE_COLUMNS])
    per = df.sort_values(["layer", "neuron", "mode"]).drop_duplicates(["layer", "neuron"])
    scorer = next((x for x in per["scorer"] if x), "?")
    lines = [
        _judge_line(store, scorer),
        f"{'':20}{scorer + ' (score vs control)':^34}  {'simulation r (score vs control)':^34}",
        "layer  neuron  modes  single-pass    neuronscope       single-pass    neuronscope       status",
    ]
    for r in per.itertuples(index=False):
        modes = int(r.n_modes) if r.status == "ok" else 0
        lines.append(
            f"{r.layer:5d}  {r.neuron:6d}  {modes:5d}  {score_vs_control(r.baseline_score, r.control_score)}  "
            f"{score_vs_control(r.score, r.control_score)}  {score_vs_control(r.sim_baseline_score, r.sim_control_score)}  "
            f"{score_vs_control(r.sim_score, r.sim_control_score)}  {r.status}"
        )
    ok = per[per["status"] == "ok"]
    if len(ok):
        m = ok[list(NEURON_SCORE_COLUMNS)].mean()
        lines.append(
            f"mean over {len(ok)} neurons: {scorer} single-pass {number(m.baseline_score)}, neuronscope "
            f"{number(m.score)}, control {number(m.control_score)}; simulation single-pass "
            f"{number(m.sim_baseline_score)}, neuronscope {number(m.sim_score)}, control {number(m.sim_control_score)}"
        )
        lines.append(polysemanticity_line(polysemanticity(df)))
    return "\n".join(lines)
