"""A scorer's results for one neuron, memoised."""

from __future__ import annotations

from ..exemplars import Exemplar
from .scorer import Scorer, ScoreResult


class Judge:
    """One scorer's results for one neuron, memoised: the refine loop and the final scoring ask
    for the same (explanation, exemplars) pairs again, and each may cost an LLM pass."""

    def __init__(self, scorer: Scorer, max_act: float):
        self.scorer, self.max_act = scorer, max_act
        self.memo: dict = {}

    def __call__(self, jobs: list[tuple[str, list[Exemplar]]]) -> list[ScoreResult]:
        keys = [(x, tuple(exs)) for x, exs in jobs]
        todo = {k: job for k, job in zip(keys, jobs) if k not in self.memo}
        self.memo.update(zip(todo, self.scorer(list(todo.values()), self.max_act)))
        return [self.memo[k] for k in keys]
