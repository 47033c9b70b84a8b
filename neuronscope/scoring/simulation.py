"""The paper's score: the all-at-once logprob simulator, Pearson r pooled over every token."""

from __future__ import annotations

import numpy as np

from ..exemplars import Exemplar, Scale
from ..llm.agents import Agent
from .metrics import pearson, pearson_weighted
from .scorer import Item, Scorer
from .simulate import Vocab, simulate

COVERAGE_R = 0.3  # an exemplar is covered when the simulation correlates above this on it


class SimulationScorer(Scorer):
    """Bills et al. 2023: the simulator predicts every token's 0-10 activation from the
    explanation; score = Pearson r between predictions and true activations over all tokens."""

    name = "simulation"
    metric_name = "pearson"

    def __init__(self, llm, agent: Agent = Agent.SIMULATE):
        self.llm, self.agent = llm, agent
        self._vocab: Vocab | None = None

    @property
    def vocab(self) -> Vocab:
        if self._vocab is None:
            self._vocab = Vocab.of(self.llm)
        return self._vocab

    def items(self, exemplars: list[Exemplar], scale: Scale) -> list[Item]:
        out = []
        for ex in exemplars:
            levels = scale.scaled(ex.activations)
            out += [Item(ex, i, float(a), float(levels[i]), bool(levels[i] > 0)) for i, a in enumerate(ex.activations)]
        return out

    def values(self, jobs: list[tuple[str, list[Item]]]) -> list[np.ndarray]:
        # Items come whole exemplars at a time, in order: simulate each exemplar once per job.
        sims = simulate(self.llm, self.agent, [(x, _exemplars(its)) for x, its in jobs], self.vocab)
        return [np.concatenate(s) if s else np.zeros(0) for s in sims]

    def statistic(self, values: np.ndarray, items: list[Item], weights: np.ndarray) -> np.ndarray:
        return pearson_weighted(values, [it.act for it in items], weights)

    def covered(self, result) -> list[bool]:
        """Per exemplar: the simulation correlates above COVERAGE_R with it over its window."""
        out, at = [], 0
        for ex in _exemplars(result.items):
            n = len(ex.activations)
            out.append(pearson(result.values[at : at + n], ex.activations) > COVERAGE_R)
            at += n
        return out

    def guesses(self, values: np.ndarray, items: list[Item]) -> np.ndarray:
        return np.asarray(values, dtype=np.float64)  # already predicted levels


def _exemplars(items: list[Item]) -> list[Exemplar]:
    return list(dict.fromkeys(it.exemplar for it in items))
