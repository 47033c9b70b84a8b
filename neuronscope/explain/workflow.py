"""One neuron, end to end: split, deconstruct, cluster, explain, refine, score; and the baseline.

Scores are always on the held-out exemplars, which no agent has seen. Refinements are accepted
on a separate validation split (spare top + random exemplars), so the held-out score stays an
honest estimate; when there are no spare exemplars, the mode's own explain exemplars decide.

Output columns (EXPLANATIONS, one row per mode):
- ``mode_score``: held-out correlation of that mode's explanation alone; ``score``: held-out
  correlation of the neuron's combined simulation (elementwise max over its modes).
- ``coverage``: share of the explain top exemplars on which their own mode's simulation
  correlates above COVERAGE_R over the exemplar's window; one value per neuron, on every row.
- ``rounds``: refinement rounds run for the mode (each decision is in the transcript).
- ``llm_calls``: engine requests for the whole neuron (cache hits excluded); ``llm_tokens_*``:
  the NeuronScope method's tokens; ``baseline_llm_tokens_*``: the single-pass baseline's.
- method "single-pass": one row, mode -1, n_modes 0, the NeuronScope columns null/NaN;
  method "neuronscope": the baseline columns null/NaN.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from ..config import ExplainConfig
from ..llm.base import Ledger, Metered
from . import agents, cluster, prompts
from .exemplars import Exemplar, Split, load, split, strongest
from .simulate import Vocab, combine, errors, pearson, score, simulate

NEURONSCOPE_AGENTS = ("deconstruct", "explain", "refine", "simulate")
BASELINE_AGENTS = ("single_pass", "simulate_baseline")
COVERAGE_R = 0.3  # an exemplar is covered when its mode's simulation correlates above this on it
MAX_MODE_COMPONENTS = 3  # components shown per mode, most frequent first (more get parroted as a list)


@dataclass
class NeuronResult:
    rows: list[dict]
    transcript: list[dict] = field(default_factory=list)
    ledger: Ledger = field(default_factory=Ledger)


@dataclass
class Mode:
    exemplars: list[Exemplar]
    components: list[str]
    explanation: str = ""
    rounds: int = 0
    score: float = math.nan


class Simulator:
    """Simulations for one neuron, memoised: the refine loop and the final scoring ask for the
    same (explanation, exemplars) pairs again, and each costs a forward pass per exemplar."""

    def __init__(self, llm, vocab: Vocab, agent: str):
        self.llm, self.vocab, self.agent = llm, vocab, agent
        self.memo: dict = {}

    def __call__(self, jobs: list[tuple[str, list[Exemplar]]]) -> list[list[np.ndarray]]:
        keys = [(x, tuple(exs)) for x, exs in jobs]
        todo = {k: job for k, job in zip(keys, jobs) if k not in self.memo}
        self.memo.update(zip(todo, simulate(self.llm, self.agent, list(todo.values()), self.vocab)))
        return [self.memo[k] for k in keys]


def _sim_entry(purpose: str, explanation: str, exemplars: list[Exemplar], preds, value: float) -> dict:
    return {"agent": "simulate", "purpose": purpose, "explanation": explanation,
            "window_ids": [e.window_id for e in exemplars],
            "predicted": [np.round(p, 2).tolist() for p in preds], "score": value}


def _baseline(llm, sp: Split, vocab: Vocab, cfg: ExplainConfig, transcript) -> tuple[str, float]:
    text = agents.single_pass(llm, sp.explain, sp.max_act, cfg.max_parse_retries, transcript)
    preds = simulate(llm, "simulate_baseline", [(text, sp.heldout)], vocab)[0]
    value = score(preds, sp.heldout)
    transcript.append(_sim_entry("baseline heldout", text, sp.heldout, preds, value))
    return text, value


def _activating(ex: Exemplar, max_act: float) -> str:
    """What activation-guided clustering embeds: the exemplar's activating words ("sword, spear"),
    so the embedding is of what fires, not of the rest of the window."""
    return ", ".join(ex.tokens[i].strip() for i in sorted(strongest(ex, max_act)))


def _modes(llm, sp: Split, cfg: ExplainConfig, embedder, clustering: str, min_silhouette: float,
           transcript) -> list[Mode]:
    comps = agents.deconstruct(llm, sp.explain, sp.max_act, cfg.max_parse_retries, transcript)
    by_comp, choice_c = cluster.modes_from_components(embedder, comps, cfg.max_modes, min_silhouette)
    by_ctx, choice_a = cluster.modes_from_contexts(embedder, [_activating(e, sp.max_act) for e in sp.explain], cfg.max_modes, min_silhouette)
    for name, labels, choice in (("components", by_comp, choice_c), ("activation", by_ctx, choice_a)):
        transcript.append({"agent": "cluster", "variant": name, "used": name == clustering, "k": choice.k,
                           "silhouettes": choice.silhouettes, "n_modes": len(set(labels)),
                           "modes": dict(zip([e.window_id for e in sp.explain], labels))})
    labels = by_comp if clustering == "components" else by_ctx
    modes = []
    for m in range(len(set(labels))):
        members = [i for i, lab in enumerate(labels) if lab == m]
        counts = Counter(c.lower() for i in members for c in comps[i])
        modes.append(Mode([sp.explain[i] for i in members],
                          [c for c, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))][:MAX_MODE_COMPONENTS]))
    return modes


def _refine(llm, modes: list[Mode], sp: Split, sim: Simulator, cfg: ExplainConfig, transcript) -> None:
    """Revise each mode's explanation from its misses and false alarms on its explain exemplars;
    keep a revision only when the validation score rises; stop at no gain or refine_rounds."""
    judge = sp.validation
    active = list(range(len(modes)))
    for rnd in range(cfg.refine_rounds):
        if not active:
            break
        sims = sim([(modes[i].explanation, modes[i].exemplars) for i in active])
        cases = {i: errors(p, modes[i].exemplars, sp.max_act) for i, p in zip(active, sims)}
        active = [i for i in active if cases[i][0] or cases[i][1]]  # nothing to fix: done
        if not active:
            break
        revised = agents.refine(llm, [modes[i].explanation for i in active], [cases[i][0] for i in active],
                                [cases[i][1] for i in active], sp.max_act, cfg.max_parse_retries, transcript)
        jobs = []
        for i, new in zip(active, revised):
            ex = judge or modes[i].exemplars
            jobs += [(modes[i].explanation, ex), (new, ex)]
        sims = sim(jobs)
        still = []
        for j, (i, new) in enumerate(zip(active, revised)):
            ex = judge or modes[i].exemplars
            old_s, new_s = score(sims[2 * j], ex), score(sims[2 * j + 1], ex)
            modes[i].rounds += 1
            kept = new_s > old_s
            transcript.append({"agent": "refine_decision", "mode": i, "round": rnd, "old": modes[i].explanation,
                               "new": new, "old_score": old_s, "new_score": new_s, "kept": kept,
                               "judged_on": "validation" if judge else "explain",
                               "window_ids": [e.window_id for e in ex]})
            if kept:
                modes[i].explanation = new
                still.append(i)
        active = still


def _score_modes(modes: list[Mode], sp: Split, sim: Simulator, transcript) -> tuple[float, float]:
    """Per-mode and combined held-out scores, and coverage of the explain exemplars, in one call."""
    jobs = [(m.explanation, sp.heldout) for m in modes] + [(m.explanation, m.exemplars) for m in modes]
    sims = sim(jobs)
    held, own = sims[: len(modes)], sims[len(modes):]
    for m, preds in zip(modes, held):
        m.score = score(preds, sp.heldout)
        transcript.append(_sim_entry("mode heldout", m.explanation, sp.heldout, preds, m.score))
    combined = combine(held)
    total = score(combined, sp.heldout)
    transcript.append(_sim_entry("combined heldout", " | ".join(m.explanation for m in modes), sp.heldout, combined, total))
    covered = sum(pearson(p, e.activations) > COVERAGE_R for m, preds in zip(modes, own)
                  for e, p in zip(m.exemplars, preds))
    return total, covered / max(1, sum(len(m.exemplars) for m in modes))


def _row(layer: int, neuron: int, **kw) -> dict:
    row = {"layer": layer, "neuron": neuron, "mode": -1, "n_modes": 0, "explanation": None, "mode_size": 0,
           "exemplar_ids": [], "mode_score": math.nan, "score": math.nan, "coverage": math.nan,
           "baseline_explanation": None, "baseline_score": math.nan, "rounds": 0, "llm_calls": 0,
           "llm_tokens_in": 0, "llm_tokens_out": 0, "baseline_llm_tokens_in": 0, "baseline_llm_tokens_out": 0,
           "template_version": "", "method": "", "status": "ok", "error": None}
    row.update(kw)
    return row


def explain_neuron(layer: int, neuron: int, records: pa.Table | pd.DataFrame, llm, cfg: ExplainConfig,
                   embedder=None, clustering: str | None = None,
                   min_silhouette: float = cluster.MIN_SILHOUETTE, cache=None) -> NeuronResult:
    """Explain one neuron from its RECORDS rows; any failure becomes one 'failed' row with the reason.

    ``embedder`` is anything with sentence-transformers' ``encode``; default: ``cfg.embedder``,
    loaded once per process. ``clustering`` (default ``cfg.clustering``) is "components" (NeuronScope) or "activation" (the
    activation-guided variant); the other one is always computed too and reported in the transcript.
    ``cache`` is an optional response cache (``neuronscope.llm.cache.ResponseCache``).
    """
    clustering = clustering or cfg.clustering
    if clustering not in ("components", "activation"):
        raise ValueError(f"clustering must be 'components' or 'activation', got {clustering!r}")
    ledger, transcript = Ledger(), []
    metered = Metered(llm, ledger, cache)
    run_ns, run_base = cfg.method in ("neuronscope", "both"), cfg.method in ("single-pass", "both")
    used = (["deconstruct", "explain", "refine", "simulate"] if run_ns else []) + (["single_pass", "simulate"] if run_base else [])
    common = {"template_version": prompts.template_versions(dict.fromkeys(used)), "method": cfg.method}
    try:
        sp = split(*load(records), cfg.n_explain, cfg.n_heldout_top, cfg.n_heldout_random)
        transcript.append({"agent": "split", "max_act": sp.max_act,
                           **{k: [e.window_id for e in getattr(sp, k)] for k in ("explain", "heldout", "validation")}})
        vocab = Vocab.of(llm)
        base_text, base_score = _baseline(metered, sp, vocab, cfg, transcript) if run_base else (None, math.nan)
        modes, total, coverage = [], math.nan, math.nan
        if run_ns:
            modes = _modes(metered, sp, cfg, embedder or cluster.get_embedder(cfg.embedder), clustering,
                           min_silhouette, transcript)
            texts = agents.explain_modes(metered, [m.exemplars for m in modes], [m.components for m in modes],
                                         sp.max_act, cfg.max_parse_retries, transcript)
            for m, t in zip(modes, texts):
                m.explanation = t
            sim = Simulator(metered, vocab, "simulate")
            _refine(metered, modes, sp, sim, cfg, transcript)
            total, coverage = _score_modes(modes, sp, sim, transcript)
    except Exception as e:  # the neuron's failure is recorded, never raised past the workflow
        transcript.append({"agent": "error", "error": f"{type(e).__name__}: {e}"})
        rows = [_row(layer, neuron, status="failed", error=f"{type(e).__name__}: {e}", **common, **_usage(ledger))]
        return NeuronResult(rows, transcript + [{"agent": "ledger", **ledger.as_dict()}], ledger)
    shared = {"n_modes": len(modes), "score": total, "coverage": coverage, "baseline_explanation": base_text,
              "baseline_score": base_score, **common, **_usage(ledger)}
    if modes:
        rows = [_row(layer, neuron, mode=i, explanation=m.explanation, mode_size=len(m.exemplars),
                     exemplar_ids=[e.window_id for e in m.exemplars], mode_score=m.score, rounds=m.rounds, **shared)
                for i, m in enumerate(modes)]
    else:  # single-pass only: one row carrying the baseline, no NeuronScope modes
        rows = [_row(layer, neuron, **shared)]
    transcript.append({"agent": "ledger", **ledger.as_dict()})
    return NeuronResult(rows, transcript, ledger)


def _usage(ledger: Ledger) -> dict:
    ns, base = ledger.total(NEURONSCOPE_AGENTS), ledger.total(BASELINE_AGENTS)
    return {"llm_calls": ns.calls + base.calls, "llm_tokens_in": ns.tokens_in, "llm_tokens_out": ns.tokens_out,
            "baseline_llm_tokens_in": base.tokens_in, "baseline_llm_tokens_out": base.tokens_out}
