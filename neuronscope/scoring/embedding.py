"""The embedding scorer: does the explanation sit closer to the contexts where the neuron fires
than to those where it does not? Cosine of sentence embeddings, AUROC over held-out contexts."""

from __future__ import annotations

import numpy as np

from ..exemplars import Exemplar, Scale
from ..models.embedder import embed_cached
from .contexts import window_items
from .metrics import auroc_weighted
from .scorer import Item, Scorer


class EmbeddingScorer(Scorer):
    """Neuronpedia's and delphi's "embedding" score with a sentence embedder (the bundled
    all-MiniLM-L6-v2 by default): AUROC of cosine(explanation, context), activating vs quiet."""

    name = "embedding"
    metric_name = "auroc"

    def __init__(self, embedder, hard_negatives: int = 0):
        self.embedder, self.hard_negatives = embedder, hard_negatives

    def items(self, exemplars: list[Exemplar], scale: Scale) -> list[Item]:
        items = window_items(exemplars, scale)
        return self._hardest(items) if self.hard_negatives else items

    def _hardest(self, items: list[Item]) -> list[Item]:
        """The positives and only the ``hard_negatives`` quiet contexts nearest to any positive
        (FAISS inner product over the contexts' embeddings): the score then asks whether the
        explanation tells the firing context from the quiet ones most like it."""
        import faiss

        pos = [it.text for it in items if it.label]
        neg = [i for i, it in enumerate(items) if not it.label]  # positions of the quiet items
        if not pos or len(neg) <= self.hard_negatives:
            return items
        quiet = self.vectors([items[i].text for i in neg]).astype(np.float32)
        index = faiss.IndexFlatIP(quiet.shape[1])
        index.add(quiet)
        sims, ids = index.search(self.vectors(pos).astype(np.float32), len(neg))
        nearest = np.full(len(neg), -np.inf)
        np.maximum.at(nearest, ids.ravel(), sims.ravel())
        keep = {neg[j] for j in np.argsort(-nearest, kind="stable")[: self.hard_negatives]}
        return [it for i, it in enumerate(items) if it.label or i in keep]

    def vectors(self, texts: list[str]) -> np.ndarray:
        return embed_cached(self.embedder, texts)

    def values(self, jobs: list[tuple[str, list[Item]]]) -> list[np.ndarray]:
        # Contexts are shared between jobs (the same held-out set): embedded once, cached.
        self.vectors([x for x, _ in jobs] + [it.text for _, its in jobs for it in its])
        return [self.vectors([it.text for it in its]) @ self.vectors([x])[0] if its else np.zeros(0) for x, its in jobs]

    def statistic(self, values: np.ndarray, items: list[Item], weights: np.ndarray) -> np.ndarray:
        return auroc_weighted(values, [it.label for it in items], weights)
