"""One neuron, end to end: split, deconstruct, cluster, explain, refine, score; and the baseline.

Scores are always on the held-out exemplars, which no agent has seen. Refinements are accepted
on a separate validation split (spare top + random exemplars), so the held-out score stays an
honest estimate; when there are no spare exemplars, the mode's own explain exemplars decide.

Every decision (keep a refinement, per-mode and combined scores, coverage) is taken by the
configured *decision scorer* (``cfg.scorer``, see ``neuronscope.scoring``); the paper's
simulation score is computed beside it on the same held-out exemplars (unless
``cfg.simulation_scores`` is off: the sim_* columns are then NaN).

Output columns (EXPLANATIONS, one row per mode):
- ``scorer``: the decision scorer; ``calibrated``: whether it passed the run's self-check (null
  when none ran).
- ``mode_score``: held-out score of that mode's explanation alone; ``score``: of the neuron's
  combined modes (the best mode per held-out item); ``baseline_score``: of the single-pass one.
- ``control_explanation`` / ``control_score``: an unrelated explanation, scored the same way on
  the same held-out exemplars: what chance looks like for this neuron.
- ``sim_*``: the same four scores under the simulation scorer (pooled Pearson r).
- ``coverage``: share of the explain top exemplars that their own mode's explanation accounts for
  (``Scorer.covered``); one value per neuron, on every row.
- ``rounds``: refinement rounds run for the mode (each decision is in the transcript).
- ``malformed_answers``: agent answers of the neuron rejected by a parser or as a copy of the
  prompt's text or example answer (each in the transcript with its reason).
- ``llm_calls``: engine requests for the whole neuron (cache hits excluded); ``llm_tokens_*``:
  the NeuronScope method's tokens; ``baseline_llm_tokens_*``: the single-pass baseline's.
- method "single-pass": one row, mode -1, n_modes 0, the NeuronScope columns null/NaN;
  method "neuronscope": the baseline columns null/NaN; method "triage": single-pass first, then
  the full workflow only where it is likely to pay (``_triage``); ``method`` says which it got.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from .. import prompts
from ..config import ExplainConfig
from ..errors import AgentOutputError
from ..exemplars import Exemplar, Split, activating, load, mode_tokens, split
from ..llm.agents import Agent
from ..llm.base import Ledger, Metered
from ..models.embedder import get_embedder
from ..results.transcript import (
    AgentAnswer,
    AgentFailure,
    ClusterEntry,
    Entry,
    LedgerEntry,
    NeuronError,
    RefineDecision,
    RefineFailure,
    ScoreEntry,
    SplitEntry,
    TriageEntry,
)
from ..schema import explanation_row
from ..scoring import Judge, Scorer, ScoreResult, make_scorer
from ..scoring.controls import control_explanation
from . import agents, cluster

# The scorers' ledger entries: the NeuronScope method's and the baseline's.
# Control scoring ("control") belongs to neither method: it counts in llm_calls only.
NEURONSCOPE_AGENTS = (Agent.DECONSTRUCT, Agent.EXPLAIN, Agent.REFINE, Agent.SIMULATE, Agent.DETECTION, Agent.FUZZING)
BASELINE_AGENTS = (Agent.SINGLE_PASS, Agent.SIMULATE_BASELINE, Agent.DETECTION_BASELINE, Agent.FUZZING_BASELINE)
# An LLM scorer's agents: the method's and the baseline's (the embedding scorer calls no LLM).
SCORER_AGENTS = {
    "simulation": (Agent.SIMULATE, Agent.SIMULATE_BASELINE),
    "detection": (Agent.DETECTION, Agent.DETECTION_BASELINE),
    "fuzzing": (Agent.FUZZING, Agent.FUZZING_BASELINE),
}
MAX_MODE_COMPONENTS = 3  # components shown per mode, most frequent first (more get parroted as a list)


@dataclass
class NeuronResult:
    rows: list[dict]
    transcript: list[Entry] = field(default_factory=list)
    ledger: Ledger = field(default_factory=Ledger)


@dataclass
class Mode:
    exemplars: list[Exemplar]
    components: list[str]
    explanation: str = ""
    rounds: int = 0
    score: float = math.nan
    sim_score: float = math.nan


def _score_entry(
    purpose: str, scorer: Scorer, explanation: str, exemplars: list[Exemplar], r: ScoreResult
) -> ScoreEntry:
    return ScoreEntry(
        scorer.name,
        purpose,
        explanation,
        _ids(exemplars),
        np.round(r.values, 3).tolist(),
        r.score,
        dict(r.extra),
    )


def _ids(exemplars: list[Exemplar]) -> list[int]:
    return [e.window_id for e in exemplars]


def _modes(
    llm, sp: Split, cfg: ExplainConfig, embedder, clustering: str, min_silhouette: float, transcript: list[Entry]
) -> list[Mode]:
    comps = agents.deconstruct(agents.AgentSession(llm, cfg.max_parse_retries, transcript), sp.explain, sp.max_act)
    by_comp, choice_c = cluster.modes_from_components(embedder, comps, cfg.max_modes, min_silhouette)
    by_ctx, choice_a = cluster.modes_from_words(
        embedder, [activating(e, sp.max_act) for e in sp.explain], cfg.max_modes
    )
    for name, labels, choice in (("components", by_comp, choice_c), ("activation", by_ctx, choice_a)):
        transcript.append(
            ClusterEntry(
                name,
                name == clustering,
                choice.k,
                choice.silhouettes,
                choice.merges,
                len(set(labels)),
                dict(zip(_ids(sp.explain), labels)),
            )
        )
    labels = by_comp if clustering == "components" else by_ctx
    modes = []
    for m in range(len(set(labels))):
        members = [i for i, lab in enumerate(labels) if lab == m]
        counts = Counter(c.lower() for i in members for c in comps[i])
        modes.append(
            Mode(
                [sp.explain[i] for i in members],
                [c for c, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))][:MAX_MODE_COMPONENTS],
            )
        )
    return modes


def _refine(llm, modes: list[Mode], sp: Split, judge: Judge, cfg: ExplainConfig, transcript: list[Entry]) -> None:
    """Revise each mode's explanation from the judge's misses and false alarms on its explain
    exemplars (with a few spare random ones, where false alarms show); keep a revision only when the judge's validation score rises; stop at no gain or
    refine_rounds. A malformed revision keeps the current explanation (recorded, not fatal)."""
    decide_on = sp.validation
    active = list(range(len(modes)))
    for rnd in range(cfg.refine_rounds):
        own = judge([(modes[i].explanation, modes[i].exemplars + list(sp.feedback)) for i in active])
        cases = {i: r.mistakes() for i, r in zip(active, own)}
        active = [i for i in active if cases[i][0] or cases[i][1]]  # nothing to fix: done
        if not active:
            break
        try:
            revised = agents.refine(
                agents.AgentSession(llm, cfg.max_parse_retries, transcript),
                [modes[i].explanation for i in active],
                [agents.tokens_line(modes[i].exemplars, sp.max_act) for i in active],
                [cases[i][0] for i in active],
                [cases[i][1] for i in active],
                sp.max_act,
            )
        except AgentOutputError as e:
            transcript.append(RefineFailure(rnd, False, str(e)))
            break
        jobs = []
        for i, new in zip(active, revised):
            ex = decide_on or modes[i].exemplars
            jobs += [(modes[i].explanation, ex), (new, ex)]
        results = judge(jobs)
        still = []
        for j, (i, new) in enumerate(zip(active, revised)):
            ex = decide_on or modes[i].exemplars
            old_s, new_s = results[2 * j].score, results[2 * j + 1].score
            modes[i].rounds += 1
            kept = bool(new_s > old_s)  # NaN (unscorable) never wins
            transcript.append(
                RefineDecision(
                    judge.scorer.name,
                    i,
                    rnd,
                    modes[i].explanation,
                    new,
                    old_s,
                    new_s,
                    kept,
                    "validation" if decide_on else "explain",
                    _ids(ex),
                )
            )
            if kept:
                modes[i].explanation = new
                still.append(i)
        active = still


def _heldout_scores(
    judge: Judge, texts: list[str], sp: Split, transcript: list[Entry], purpose: str
) -> list[ScoreResult]:
    results = judge([(t, sp.heldout) for t in texts])
    for t, r in zip(texts, results):
        transcript.append(_score_entry(purpose, judge.scorer, t, sp.heldout, r))
    return results


def _combined(judge: Judge, modes: list[Mode], results: list[ScoreResult], sp: Split, transcript: list[Entry]) -> float:
    """The neuron's held-out score with every mode at once: the best mode per held-out item."""
    sc = judge.scorer
    r = sc.result(sc.combine([x.values for x in results]), results[0].items)
    transcript.append(_score_entry("combined heldout", sc, " | ".join(m.explanation for m in modes), sp.heldout, r))
    return r.score


def _coverage(judge: Judge, modes: list[Mode]) -> float:
    own = judge([(m.explanation, m.exemplars) for m in modes])
    flags = [c for r in own for c in judge.scorer.covered(r)]
    return sum(flags) / max(1, len(flags))


def _judges(metered, cfg: ExplainConfig, embedder, max_act: float) -> dict[str, Judge]:
    """The decision scorer and the simulation scorer (``sim*``, absent when ``simulation_scores``
    is off) for the method, the baseline (its LLM calls booked under agents of its own) and the control."""

    def judge(name: str, agent: Agent | None) -> Judge:
        return Judge(
            make_scorer(name, llm=metered, embedder=embedder, agent=agent, hard_negatives=cfg.hard_negatives), max_act
        )

    decide, sim = cfg.scorer, "simulation"
    agent, base_agent = SCORER_AGENTS.get(decide, (None, None))
    out = {
        "decide": judge(decide, agent),
        "decide_base": judge(decide, base_agent),
    }
    out["control"] = judge(decide, None if agent is None else Agent.CONTROL)
    if decide == sim:
        out.update(sim=out["decide"], sim_base=out["decide_base"], sim_control=out["control"])
    elif cfg.simulation_scores:
        out.update(
            sim=judge(sim, Agent.SIMULATE),
            sim_base=judge(sim, Agent.SIMULATE_BASELINE),
            sim_control=judge(sim, Agent.CONTROL),
        )
    return out


def _final_scores(
    modes: list[Mode],
    base_text: str | None,
    control: str,
    sp: Split,
    j: dict,
    transcript: list[Entry],
    base_score: float | None = None,
) -> dict:
    """Every held-out score of the neuron: per mode, combined, baseline and control, under the
    decision scorer and the simulation scorer. ``base_score``: the baseline's decision score when
    triage has already measured it on these held-out exemplars (not paid for twice)."""
    out = {}
    scorers = [("", j["decide"], j["decide_base"], j["control"])]
    if "sim" in j:
        scorers.append(("sim_", j["sim"], j["sim_base"], j["sim_control"]))
    for key, judge, base_judge, ctrl_judge in scorers:
        if modes:
            results = _heldout_scores(judge, [m.explanation for m in modes], sp, transcript, "mode heldout")
            for m, r in zip(modes, results):
                setattr(m, f"{key}score", r.score)
            out[f"{key}score"] = _combined(judge, modes, results, sp, transcript)
        if base_text is not None and key == "" and base_score is not None:
            out["baseline_score"] = base_score
        elif base_text is not None:
            out[f"{key}baseline_score"] = _heldout_scores(base_judge, [base_text], sp, transcript, "baseline heldout")[
                0
            ].score
        out[f"{key}control_score"] = _heldout_scores(ctrl_judge, [control], sp, transcript, "control heldout")[0].score
    return out


def explain_neuron(
    layer: int,
    neuron: int,
    records: pa.Table | pd.DataFrame,
    llm,
    cfg: ExplainConfig,
    embedder=None,
    clustering: str | None = None,
    min_silhouette: float = cluster.MIN_SILHOUETTE,
    cache=None,
    calibrated: bool | None = None,
    full_allowed: bool = True,
) -> NeuronResult:
    """Explain one neuron from its RECORDS rows; any failure becomes one 'failed' row with the reason.

    ``embedder`` is anything with sentence-transformers' ``encode``; default: ``cfg.embedder``,
    loaded once per process. ``clustering`` (default ``cfg.clustering``) is "activation" (modes of
    the activating words) or "components" (the paper's); the other one is always computed too and
    reported in the transcript.
    ``cache`` is an optional response cache (``neuronscope.llm.cache.NeuronCache``);
    ``calibrated`` is the run's scorer self-check verdict, carried into the rows.
    ``full_allowed=False`` (method triage, a run short of budget): single-pass only, even where
    the full workflow would be due (the row's method says so).
    """
    transcript: list[Entry]
    clustering = clustering or cfg.clustering
    if clustering not in ("components", "activation"):
        raise ValueError(f"clustering must be 'components' or 'activation', got {clustering!r}")
    ledger, transcript = Ledger(), []
    metered = Metered(llm, ledger, cache)
    run_ns = cfg.method in ("neuronscope", "both", "triage")
    run_base = cfg.method in ("single-pass", "both", "triage")
    used = (
        ([Agent.DECONSTRUCT, Agent.EXPLAIN, Agent.REFINE] if run_ns else [])
        + ([Agent.SINGLE_PASS] if run_base else [])
        + ([Agent.SIMULATE] if cfg.simulation_scores or cfg.scorer == "simulation" else [])
        + ([Agent(cfg.scorer)] if cfg.scorer in ("detection", "fuzzing") else [])
    )
    common = {
        "template_version": prompts.template_versions(dict.fromkeys(used)),
        "method": cfg.method,
        "scorer": cfg.scorer,
        "calibrated": calibrated,
    }
    try:
        sp = split(*load(records), cfg.n_explain, cfg.n_heldout_top, cfg.n_heldout_random)
        transcript.append(SplitEntry(sp.max_act, _ids(sp.explain), _ids(sp.heldout), _ids(sp.validation)))
        embedder = embedder or get_embedder(cfg.embedder)
        judges = _judges(metered, cfg, embedder, sp.max_act)
        control = control_explanation(
            layer, neuron, embedder=embedder, avoid=", ".join(activating(e, sp.max_act) for e in sp.explain)
        )
        # a baseline may go missing only where the full workflow can still explain the neuron
        base_text = (
            _baseline(metered, sp, cfg, transcript, required=not (run_ns and full_allowed)) if run_base else None
        )
        triage_score = None
        if cfg.method == "triage":
            verdict = _triage(judges["decide_base"], base_text, sp, embedder, cfg, full_allowed, transcript)
            run_ns, triage_score = verdict.full, (verdict.baseline_score if base_text is not None else None)
            common["method"] = triage_method(verdict)
        modes: list[Mode] = []
        coverage = math.nan
        if run_ns:
            full = functools.partial(_full, metered, sp, cfg, embedder, clustering, min_silhouette, judges, transcript)
            if cfg.method == "triage" and base_text is not None:
                modes, coverage, common["method"] = _full_or_single_pass(full, transcript)
            else:
                modes, coverage = full()
        scores = _final_scores(modes, base_text, control, sp, judges, transcript, triage_score)
    except Exception as e:  # the neuron's failure is recorded, never raised past the workflow
        transcript.append(NeuronError(f"{type(e).__name__}: {e}"))
        rows = [
            explanation_row(
                layer,
                neuron,
                status="failed",
                error=f"{type(e).__name__}: {e}",
                malformed_answers=_malformed(transcript),
                **common,
                **_usage(ledger),
            )
        ]
        return NeuronResult(rows, transcript + [LedgerEntry(ledger.as_dict())], ledger)
    shared = {
        "n_modes": len(modes),
        "coverage": coverage,
        "baseline_explanation": base_text,
        "malformed_answers": _malformed(transcript),
        "control_explanation": control,
        **scores,
        **common,
        **_usage(ledger),
    }
    if modes:
        total = sum(len(m.exemplars) for m in modes)
        rows = [
            explanation_row(
                layer,
                neuron,
                mode=i,
                explanation=m.explanation,
                mode_size=len(m.exemplars),
                exemplar_ids=_ids(m.exemplars),
                mode_share=len(m.exemplars) / total,
                mode_tokens=mode_tokens(m.exemplars, sp.max_act),
                mode_score=m.score,
                sim_mode_score=m.sim_score,
                rounds=m.rounds,
                **shared,
            )
            for i, m in enumerate(modes)
        ]
    else:  # single-pass only: one row carrying the baseline, no NeuronScope modes
        rows = [explanation_row(layer, neuron, **shared)]
    transcript.append(LedgerEntry(ledger.as_dict()))
    return NeuronResult(rows, transcript, ledger)


def _full(metered, sp, cfg, embedder, clustering, min_silhouette, judges, transcript) -> tuple[list[Mode], float]:
    """The full workflow's explained, refined modes and their coverage."""
    modes = _modes(metered, sp, cfg, embedder, clustering, min_silhouette, transcript)
    texts = agents.explain_modes(
        agents.AgentSession(metered, cfg.max_parse_retries, transcript),
        [m.exemplars for m in modes],
        [m.components for m in modes],
        sp.max_act,
    )
    for m, t in zip(modes, texts):
        m.explanation = t
    _refine(metered, modes, sp, judges["decide"], cfg, transcript)
    return modes, _coverage(judges["decide"], modes)


def _full_or_single_pass(full, transcript: list[Entry]) -> tuple[list[Mode], float, str]:
    """Method triage: the full workflow, or, where its agents' answers stay malformed, the
    single-pass explanation already made (a neuron is not lost for a weaker explainer's loops);
    the reason goes into the transcript and the method says so."""
    try:
        return (*full(), TRIAGE_FULL)
    except AgentOutputError as e:
        transcript.append(
            AgentFailure(Agent(e.agent or Agent.EXPLAIN), f"{e}; full workflow given up, single-pass kept")
        )
        return [], math.nan, TRIAGE_FULL_FAILED


def _triage(
    judge: Judge,
    base_text: str | None,
    sp: Split,
    embedder,
    cfg: ExplainConfig,
    allowed: bool,
    transcript: list[Entry],
) -> TriageEntry:
    """Whether the full workflow is likely to pay for this neuron: its single-pass explanation
    scores below ``cfg.triage_below`` on held-out exemplars (the score NaN without a baseline), or
    its activating words fall into several modes (one explanation cannot cover a polysemantic
    neuron); it runs where ``allowed``. The verdict goes into the transcript, after its scoring."""
    score = math.nan
    if base_text is not None:
        score = _heldout_scores(judge, [base_text], sp, transcript, "triage heldout")[0].score
    words = [activating(e, sp.max_act) for e in sp.explain]
    k = len(set(cluster.modes_from_words(embedder, words, cfg.max_modes)[0]))
    due = not score >= cfg.triage_below or k > 1  # a missing or NaN score counts as weak
    verdict = TriageEntry(score, k, due and allowed, withheld=due and not allowed)
    transcript.append(verdict)
    return verdict


TRIAGE_FULL = "triage/neuronscope"  # the method of a triaged neuron that got the full workflow
TRIAGE_FULL_FAILED = "triage/single-pass (full failed)"  # ... whose full workflow's answers stayed malformed
FULL_ATTEMPTS = (TRIAGE_FULL, TRIAGE_FULL_FAILED)  # the triage methods that spent a full workflow's tokens


def triage_method(t: TriageEntry) -> str:
    """The ``method`` of a triaged neuron's rows: what it got, and why where the budget decided."""
    if t.withheld:
        return "triage/single-pass (budget)"
    return TRIAGE_FULL if t.full else "triage/single-pass"


def _baseline(metered, sp, cfg, transcript: list[Entry], required: bool) -> str | None:
    """The single-pass explanation; when NeuronScope's own explanations are made too, a baseline
    that stays malformed is recorded as missing instead of failing the neuron."""
    try:
        return agents.single_pass(
            agents.AgentSession(metered, cfg.max_parse_retries, transcript), sp.explain, sp.max_act
        )
    except AgentOutputError as e:
        if required:
            raise
        transcript.append(AgentFailure(Agent.SINGLE_PASS, f"{e}; baseline missing"))
        return None


def _malformed(transcript: list[Entry]) -> int:
    return sum(1 for t in transcript if isinstance(t, AgentAnswer) and t.error is not None)


def _usage(ledger: Ledger) -> dict:
    ns, base = ledger.total(NEURONSCOPE_AGENTS), ledger.total(BASELINE_AGENTS)
    return {
        "llm_calls": ledger.total().calls,
        "llm_tokens_in": ns.tokens_in,
        "llm_tokens_out": ns.tokens_out,
        "baseline_llm_tokens_in": base.tokens_in,
        "baseline_llm_tokens_out": base.tokens_out,
    }
