"""The scorer interface: one small base class, one call, a typed result.

A scorer judges how well an explanation predicts where a neuron fires on held-out exemplars. It
turns exemplars into *items* (a word, a token or a context), gives each item a value from the
explanation alone, and reduces values to one score with its statistic. The judging model never
sees activations: they only decide each item's truth. Every score can carry an interval: the
statistic over bootstrap resamples of the held-out windows (items of one window share its text,
so windows, not items, are what is resampled).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from ..exemplars import Exemplar, Scale
from .metrics import bootstrap_counts, interval, outranked

# A case whose truth and 0-10 guess differ by more than this is shown to the refine agent.
MISTAKE_GAP = 2.0
# An exemplar is covered when its activating item outranks this share of the quiet items.
COVERED_AT = 0.75
BOOTSTRAP = 200  # resamples behind an interval
BOOTSTRAP_SEED = 0
ITEM_SETS = 32  # exemplar sets whose items a scorer keeps (a neuron's judges ask for about ten)


@dataclass(frozen=True)
class Item:
    """One judged unit of a held-out set."""

    exemplar: Exemplar
    pos: int  # the token the item is about: the simulated token, the word's strongest piece, the context's centre
    act: float  # the neuron's true activation there
    level: float  # that activation on the neuron's 0-10 scale
    label: bool  # whether the item counts as activating (positives of the AUROC scorers)
    text: str = ""  # what the judge reads (context scorers): the context, escaped
    word: str = ""  # the whole word (the reader judge's word items)
    before: str = ""  # the word before it
    family: str = ""  # the reader judge's two kinds of item: "word" or "context"


@dataclass
class ScoreResult:
    """A score of one explanation on one exemplar set, with the per-item detail behind it."""

    score: float  # the scorer's statistic (AUROC, Pearson r); NaN when the set cannot be scored
    items: list[Item]
    values: np.ndarray  # the judge's value per item (predicted level, cosine, P(yes))
    guesses: np.ndarray  # the values on the 0-10 scale, comparable with each item's level
    extra: dict  # other statistics of the same values (e.g. balanced accuracy)
    interval: tuple[float, float] = field(default=(math.nan, math.nan))  # 95 %, once ``Scorer.interval`` ran

    def mistakes(self, n: int = 2) -> tuple[list, list]:
        """(misses, false alarms): up to ``n`` items each whose guess is furthest below / above
        their true level, as (exemplar, position, guess) triples for the refine agent."""
        gaps = [(it.level - g, it, g) for it, g in zip(self.items, self.guesses)]
        misses = [(it.exemplar, it.pos, g) for d, it, g in sorted(gaps, key=lambda x: -x[0])[:n] if d > MISTAKE_GAP]
        alarms = [(it.exemplar, it.pos, g) for d, it, g in sorted(gaps, key=lambda x: x[0])[:n] if d < -MISTAKE_GAP]
        return misses, alarms


def rank_guesses(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each item's share of the other class it outranks (ties one half), x10: an activating item
    above every quiet one guesses 10, a quiet one below every activating one guesses 0."""
    v, y = np.asarray(values, dtype=np.float64), np.asarray(labels, dtype=bool)
    out = np.full(len(v), math.nan)
    if not y.any() or y.all():
        return out
    pos, neg = v[y], v[~y]
    out[y] = 10.0 * (outranked(pos, neg) / len(neg))  # share of quiet items this one outranks
    out[~y] = 10.0 * (1.0 - (len(pos) - outranked(neg, pos)) / len(pos))  # share of activating items it reaches
    return out


class Scorer(ABC):
    """Scores explanations of one neuron. Subclasses define items, values and the statistic;
    ``__call__`` batches many explanations in one pass of the judge."""

    name: str = ""
    metric_name: str = ""

    @abstractmethod
    def items(self, exemplars: list[Exemplar], scale: Scale) -> list[Item]:
        """The judged units of an exemplar set (deterministic)."""

    @abstractmethod
    def values(self, jobs: list[tuple[str, list[Item]]]) -> list[np.ndarray]:
        """The judge's value per item for each (explanation, items) job, in one batch."""

    @abstractmethod
    def statistic(self, values: np.ndarray, items: list[Item], weights: np.ndarray) -> np.ndarray:
        """The score for each row of item ``weights`` (resamples, items); one row of ones is the score."""

    def metric(self, values: np.ndarray, items: list[Item]) -> float:
        return float(self.statistic(values, items, np.ones((1, len(items))))[0]) if items else math.nan

    def guesses(self, values: np.ndarray, items: list[Item]) -> np.ndarray:
        """Values on the 0-10 scale of the items' levels. Default (ranking scorers): each item's
        rank against the other class (``rank_guesses``); with nothing to rank against, the items'
        own levels (no item is shown as a mistake)."""
        out = rank_guesses(values, np.array([it.label for it in items], dtype=bool))
        levels = np.array([it.level for it in items], dtype=np.float64)
        return np.where(np.isnan(out), levels, out)

    def extra(self, values: np.ndarray, items: list[Item]) -> dict:
        return {}

    def result(self, values: np.ndarray, items: list[Item]) -> ScoreResult:
        values = np.asarray(values, dtype=np.float64)
        score = self.metric(values, items) if items else math.nan
        return ScoreResult(score, items, values, self.guesses(values, items), self.extra(values, items))

    def interval(self, result: ScoreResult, n: int = BOOTSTRAP, seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
        """The score's 95 % bootstrap interval over the windows its items come from."""
        if not result.items or not math.isfinite(result.score):
            return math.nan, math.nan
        return interval(self.resampled(result.values, result.items, *self.draws(result.items, n, seed)))

    def draws(self, items: list[Item], n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``bootstrap_counts`` of the items' windows, drawn once per item list (they depend on the
        windows alone): every explanation scored on a set is resampled alike."""
        memo: dict = self.__dict__.setdefault("_draws", {})
        k = (id(items), n, seed)
        if k not in memo or memo[k][0] is not items:  # the memo holds its lists: an id is not reused meanwhile
            if len(memo) >= ITEM_SETS:
                del memo[next(iter(memo))]
            memo[k] = (items, bootstrap_counts([it.exemplar.window_id for it in items], n, seed))
        return memo[k][1]

    def resampled(self, values: np.ndarray, items: list[Item], counts: np.ndarray, groups: np.ndarray) -> np.ndarray:
        """The statistic on each resample: ``counts`` (resamples, groups) of each group drawn,
        ``groups`` each item's. By default from the items' weights; a scorer may do it faster."""
        return self.statistic(values, items, counts[:, groups])

    def item_set(self, exemplars: list[Exemplar], scale: Scale) -> list[Item]:
        """``items`` of an exemplar set, made once: a neuron's judges ask for the same sets (held
        out, validation, each mode's) call after call, and get the same list back each time (the
        last ITEM_SETS sets are kept), so what a scorer derives from a list is derived once too."""
        memo: dict = self.__dict__.setdefault("_item_sets", {})
        k = (tuple(exemplars), scale)
        if k not in memo:
            if len(memo) >= ITEM_SETS:
                del memo[next(iter(memo))]
            memo[k] = self.items(exemplars, scale)
        return memo[k]

    def __call__(self, jobs: list[tuple[str, list[Exemplar]]], scale: Scale) -> list[ScoreResult]:
        """A result per (explanation, exemplars) job; all jobs go to the judge in one batch."""
        item_sets = [self.item_set(exs, scale) for _, exs in jobs]
        vals = self.values([(x, its) for (x, _), its in zip(jobs, item_sets)])
        return [self.result(v, its) for v, its in zip(vals, item_sets)]

    def covered(self, result: ScoreResult) -> list[bool]:
        """Per exemplar of a result, whether the explanation accounts for it: its activating
        item's value is above COVERED_AT of the quiet items' values in the same set."""
        quiet = [v for it, v in zip(result.items, result.values) if not it.label]
        bar = float(np.quantile(quiet, COVERED_AT)) if quiet else -math.inf
        hits = {it.exemplar: v > bar for it, v in zip(result.items, result.values) if it.label}
        return [hits.get(ex, False) for ex in dict.fromkeys(it.exemplar for it in result.items)]

    def combine(self, per_explanation: list[np.ndarray]) -> np.ndarray:
        """A neuron's values from several modes' values on the same items: the best mode per item
        (an item fires the neuron when any of its modes explains it)."""
        return np.max(np.stack(per_explanation), axis=0)
