"""The scorer's self-check: before a run trusts its judge, the judge must prefer a planted
concept's own name to the false explanations a judge is known to fall for, on a built-in set.

Each concept has sentences whose concept words fire (1.0, word-level tokens): the first SHOWN are
what an explainer would have been shown, the rest are scored, with a shared pool of plain
sentences (quiet). Every concept's scored set is judged with its own name (right) and with the
false explanations of ``stress`` that a concept without near misses or contexts has: the list of
words of its shown sentences, plain and in the neuron puzzles' phrasing (a judge that rewards word
lists prefers them), an over-general one, format garbage, and every other concept's name (kind
"other neuron"). A kind's discrimination is the share of pairs where the right name scores
higher; the judge passes when every kind's reaches PASS_AT.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from ..exemplars import Exemplar, Scale
from .scorer import Scorer
from .stress import Case, Truth, stress, win_rates

# Below this the judge is flagged: it prefers the right name not much more often than a coin.
PASS_AT = 0.8
SHOWN = 2  # a concept's first sentences: what its explainer would have seen
SCALE = Scale(1.0)  # the sentences' words fire at 1.0 or not at all

CONCEPTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "months of the year": (
        ("january", "february", "march", "april", "june", "july", "august", "october", "november", "december"),
        (
            "The old mill by the river was finally sold in October after years of neglect and quiet decay.",
            "We planted the beans in April and the first green shoots came up a fortnight later.",
            "Her brother always visits us in December, bringing presents and far too much cake for everyone.",
            "The bridge closed in March for repairs, so the whole village had to take the long road.",
            "By the end of July the pond had dried up and the frogs had gone somewhere cooler.",
            "The school trip was put off until February because half of the children had colds.",
        ),
    ),
    "animals": (
        ("horse", "dog", "owl", "fox", "cattle", "sheep", "goat", "badger", "hare"),
        (
            "At the edge of the wood an old fox watched the farmhouse, waiting for the lamps to go out.",
            "The tired horse stood in the rain while the men argued about the price of the cart.",
            "Every night an owl called from the barn roof and kept the children awake for hours.",
            "The shepherd counted his sheep twice before he closed the gate and walked down the hill.",
            "A badger had dug under the fence again and left a trail of earth across the lawn.",
            "The goat ate the washing off the line while everyone was busy in the kitchen.",
        ),
    ),
    "colours": (
        ("red", "blue", "green", "yellow", "purple", "white", "orange", "grey"),
        (
            "She wore a long purple coat that trailed behind her on the wet stones of the square.",
            "The door of the cottage was painted bright yellow, and the shutters were the same.",
            "Beyond the hedge lay a field so green that it almost hurt to look at it in the sun.",
            "He tied a red ribbon around the box and left it on the step for the morning.",
            "The sky over the harbour turned orange just before the storm reached the town.",
            "Her hair had gone completely grey by the time the letters finally stopped coming.",
        ),
    ),
    "family members": (
        ("mother", "father", "sister", "uncle", "grandmother", "cousin", "aunt", "nephew"),
        (
            "After the funeral her uncle stayed on at the house and nobody quite knew how to ask him to leave.",
            "My grandmother kept every letter in a tin under the bed, tied up with string.",
            "The boy wrote to his sister each week, though she rarely found the time to answer him.",
            "When the storm came her father went out to bring the boats higher up the beach.",
            "Our aunt arrived a day early and insisted on rearranging the whole kitchen.",
            "His nephew borrowed the car and brought it back with a dent in the door.",
        ),
    ),
    "foods": (
        ("bread", "cheese", "apples", "soup", "butter", "onions", "pie", "cake", "ham"),
        (
            "On the table there was fresh bread, a little cold meat and a jug of water for the guests.",
            "They ate the soup in silence, listening to the wind rattle the windows of the inn.",
            "The market woman sold apples from a basket and called out the price to everyone passing by.",
            "He cut a thick slice of cheese and wrapped it in paper for the long walk ahead.",
            "The pie had burnt at the edges, but nobody at the table said a word about it.",
            "She left the ham on the windowsill to cool and the cat found it within minutes.",
        ),
    ),
}
PLAIN = (
    "The meeting went on for most of the afternoon, and in the end nothing at all was decided by anyone.",
    "He folded the letter carefully, put it in his pocket and walked slowly back towards the station.",
    "It was later than she had thought, and the streets were empty except for a single passing car.",
    "They talked about the journey for a while and then fell silent as the light began to fade outside.",
    "Nobody could remember who had first suggested the plan, but by then it was far too late to change it.",
    "The clerk read the notice aloud twice so that everyone at the back of the hall could hear it clearly.",
)


def _exemplar(wid: int, text: str, hot: tuple[str, ...], kind: str, rank: int) -> Exemplar:
    toks = tuple(re.findall(r"\s*\S+", text))
    acts = tuple(1.0 if re.sub(r"[^a-z]", "", t.lower()) in hot else 0.0 for t in toks)
    return Exemplar(wid, kind, rank, toks, acts, int(np.argmax(acts)))


def calibration_sets() -> list[Case]:
    """Each concept as a stress case: its first SHOWN sentences explain, the rest and the plain
    pool are scored."""
    plain = [_exemplar(900 + i, s, (), "random", i) for i, s in enumerate(PLAIN)]
    out = []
    for c, (name, (words, sents)) in enumerate(CONCEPTS.items()):
        exs = [_exemplar(100 * c + i, s, words, "top", i) for i, s in enumerate(sents)]
        out.append(Case(Truth((name,)), exs[:SHOWN], exs[SHOWN:] + plain, SCALE))
    return out


@dataclass
class SelfCheck:
    """The judge's discrimination on the calibration set, as written into the manifest."""

    scorer: str
    discrimination: float  # the worst kind's share of pairs where the right name scores higher
    right_mean: float
    wrong_mean: float  # over every false explanation
    passed: bool
    seconds: float
    kinds: dict[str, float] = field(default_factory=dict)  # each kind's discrimination

    def as_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    def line(self) -> str:
        verdict = "passed" if self.passed else f"FAILED (below {PASS_AT:.2f}): its scores are uncalibrated"
        kinds = ", ".join(f"{k} {v:.0%}" for k, v in self.kinds.items())
        return (
            f"scorer self-check: {self.scorer} prefers the right concept name on "
            f"{self.discrimination:.0%} of pairs in its worst kind ({kinds}; right {self.right_mean:.3f} vs "
            f"false {self.wrong_mean:.3f}) - {verdict}"
        )


def _every_other(cases: Sequence[Case], i: int) -> list[Truth]:
    return [c.truth for j, c in enumerate(cases) if j != i]


def self_check(scorer_for: Callable[[frozenset[str]], Scorer]) -> SelfCheck:
    """Every concept's scored set judged with its name and each false explanation;
    ``scorer_for(shown)`` makes the scorer for a concept (the reader judge reads its shown words)."""
    t0 = time.time()
    trials = stress(scorer_for, calibration_sets(), others=_every_other)
    kinds = win_rates(trials)
    worst = min(kinds.values())
    rights = {t.case: t.right for t in trials}  # each concept's right score, once
    return SelfCheck(
        scorer_for(frozenset()).name,
        worst,
        float(np.nanmean(list(rights.values()))),
        float(np.nanmean([t.wrong for t in trials])),
        bool(worst >= PASS_AT),
        time.time() - t0,
        kinds,
    )
