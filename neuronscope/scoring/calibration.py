"""The scorer's self-check: before a run trusts its judge, the judge must tell a planted concept's
own name from another concept's name on a small built-in set.

Each concept has sentences whose concept words fire (1.0, word-level tokens) and shares a pool
of plain sentences (quiet). Every concept's set is scored with every concept's name; the
discrimination is the share of (right name, wrong name) pairs where the right one scores higher.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass

import numpy as np

from ..exemplars import Exemplar
from .metrics import pairwise_win

# Below this the judge is flagged: it prefers the right name not much more often than a coin.
PASS_AT = 0.8

CONCEPTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "months of the year": (
        ("january", "march", "april", "june", "october", "december"),
        (
            "The old mill by the river was finally sold in October after years of neglect and quiet decay.",
            "We planted the beans in April and the first green shoots came up a fortnight later.",
            "Her brother always visits us in December, bringing presents and far too much cake for everyone.",
            "The bridge closed in March for repairs, so the whole village had to take the long road.",
        ),
    ),
    "animals": (
        ("horse", "dog", "owl", "fox", "cattle", "sheep"),
        (
            "At the edge of the wood an old fox watched the farmhouse, waiting for the lamps to go out.",
            "The tired horse stood in the rain while the men argued about the price of the cart.",
            "Every night an owl called from the barn roof and kept the children awake for hours.",
            "The shepherd counted his sheep twice before he closed the gate and walked down the hill.",
        ),
    ),
    "colours": (
        ("red", "blue", "green", "yellow", "purple", "white"),
        (
            "She wore a long purple coat that trailed behind her on the wet stones of the square.",
            "The door of the cottage was painted bright yellow, and the shutters were the same.",
            "Beyond the hedge lay a field so green that it almost hurt to look at it in the sun.",
            "He tied a red ribbon around the box and left it on the step for the morning.",
        ),
    ),
    "family members": (
        ("mother", "father", "sister", "uncle", "grandmother", "cousin"),
        (
            "After the funeral her uncle stayed on at the house and nobody quite knew how to ask him to leave.",
            "My grandmother kept every letter in a tin under the bed, tied up with string.",
            "The boy wrote to his sister each week, though she rarely found the time to answer him.",
            "When the storm came her father went out to bring the boats higher up the beach.",
        ),
    ),
    "foods": (
        ("bread", "cheese", "apples", "soup", "butter", "onions"),
        (
            "On the table there was fresh bread, a little cold meat and a jug of water for the guests.",
            "They ate the soup in silence, listening to the wind rattle the windows of the inn.",
            "The market woman sold apples from a basket and called out the price to everyone passing by.",
            "He cut a thick slice of cheese and wrapped it in paper for the long walk ahead.",
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


def calibration_sets() -> dict[str, list[Exemplar]]:
    """Per concept: its sentences (top) and the plain pool (random), as exemplars."""
    plain = [_exemplar(900 + i, s, (), "random", i) for i, s in enumerate(PLAIN)]
    return {
        name: [_exemplar(100 * c + i, s, words, "top", i) for i, s in enumerate(sents)] + plain
        for c, (name, (words, sents)) in enumerate(CONCEPTS.items())
    }


@dataclass
class SelfCheck:
    """The judge's discrimination on the calibration set, as written into the manifest."""

    scorer: str
    discrimination: float  # share of (right, wrong) name pairs where the right name scores higher
    right_mean: float
    wrong_mean: float
    passed: bool
    seconds: float

    def as_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    def line(self) -> str:
        verdict = "passed" if self.passed else f"FAILED (below {PASS_AT:.2f}): its scores are uncalibrated"
        return (
            f"scorer self-check: {self.scorer} prefers the right concept name on "
            f"{self.discrimination:.0%} of pairs (right {self.right_mean:.3f} vs wrong "
            f"{self.wrong_mean:.3f}) - {verdict}"
        )


def self_check(scorer) -> SelfCheck:
    """Score every calibration concept's set with every concept's name."""
    t0 = time.time()
    sets = calibration_sets()
    names = list(sets)
    jobs = [(name, sets[c]) for c in names for name in names]
    scores = np.array([r.score for r in scorer(jobs, 1.0)]).reshape(len(names), len(names))
    right = np.repeat(np.diag(scores), len(names) - 1)
    wrong = scores[~np.eye(len(names), dtype=bool)]
    disc = pairwise_win(right, wrong)
    return SelfCheck(
        scorer.name,
        disc,
        float(np.nanmean(np.diag(scores))),
        float(np.nanmean(wrong)),
        bool(disc >= PASS_AT),
        time.time() - t0,
    )
