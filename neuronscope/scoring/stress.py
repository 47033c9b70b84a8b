"""Stress kinds: the false explanations a judge must score below the truth, by kind.

Given a neuron whose truth is known (a planted one, or a self-check concept), each kind is a way
an explanation can sound right and be wrong:
- ``words``: the explain exemplars' top firing words as a list ("king, queen, duke"): a judge
  that reads meaning alone rewards it, as the list sits right on the firing words;
- ``words (puzzle form)``: the same words as published neuron puzzles phrase them
  ('instances of the words "king", "queen" and "duke"');
- ``over-general``: true of any text ("nouns");
- ``one concept only``: one of a polysemantic neuron's concepts;
- ``sibling``: a near miss in place of the first concept ("military ranks" for royal titles);
- ``wrong context``: a context neuron's concept after words it does not fire after;
- ``garbage``: the format debris a small explainer emits ("update (1");
- ``other neuron``: another neuron's truth, sharing no concept.
A kind's win rate is the share of (truth, false) pairs where the truth scores higher, ties one
half: ``benchmarks/scorers.py`` reports it per kind and the run's self-check (``calibration``)
requires it of every kind it can build.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..exemplars import Exemplar, Scale, Split, shown_words, word_counts
from .metrics import pairwise_win
from .scorer import Scorer

KINDS = (
    "words",
    "words (puzzle form)",
    "over-general",
    "one concept only",
    "sibling",
    "wrong context",
    "garbage",
    "other neuron",
)
GENERAL = ("nouns", "common English words", "words in a sentence", "various words", "adjectives and descriptors")
GARBAGE = ("update (1", "letter (1", "( 3 )", "the the", "Explanation: it")
TOP_WORDS = 5  # the words kind lists this many; its puzzle form quotes 3
PUZZLE_WORDS = 3


@dataclass(frozen=True)
class Truth:
    """A neuron's right explanation in parts, from which the false ones are made."""

    concepts: tuple[str, ...]
    siblings: tuple[str, ...] = ()  # each concept's near miss ("" for none)
    after: str = ""  # its context as the truth names it ("my"); "" when it fires anywhere
    wrong_after: str = ""  # a context it does not fire after ("his or her")

    def say(self, concepts: Sequence[str], after: str) -> str:
        """Concepts as an explanation: one ";"-separated alternative each (a neuron's modes)."""
        return "; ".join(f"{c} after '{after}'" if after else c for c in concepts)

    @property
    def text(self) -> str:
        return self.say(self.concepts, self.after)


@dataclass(frozen=True)
class Case:
    """A neuron to stress: its truth, what an explainer was shown, what is scored."""

    truth: Truth
    explain: list[Exemplar]
    heldout: list[Exemplar]
    scale: Scale


@dataclass(frozen=True)
class Trial:
    """The truth against one false explanation on one neuron's held-out exemplars."""

    case: int  # which neuron (its index among the cases stressed)
    kind: str
    false: str
    right: float
    wrong: float

    @property
    def win(self) -> float:
        return pairwise_win([self.right], [self.wrong])


def top_words(explain: list[Exemplar], scale: Scale, n: int = TOP_WORDS) -> list[str]:
    """The ``n`` words that fire in most explain exemplars (``exemplars.word_counts``)."""
    return [w for w, _ in word_counts(explain, scale)[:n]]


def puzzle_form(ws: Sequence[str]) -> str:
    """'instances of the words "a", "b" and "c"', the neuron puzzles' phrasing of a word list."""
    q = [f'"{w}"' for w in ws]
    return f"instances of the word {q[0]}" if len(q) == 1 else f"instances of the words {', '.join(q[:-1])} and {q[-1]}"


def false_explanations(
    truth: Truth, words: Sequence[str], index: int, others: Sequence[Truth]
) -> list[tuple[str, str]]:
    """(kind, explanation) for every kind that applies to ``truth``: ``words`` are the explain
    exemplars' top firing words, ``index`` picks among the fixed phrasings, ``others`` give the
    other-neuron kind (those sharing a concept are left out)."""
    out = []
    if words:
        out += [("words", ", ".join(words[:TOP_WORDS])), ("words (puzzle form)", puzzle_form(words[:PUZZLE_WORDS]))]
    out.append(("over-general", GENERAL[index % len(GENERAL)]))
    if len(truth.concepts) > 1:
        out += [("one concept only", truth.say([c], truth.after)) for c in truth.concepts]
    if truth.siblings and truth.siblings[0]:
        out.append(("sibling", truth.say([truth.siblings[0], *truth.concepts[1:]], truth.after)))
    if truth.after and truth.wrong_after:
        out.append(("wrong context", truth.say(truth.concepts, truth.wrong_after)))
    out.append(("garbage", GARBAGE[index % len(GARBAGE)]))
    out += [("other neuron", o.text) for o in others if not set(o.concepts) & set(truth.concepts)]
    return out


def contest(
    scorer_for: Callable[[frozenset[str]], Scorer],
    truth: str,
    falses: Sequence[tuple[str, str]],
    sets: Split,
    case: int = 0,
) -> list[Trial]:
    """``truth`` against each (kind, false explanation) on ``sets.heldout``, all in one call of the
    scorer that ``scorer_for(shown)`` makes (shown: the words of ``sets.explain`` firing)."""
    scorer = scorer_for(shown_words(sets.explain, sets.scale))
    scores = [r.score for r in scorer([(x, sets.heldout) for x in [truth, *(t for _, t in falses)]], sets.scale)]
    return [Trial(case, kind, text, scores[0], s) for (kind, text), s in zip(falses, scores[1:])]


def one_other(cases: Sequence[Case], i: int) -> list[Truth]:
    """The other-neuron kind's default: one other case sharing no concept, a different one per case."""
    own = set(cases[i].truth.concepts)
    others = [c.truth for c in cases if not set(c.truth.concepts) & own]
    return [others[i % len(others)]] if others else []


def stress(
    scorer_for: Callable[[frozenset[str]], Scorer],
    cases: Sequence[Case],
    others: Callable[[Sequence[Case], int], list[Truth]] = one_other,
) -> list[Trial]:
    """Every case's truth against its false explanations (``others(cases, i)``: the truths
    case ``i``'s other-neuron kind names)."""
    trials = []
    for i, c in enumerate(cases):
        falses = false_explanations(c.truth, top_words(c.explain, c.scale), i, others(cases, i))
        trials += contest(scorer_for, c.truth.text, falses, Split(c.explain, c.heldout, [], c.scale), i)
    return trials


def win_rates(trials: Sequence[Trial]) -> dict[str, float]:
    """Each kind's win rate of the truth, kinds in KINDS order (others after, as first met)."""
    kinds = sorted(dict.fromkeys(t.kind for t in trials), key=lambda k: KINDS.index(k) if k in KINDS else len(KINDS))
    return {k: float(np.mean([t.win for t in trials if t.kind == k])) for k in kinds}
