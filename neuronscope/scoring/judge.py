"""A scorer's results for one neuron, memoised."""

from __future__ import annotations

import math

from ..exemplars import Exemplar, Scale
from ..timing import Timings, judge_phase
from .scorer import Scorer, ScoreResult


class Judge:
    """One scorer's results for one neuron, memoised: the refine loop, the candidates and the final
    scoring ask for the same (explanation, exemplars) pairs again, and each may cost an LLM pass.
    The scorer's time goes into ``timings`` (phase ``judge SCORER``; its LLM calls, metered with
    the same timings, into ``llm``)."""

    def __init__(self, scorer: Scorer, scale: Scale, timings: Timings | None = None):
        self.scorer, self.scale = scorer, scale
        self.memo: dict = {}
        self.timings, self.phase = timings or Timings(), judge_phase(scorer.name)

    def __call__(self, jobs: list[tuple[str, list[Exemplar]]]) -> list[ScoreResult]:
        keys = [(x, tuple(exs)) for x, exs in jobs]
        todo = {k: job for k, job in zip(keys, jobs) if k not in self.memo}
        with self.timings.phase(self.phase):
            self.memo.update(zip(todo, self.scorer(list(todo.values()), self.scale)))
        return [self.memo[k] for k in keys]

    def with_interval(self, result: ScoreResult) -> ScoreResult:
        """``result`` with its 95 % bootstrap interval (computed once)."""
        if math.isnan(result.interval[0]):
            with self.timings.phase(self.phase):
                result.interval = self.scorer.interval(result)
        return result
