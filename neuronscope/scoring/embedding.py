"""The embedding scorer: does the explanation sit closer to the contexts where the neuron fires
than to those where it does not? Cosine of sentence embeddings, AUROC over held-out contexts."""

from __future__ import annotations

import numpy as np

from ..explain.cluster import embed
from ..explain.exemplars import Exemplar
from .contexts import window_items
from .metrics import auroc
from .scorer import Item, Scorer


class EmbeddingScorer(Scorer):
    """Neuronpedia's and delphi's "embedding" score with a sentence embedder (the bundled
    all-MiniLM-L6-v2 by default): AUROC of cosine(explanation, context), activating vs quiet."""

    name = "embedding"
    metric_name = "auroc"

    def __init__(self, embedder):
        self.embedder = embedder
        self._memo: dict[str, np.ndarray] = {}

    def items(self, exemplars: list[Exemplar], max_act: float) -> list[Item]:
        return window_items(exemplars, max_act)

    def _vectors(self, texts: list[str]) -> np.ndarray:
        todo = [t for t in dict.fromkeys(texts) if t not in self._memo]
        if todo:
            self._memo.update(zip(todo, embed(self.embedder, todo)))
        return np.stack([self._memo[t] for t in texts]) if texts else np.zeros((0, 1), np.float32)

    def values(self, jobs: list[tuple[str, list[Item]]]) -> list[np.ndarray]:
        # Contexts are shared between jobs (the same held-out set): embedded once, memoised.
        self._vectors([x for x, _ in jobs] + [it.text for _, its in jobs for it in its])
        return [self._vectors([it.text for it in its]) @ self._memo[x] if its else np.zeros(0) for x, its in jobs]

    def metric(self, values: np.ndarray, items: list[Item]) -> float:
        return auroc(values, [it.label for it in items])
