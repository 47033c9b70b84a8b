"""One neuron's work in one object: ``NeuronWork`` holds the neuron's split, configuration,
metered LLM and ledger, judges, control explanation and transcript; its methods are the stages
(``baseline``, ``triage``, ``modes``, ``refine``, ``full``, ``final_scores``, ``rows``) and
``run`` takes the neuron through them.

Scores are always on the held-out exemplars, which no agent has seen, each with its 95 %
bootstrap interval over the held-out windows. Each mode's explanation is chosen among candidates
— the LLM's (best of ``cfg.candidates``), the mode's firing words (the words baseline) and the two
combined ("concept, e.g. word, word") — and refinements are accepted, on a separate validation
split (spare top, strata and random exemplars), so the held-out score stays an honest estimate;
when there are no validation exemplars, the mode's own explain exemplars decide. The words
candidate is the floor: another one replaces it only by scoring higher, and a mode whose LLM
answers stay malformed keeps it. Every decision (candidates, refinements, per-mode and combined
scores, coverage) is taken by the decision scorer (``judges.py``).

Output columns (EXPLANATIONS, one row per mode):
- ``polarity``: the side explained (``NeuronOptions.polarity``): 1, or -1 where the records given
  are the neuron's negative view; the workflow is the same.
- ``scorer``: the decision scorer; ``calibrated``: whether it passed the run's self-check (null
  when none ran).
- ``explanation`` / ``source``: the mode's chosen explanation and where it came from (``llm``,
  ``llm+words``, ``words``, ``refined``).
- ``mode_score``: held-out score of that mode's explanation alone; ``score``: of the neuron's
  combined modes (the best mode per held-out item); ``baseline_score``: of the single-pass one;
  ``lexical_score`` / ``mode_lexical_score``: of the neuron's / mode's words baseline; each
  ``*_ci`` the score's 95 % interval.
- ``control_explanation`` / ``control_score``: an unrelated explanation, scored the same way on
  the same held-out exemplars: what chance looks like for this neuron.
- ``sim_*``: the same four scores under the simulation scorer (pooled Pearson r); NaN when
  ``cfg.simulation_scores`` is off.
- ``coverage``: share of the explain top exemplars that their own mode's explanation accounts for
  (``Scorer.covered``); one value per neuron, on every row.
- ``rounds``: refinement rounds run for the mode (each decision is in the transcript).
- ``malformed_answers``: agent answers of the neuron rejected by a parser or as a copy of the
  prompt's text or example answer (each in the transcript with its reason).
- ``llm_calls``: engine requests for the whole neuron (cache hits excluded); ``llm_tokens_*``:
  the NeuronScope method's tokens; ``baseline_llm_tokens_*``: the single-pass baseline's.
- method "single-pass": one row, mode -1, n_modes 0, the NeuronScope columns null/NaN;
  method "neuronscope": the baseline columns null/NaN; method "triage": single-pass first, then
  the full workflow only where it is likely to pay (``NeuronWork.triage``); ``method`` says which
  it got.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa

from .. import prompts
from ..config import ExplainConfig
from ..errors import AgentOutputError
from ..exemplars import (
    POSITIVE,
    Exemplar,
    Split,
    SplitSizes,
    activating,
    lexical_explanation,
    load,
    mode_tokens,
    shown_words,
    split,
    word_counts,
)
from ..llm.agents import Agent
from ..llm.base import Ledger, Metered
from ..models.embedder import get_embedder
from ..results.transcript import (
    AgentAnswer,
    AgentFailure,
    CandidateEntry,
    ClusterEntry,
    Entry,
    NeuronError,
    RefineDecision,
    RefineFailure,
    ScoreEntry,
    SplitEntry,
    TriageEntry,
)
from ..schema import explanation_row
from ..scoring import Judge, ScoreResult
from ..scoring.controls import control_explanation
from ..timing import CLUSTER, LOAD_EMBEDDER, SETUP, WORKFLOW, Timings
from . import agents, cluster
from .judges import Judges, ScorerJudges

# The scorers' ledger entries: the NeuronScope method's and the baseline's.
# Control scoring ("control") belongs to neither method: it counts in llm_calls only.
NEURONSCOPE_AGENTS = (Agent.DECONSTRUCT, Agent.EXPLAIN, Agent.REFINE, Agent.SIMULATE, Agent.DETECTION, Agent.FUZZING)
BASELINE_AGENTS = (Agent.SINGLE_PASS, Agent.SIMULATE_BASELINE, Agent.DETECTION_BASELINE, Agent.FUZZING_BASELINE)
FULL_METHODS = ("neuronscope", "both", "triage")  # the methods that may run the full workflow
BASELINE_METHODS = ("single-pass", "both", "triage")  # those that make the single-pass explanation
MAX_MODE_COMPONENTS = 3  # components shown per mode, most frequent first (more get parroted as a list)
EXAMPLE_WORDS = 2  # firing words a combined candidate names after its concept
NO_INTERVAL = (math.nan, math.nan)

TRIAGE_FULL = "triage/neuronscope"  # the method of a triaged neuron that got the full workflow
TRIAGE_WITHHELD = "triage/single-pass (budget)"  # ... due it, but the budget withheld it
# ... whose full workflow was given up: earlier versions did so when its answers stayed malformed (a
# mode now keeps its words explanation instead); their runs' rows still say so
TRIAGE_FULL_FAILED = "triage/single-pass (full failed)"
FULL_ATTEMPTS = (TRIAGE_FULL, TRIAGE_FULL_FAILED)  # the triage methods that spent a full workflow's tokens


def triage_method(t: TriageEntry) -> str:
    """The ``method`` of a triaged neuron's rows: what it got, and why where the budget decided."""
    if t.withheld:
        return TRIAGE_WITHHELD
    return TRIAGE_FULL if t.full else "triage/single-pass"


@dataclass(frozen=True)
class NeuronOptions:
    """How one neuron's workflow runs, beside its ExplainConfig."""

    embedder: Any = None  # anything with sentence-transformers' ``encode``; None: cfg.embedder, loaded once per process
    clustering: str | None = None  # "activation" or "components" (the paper's); None: cfg.clustering
    min_silhouette: float = cluster.MIN_SILHOUETTE  # of the components clustering
    cache: Any = None  # the neuron's response cache (``neuronscope.llm.cache.NeuronCache``)
    calibrated: bool | None = None  # the run's scorer self-check verdict, carried into the rows
    full_allowed: bool = True  # False (method triage, a run short of budget): single-pass only
    outputs: dict | None = None  # the neuron's OUTPUT_TOKENS row (None: the run has no output side)
    timings: Timings | None = None  # where the neuron's time goes (None: kept by the workflow alone)
    polarity: int = POSITIVE  # the side explained; NEGATIVE: the records are its view (``exemplars.flipped``)


@dataclass
class Mode:
    exemplars: list[Exemplar]
    components: list[str]
    lexical: str  # the mode's words baseline
    samples: list[str] = field(default_factory=list)  # the LLM's candidate explanations
    draft: str = ""  # the best of them, refined: what competes with the words ("" without one)
    draft_source: str = "llm"  # "refined" once a revision of it was kept
    explanation: str = ""  # the chosen one
    source: str = ""  # where it came from: llm, llm+words, refined, refined+words, words
    rounds: int = 0
    score: float = math.nan
    score_ci: tuple[float, float] = NO_INTERVAL
    lexical_score: float = math.nan
    lexical_score_ci: tuple[float, float] = NO_INTERVAL
    sim_score: float = math.nan


@dataclass
class Scores:
    """The neuron's held-out scores, each named as its EXPLANATIONS column (the per-mode ones are
    each ``Mode``'s); NaN (and NaN intervals) where there is nothing to score."""

    score: float = math.nan
    score_ci: tuple[float, float] = NO_INTERVAL
    lexical_score: float = math.nan
    lexical_score_ci: tuple[float, float] = NO_INTERVAL
    baseline_score: float = math.nan
    baseline_score_ci: tuple[float, float] = NO_INTERVAL
    control_score: float = math.nan
    control_score_ci: tuple[float, float] = NO_INTERVAL
    sim_score: float = math.nan
    sim_baseline_score: float = math.nan
    sim_control_score: float = math.nan


class Heldout(NamedTuple):
    """One scorer's held-out results of the neuron (each with its interval, where computed)."""

    modes: list[ScoreResult]  # each mode's explanation alone
    combined: ScoreResult | None  # the modes together (None without modes)
    baseline: ScoreResult | None  # the single-pass explanation (None without one)
    control: ScoreResult


def _finite(x: float) -> float:
    """A score to rank by: NaN (unscorable) below every score."""
    return -math.inf if math.isnan(x) else x


def _score(r: ScoreResult | None) -> float:
    return math.nan if r is None else r.score


def _interval(r: ScoreResult | None) -> tuple[float, float]:
    return NO_INTERVAL if r is None else r.interval


def _ids(exemplars: list[Exemplar]) -> list[int]:
    return [e.window_id for e in exemplars]


def _score_entry(purpose: str, judge: Judge, explanation: str, exemplars: list[Exemplar], r: ScoreResult) -> ScoreEntry:
    values = np.round(r.values, 3).tolist()
    extra = dict(r.extra) | ({"ci": list(r.interval)} if not math.isnan(r.interval[0]) else {})
    return ScoreEntry(judge.scorer.name, purpose, explanation, _ids(exemplars), values, r.score, extra)


def _template_version(cfg: ExplainConfig) -> str:
    """The versions of the templates the configured method and scorers render."""
    run_ns, run_base = cfg.method in FULL_METHODS, cfg.method in BASELINE_METHODS
    used = (
        ([Agent.DECONSTRUCT, Agent.EXPLAIN, Agent.REFINE] if run_ns else [])
        + ([Agent.SINGLE_PASS] if run_base else [])
        + ([Agent.SIMULATE] if cfg.simulation_scores or cfg.scorer == "simulation" else [])
        + ([Agent(cfg.scorer)] if cfg.scorer in ("detection", "fuzzing") else [])
    )
    return prompts.template_versions(dict.fromkeys(used))


class NeuronWork:
    """One neuron's workflow. Built before anything can fail; ``open`` then splits its records and
    makes its judges and control, and every stage after it appends to ``transcript``."""

    sp: Split
    embedder: Any
    judges: Judges
    control: str  # the control explanation: unrelated to the neuron, scored beside every score
    lexical: str  # the neuron's words baseline: its explain exemplars' most frequent firing words
    promoted: list[str]  # the tokens its output promotes, strongest first (the explainers see them)

    def __init__(self, layer: int, neuron: int, llm, cfg: ExplainConfig, opts: NeuronOptions):
        self.layer, self.neuron, self.cfg, self.opts = layer, neuron, cfg, opts
        self.clustering = opts.clustering or cfg.clustering
        if self.clustering not in ("components", "activation"):
            raise ValueError(f"clustering must be 'components' or 'activation', got {self.clustering!r}")
        self.ledger = Ledger()
        self.timings = opts.timings or Timings()
        self.transcript: list[Entry] = []
        self.llm = Metered(llm, self.ledger, opts.cache, self.timings)
        self.agents = agents.AgentSession(self.llm, cfg.max_parse_retries, self.transcript)
        self.method: str = cfg.method  # what the rows say the neuron got (method triage decides)
        # shown to the explainers only when asked: a weak explainer copies them into its answers;
        # a negative activation pushes the output the other way, towards what it suppresses
        pushed = "promoted_tokens" if opts.polarity == POSITIVE else "suppressed_tokens"
        self.promoted = list(opts.outputs[pushed]) if opts.outputs and cfg.output_evidence else []

    def run(self, records: pa.Table | pd.DataFrame) -> list[dict]:
        """The neuron's EXPLANATIONS rows; any failure becomes one 'failed' row with the reason
        (in the transcript too), never an exception. Its time goes into ``timings``: what no
        other phase takes is ``workflow``'s."""
        with self.timings.phase(WORKFLOW):
            return self._run(records)

    def _run(self, records: pa.Table | pd.DataFrame) -> list[dict]:
        run_ns, run_base = self.cfg.method in FULL_METHODS, self.cfg.method in BASELINE_METHODS
        try:
            with self.timings.phase(SETUP):
                self.open(records)
            # a baseline may go missing only where the full workflow can still explain the neuron
            base_text = self.baseline(required=not (run_ns and self.opts.full_allowed)) if run_base else None
            if self.cfg.method == "triage":
                verdict = self.triage(base_text)
                run_ns = verdict.full
                self.method = triage_method(verdict)
            modes: list[Mode] = []
            coverage = math.nan
            if run_ns:
                modes, coverage = self.full()
            scores = self.final_scores(modes, base_text)
        except Exception as e:  # the neuron's failure is recorded, never raised past the workflow
            self.transcript.append(NeuronError(f"{type(e).__name__}: {e}"))
            return [self.failed_row(e)]
        return self.rows(modes, coverage, base_text, scores)

    def open(self, records: pa.Table | pd.DataFrame) -> None:
        """Split the records (into the transcript); load the embedder; make the judges and the
        control explanation, which avoids the neuron's activating words."""
        cfg = self.cfg
        sp = self.sp = split(load(records), SplitSizes.of(cfg))
        base = sp.scale.base or None
        self.transcript.append(SplitEntry(sp.scale.peak, _ids(sp.explain), _ids(sp.heldout), _ids(sp.validation), base))
        with self.timings.phase(LOAD_EMBEDDER):  # once per worker process, where the run serves none
            self.embedder = self.opts.embedder or get_embedder(cfg.embedder, cfg.embedder_dtype)
        self.judges = Judges.of(self.llm, cfg, self.embedder, sp.scale, shown_words(sp.explain, sp.scale))
        avoid = ", ".join(activating(e, sp.scale) for e in sp.explain)
        self.control = control_explanation(self.layer, self.neuron, embedder=self.embedder, avoid=avoid)
        self.lexical = lexical_explanation(sp.explain, sp.scale)

    def baseline(self, required: bool) -> str | None:
        """The single-pass explanation; when NeuronScope's own explanations are made too, a baseline
        that stays malformed is recorded as missing instead of failing the neuron."""
        try:
            return agents.single_pass(self.agents, self.sp.explain, self.sp.scale, self.promoted)
        except AgentOutputError as e:
            if required:
                raise
            self.transcript.append(AgentFailure(Agent.SINGLE_PASS, f"{e}; baseline missing"))
            return None

    def triage(self, base_text: str | None) -> TriageEntry:
        """Whether the full workflow is likely to pay for this neuron: its single-pass explanation
        scores below ``cfg.triage_below`` on held-out exemplars (the score NaN without a baseline)
        or not above its words baseline, or its firing words fall into several modes (one
        explanation cannot cover a polysemantic neuron); it runs where ``opts.full_allowed``. The
        verdict goes into the transcript, after its scoring."""
        score = math.nan
        if base_text is not None:
            score = self.heldout(self.judges.decide.baseline, [base_text], "triage heldout")[0].score
        # the words baseline belongs to neither method: its scoring is booked with the control's
        lexical = self.heldout(self.judges.decide.control, [self.lexical], "triage lexical heldout")[0].score
        words = [activating(e, self.sp.scale) for e in self.sp.explain]
        with self.timings.phase(CLUSTER):
            k = len(set(cluster.modes_from_words(self.embedder, words, self.cfg.max_modes)[0]))
        # a missing or NaN score counts as weak, and so does one the words alone reach
        due = not (score >= self.cfg.triage_below and score > lexical) or k > 1
        allowed = self.opts.full_allowed
        verdict = TriageEntry(score, k, due and allowed, withheld=due and not allowed, lexical_score=lexical)
        self.transcript.append(verdict)
        return verdict

    def full(self) -> tuple[list[Mode], float]:
        """The full workflow's explained, refined modes and their coverage."""
        modes = self.modes()
        ex, comps = [m.exemplars for m in modes], [m.components for m in modes]
        drafts = agents.explain_modes(self.agents, ex, comps, self.sp.scale, self.cfg.candidates, self.promoted)
        for m, texts in zip(modes, drafts):
            self.draft(m, texts)
        self.refine(modes)
        for i, m in enumerate(modes):
            self.choose(i, m)
        return modes, self.coverage(modes)

    def _deciding(self, mode: Mode) -> tuple[list[Exemplar], str]:
        """The exemplars that decide between a mode's explanations: the validation split, or the
        mode's own where there is none."""
        return (self.sp.validation, "validation") if self.sp.validation else (mode.exemplars, "explain")

    def draft(self, mode: Mode, llm_texts: list[str]) -> None:
        """The mode's draft: its best LLM candidate on the deciding exemplars (first on ties)."""
        mode.samples = llm_texts
        if llm_texts:
            on = self._deciding(mode)[0]
            scores = [_finite(r.score) for r in self.judges.decide.method([(t, on) for t in llm_texts])]
            mode.draft = llm_texts[scores.index(max(scores))]

    def choose(self, i: int, mode: Mode) -> None:
        """The mode's explanation: its words baseline, unless its (refined) draft, or the draft
        combined with the mode's firing words, scores higher on the deciding exemplars (ties keep
        the words, then the draft alone: only a real gain replaces the simpler one). The LLM's
        samples and the candidates go into the transcript."""
        judge = self.judges.decide.method
        on, judged_on = self._deciding(mode)
        ranked = [(mode.lexical, "words")]  # the order ties are broken in
        if mode.draft:
            examples = ", ".join(w for w, _ in word_counts(mode.exemplars, self.sp.scale)[:EXAMPLE_WORDS])
            ranked += [
                (mode.draft, mode.draft_source),
                (f"{mode.draft}, e.g. {examples}", f"{mode.draft_source}+words"),
            ]
        listed = [(t, "llm") for t in mode.samples]
        listed += [c for c in ranked if c not in listed]
        scores = [r.score for r in judge([(t, on) for t, _ in listed])]
        by_text = dict(zip(listed, scores))
        top = max(_finite(by_text[c]) for c in ranked)
        # nothing scorable (no firing word to judge): the method's own answer where there is one
        pick = (
            next(c for c in ranked if _finite(by_text[c]) == top)
            if top > -math.inf
            else ranked[min(1, len(ranked) - 1)]
        )
        mode.explanation, mode.source = pick
        entries = [{"text": t, "source": src, "score": sc} for (t, src), sc in zip(listed, scores)]
        self.transcript.append(CandidateEntry(judge.scorer.name, i, entries, listed.index(pick), judged_on, _ids(on)))

    def modes(self) -> list[Mode]:
        """The semantic modes of the explain exemplars: both clusterings are computed and go into
        the transcript, the configured one decides; each mode keeps its most frequent components."""
        sp, cfg = self.sp, self.cfg
        comps = agents.deconstruct(self.agents, sp.explain, sp.scale)
        with self.timings.phase(CLUSTER):
            by_comp, choice_c = cluster.modes_from_components(
                self.embedder, comps, cfg.max_modes, self.opts.min_silhouette
            )
            words = [activating(e, sp.scale) for e in sp.explain]
            by_ctx, choice_a = cluster.modes_from_words(self.embedder, words, cfg.max_modes)
        for name, labels, choice in (("components", by_comp, choice_c), ("activation", by_ctx, choice_a)):
            self.transcript.append(
                ClusterEntry(
                    name,
                    name == self.clustering,
                    choice.k,
                    choice.silhouettes,
                    choice.merges,
                    len(set(labels)),
                    dict(zip(_ids(sp.explain), labels)),
                )
            )
        labels = by_comp if self.clustering == "components" else by_ctx
        modes = []
        for m in range(len(set(labels))):
            members = [i for i, lab in enumerate(labels) if lab == m]
            counts = Counter(c.lower() for i in members for c in comps[i])
            ranked = [c for c, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
            exemplars = [sp.explain[i] for i in members]
            modes.append(Mode(exemplars, ranked[:MAX_MODE_COMPONENTS], lexical_explanation(exemplars, sp.scale)))
        return modes

    def refine(self, modes: list[Mode]) -> None:
        """Revise each mode's draft from the judge's misses and false alarms on its explain
        exemplars (with a few spare random ones, where false alarms show); keep a revision only
        when the judge's validation score rises; stop at no gain or refine_rounds. A malformed
        revision keeps the current draft (recorded, not fatal)."""
        judge, sp = self.judges.decide.method, self.sp
        active = [i for i, m in enumerate(modes) if m.draft]
        for rnd in range(self.cfg.refine_rounds):
            if not active:
                break
            own = judge([(modes[i].draft, modes[i].exemplars + list(sp.feedback)) for i in active])
            cases = {i: r.mistakes() for i, r in zip(active, own)}
            active = [i for i in active if cases[i][0] or cases[i][1]]  # nothing to fix: done
            if not active:
                break
            try:
                revised = agents.refine(
                    self.agents,
                    [modes[i].draft for i in active],
                    [agents.tokens_line(modes[i].exemplars, sp.scale) for i in active],
                    [cases[i][0] for i in active],
                    [cases[i][1] for i in active],
                    sp.scale,
                )
            except AgentOutputError as e:
                self.transcript.append(RefineFailure(rnd, False, str(e)))
                break
            active = self._keep_better(modes, rnd, dict(zip(active, revised)))

    def _keep_better(self, modes: list[Mode], rnd: int, revised: dict[int, str]) -> list[int]:
        """Judge each mode's revision beside its current draft on the validation exemplars (the
        mode's own where there are none) and keep it where it scores higher; the decisions go into
        the transcript. The modes whose revision was kept."""
        judge = self.judges.decide.method
        jobs = []
        for i, new in revised.items():
            ex = self._deciding(modes[i])[0]
            jobs += [(modes[i].draft, ex), (new, ex)]
        results = judge(jobs)
        still = []
        for j, (i, new) in enumerate(revised.items()):
            ex, judged_on = self._deciding(modes[i])
            old_s, new_s = results[2 * j].score, results[2 * j + 1].score
            modes[i].rounds += 1
            kept = bool(new_s > old_s)  # NaN (unscorable) never wins
            self.transcript.append(
                RefineDecision(judge.scorer.name, i, rnd, modes[i].draft, new, old_s, new_s, kept, judged_on, _ids(ex))
            )
            if kept:
                modes[i].draft, modes[i].draft_source = new, "refined"
                still.append(i)
        return still

    def coverage(self, modes: list[Mode]) -> float:
        """Share of the explain top exemplars that their own mode's explanation accounts for."""
        judge = self.judges.decide.method
        own = judge([(m.explanation, m.exemplars) for m in modes])
        flags = [c for r in own for c in judge.scorer.covered(r)]
        return sum(flags) / max(1, len(flags))

    def heldout(self, judge: Judge, texts: list[str], purpose: str, interval: bool = False) -> list[ScoreResult]:
        """``texts`` scored on the held-out exemplars (with their intervals), each score into the transcript."""
        results = judge([(t, self.sp.heldout) for t in texts])
        if interval:
            results = [judge.with_interval(r) for r in results]
        for t, r in zip(texts, results):
            self.transcript.append(_score_entry(purpose, judge, t, self.sp.heldout, r))
        return results

    def combined(self, judge: Judge, modes: list[Mode], results: list[ScoreResult], interval: bool) -> ScoreResult:
        """The neuron's held-out result with every mode at once: the best mode per held-out item."""
        sc = judge.scorer
        r = sc.result(sc.combine([x.values for x in results]), results[0].items)
        if interval:
            r = judge.with_interval(r)
        texts = " | ".join(m.explanation for m in modes)
        self.transcript.append(_score_entry("combined heldout", judge, texts, self.sp.heldout, r))
        return r

    def final_scores(self, modes: list[Mode], base_text: str | None) -> Scores:
        """Every held-out score of the neuron, with its interval: per mode and its words (set on
        each mode), combined, the neuron's words, baseline and control, under the decision scorer;
        then, without intervals, the simulation scorer's."""
        judges = self.judges.decide
        d = self._scored(judges, modes, base_text, interval=True)
        for m, r in zip(modes, d.modes):
            m.score, m.score_ci = r.score, r.interval
        lexical = self.heldout(judges.control, [m.lexical for m in modes] + [self.lexical], "lexical heldout", True)
        for m, r in zip(modes, lexical):
            m.lexical_score, m.lexical_score_ci = r.score, r.interval
        scores = Scores(
            _score(d.combined),
            _interval(d.combined),
            lexical[-1].score,
            lexical[-1].interval,
            _score(d.baseline),
            _interval(d.baseline),
            d.control.score,
            d.control.interval,
        )
        sim = d if self.judges.sim is judges else None  # simulation decides: its scores, once
        if self.judges.sim is not None and sim is None:
            sim = self._scored(self.judges.sim, modes, base_text, interval=False)
        if sim is not None:
            for m, r in zip(modes, sim.modes):
                m.sim_score = r.score
            scores.sim_score, scores.sim_baseline_score = _score(sim.combined), _score(sim.baseline)
            scores.sim_control_score = sim.control.score
        return scores

    def _scored(self, judges: ScorerJudges, modes: list[Mode], base_text: str | None, interval: bool) -> Heldout:
        per_mode: list[ScoreResult] = []
        combined = baseline = None
        if modes:
            per_mode = self.heldout(judges.method, [m.explanation for m in modes], "mode heldout", interval)
            combined = self.combined(judges.method, modes, per_mode, interval)
        if base_text is not None:  # memoised where triage has scored it already
            baseline = self.heldout(judges.baseline, [base_text], "baseline heldout", interval)[0]
        control = self.heldout(judges.control, [self.control], "control heldout", interval)[0]
        return Heldout(per_mode, combined, baseline, control)

    def rows(self, modes: list[Mode], coverage: float, base_text: str | None, scores: Scores) -> list[dict]:
        """One row per mode; single-pass only: one row carrying the baseline, no NeuronScope modes."""
        shared = {
            "n_modes": len(modes),
            "coverage": coverage,
            "baseline_explanation": base_text,
            "malformed_answers": self.malformed(),
            "control_explanation": self.control,
            "lexical_explanation": self.lexical,
            **asdict(scores),
            **self.common(),
            **self.usage(),
        }
        if not modes:
            return [explanation_row(self.layer, self.neuron, **shared)]
        total = sum(len(m.exemplars) for m in modes)
        return [
            explanation_row(
                self.layer,
                self.neuron,
                mode=i,
                explanation=m.explanation,
                source=m.source,
                mode_size=len(m.exemplars),
                exemplar_ids=_ids(m.exemplars),
                mode_share=len(m.exemplars) / total,
                mode_tokens=mode_tokens(m.exemplars, self.sp.scale),
                mode_score=m.score,
                mode_score_ci=m.score_ci,
                mode_lexical_explanation=m.lexical,
                mode_lexical_score=m.lexical_score,
                mode_lexical_score_ci=m.lexical_score_ci,
                sim_mode_score=m.sim_score,
                rounds=m.rounds,
                **shared,
            )
            for i, m in enumerate(modes)
        ]

    def failed_row(self, e: Exception) -> dict:
        """The one row of a neuron whose workflow failed: the reason and what it spent."""
        error = f"{type(e).__name__}: {e}"
        common, usage = self.common(), self.usage()
        return explanation_row(
            self.layer, self.neuron, status="failed", error=error, malformed_answers=self.malformed(), **common, **usage
        )

    def common(self) -> dict:
        """The columns every row of the neuron carries, failed or not."""
        return {
            "polarity": self.opts.polarity,
            "template_version": _template_version(self.cfg),
            "method": self.method,
            "scorer": self.cfg.scorer,
            "calibrated": self.opts.calibrated,
        }

    def malformed(self) -> int:
        return sum(1 for t in self.transcript if isinstance(t, AgentAnswer) and t.error is not None)

    def usage(self) -> dict:
        ns, base = self.ledger.total(NEURONSCOPE_AGENTS), self.ledger.total(BASELINE_AGENTS)
        return {
            "llm_calls": self.ledger.total().calls,
            "llm_tokens_in": ns.tokens_in,
            "llm_tokens_out": ns.tokens_out,
            "baseline_llm_tokens_in": base.tokens_in,
            "baseline_llm_tokens_out": base.tokens_out,
        }
