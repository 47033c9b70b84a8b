"""The judges of explanations: scorers behind one interface, controls and the self-check."""

from __future__ import annotations

from collections.abc import Callable

from ..llm.agents import Agent
from .classifier import DetectionScorer, FuzzingScorer
from .embedding import EmbeddingScorer
from .judge import Judge
from .reader import ReaderScorer
from .scorer import Item, Scorer, ScoreResult
from .simulation import SimulationScorer

SCORERS = ("reader", "embedding", "simulation", "detection", "fuzzing")
LLM_SCORERS = ("simulation", "detection", "fuzzing")


def make_scorer(
    name: str, llm=None, embedder=None, agent: Agent | None = None, hard_negatives: int = 0, shown=frozenset()
) -> Scorer:
    """The scorer called ``name``: the reader and embedding scorers need ``embedder``
    (sentence-transformers; reader: ``shown``, the keys of the words the explainer was shown
    firing; embedding: ``hard_negatives``, keep only that many quiet contexts, the nearest to the
    activating ones), the others ``llm`` (the metered pool; ``agent`` names their ledger entry)."""
    if name in ("reader", "embedding"):
        if embedder is None:
            raise ValueError(f"the {name} scorer needs a sentence embedder")
        return (
            ReaderScorer(embedder, frozenset(shown)) if name == "reader" else EmbeddingScorer(embedder, hard_negatives)
        )
    cls: Callable[..., Scorer] | None = {
        "simulation": SimulationScorer,
        "detection": DetectionScorer,
        "fuzzing": FuzzingScorer,
    }.get(name)
    if cls is None:
        raise ValueError(f"unknown scorer {name!r}; known: {', '.join(SCORERS)}")
    if llm is None:
        raise ValueError(f"the {name} scorer needs an LLM")
    return cls(llm, agent) if agent else cls(llm)


__all__ = [
    "LLM_SCORERS",
    "SCORERS",
    "DetectionScorer",
    "EmbeddingScorer",
    "FuzzingScorer",
    "Item",
    "Judge",
    "ReaderScorer",
    "ScoreResult",
    "Scorer",
    "SimulationScorer",
    "make_scorer",
]
