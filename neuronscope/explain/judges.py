"""The scorers one neuron is judged by, each memoised for the neuron (``scoring.Judge``).

Every workflow decision and the reported scores come from the configured *decision scorer*
(``cfg.scorer``); the paper's simulation scorer is computed beside it, unless
``cfg.simulation_scores`` is off. Each scorer judges three kinds of explanation, whose LLM calls
are booked apart: the method's, the single-pass baseline's and the control's.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import ExplainConfig
from ..exemplars import Scale
from ..llm.agents import Agent
from ..llm.base import Metered
from ..scoring import Judge, Scorer, make_scorer

# An LLM scorer's agents: the method's and the baseline's (the reader and embedding scorers call no LLM).
SCORER_AGENTS = {
    "simulation": (Agent.SIMULATE, Agent.SIMULATE_BASELINE),
    "detection": (Agent.DETECTION, Agent.DETECTION_BASELINE),
    "fuzzing": (Agent.FUZZING, Agent.FUZZING_BASELINE),
}


@dataclass(frozen=True)
class ScorerJudges:
    """One scorer's judges of the neuron: of the method's explanations, of the single-pass
    baseline and of the control explanation."""

    method: Judge
    baseline: Judge
    control: Judge


@dataclass(frozen=True)
class Judges:
    """The decision scorer's judges and the simulation scorer's beside them: the same judges where
    simulation decides (nothing is simulated twice), None when ``simulation_scores`` is off."""

    decide: ScorerJudges
    sim: ScorerJudges | None

    @classmethod
    def of(cls, llm: Metered, cfg: ExplainConfig, embedder, scale: Scale, shown: frozenset[str]) -> Judges:
        """``shown``: the words the explainer was shown firing (the reader judge reads them); each
        judge's time goes into the metered LLM's ``timings``."""

        # judges with the same scorer and agent share one: the reader's and the embedding scorer's
        # three judges derive each exemplar set's items, readings and draws once, not three times
        scorers: dict[tuple[str, Agent | None], Scorer] = {}

        def judge(name: str, agent: Agent | None) -> Judge:
            if (name, agent) not in scorers:
                scorers[name, agent] = make_scorer(
                    name, llm=llm, embedder=embedder, agent=agent, hard_negatives=cfg.hard_negatives, shown=shown
                )
            return Judge(scorers[name, agent], scale, llm.timings)

        decide, sim = cfg.scorer, "simulation"
        agent, base_agent = SCORER_AGENTS.get(decide, (None, None))
        # the control's LLM calls belong to neither method (the reader and embedding scorers make none)
        deciding = ScorerJudges(
            judge(decide, agent), judge(decide, base_agent), judge(decide, None if agent is None else Agent.CONTROL)
        )
        if decide == sim:
            return cls(deciding, deciding)
        if cfg.simulation_scores:
            return cls(
                deciding,
                ScorerJudges(
                    judge(sim, Agent.SIMULATE), judge(sim, Agent.SIMULATE_BASELINE), judge(sim, Agent.CONTROL)
                ),
            )
        return cls(deciding, None)
