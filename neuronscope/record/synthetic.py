"""Planted neurons: RECORDS over real corpus windows whose activation rule is known.

A planted neuron fires on the whole words (``exemplars.words``: ``Ros|al|ind`` is one word) of one
or more *concepts* (word sets, e.g. royal titles ∪ weapons), on each word's last piece: the first
piece at which a causal model has read the whole word. A *context rule* narrows it to the words
right after given previous words ("family members after 'my'"): "his father" stays quiet. Its top
exemplars are windows where exactly one of its concepts fires, balanced over its concepts, so each
top exemplar has one true semantic mode; its random exemplars are uniform corpus windows with the
same activation rule. This is the ground truth that the explain stage's mode finding and the
judges are measured against (and a records dataset like any other: ``neuronscope explain`` reads
it).

Concept tables: CONCEPTS (the mode benchmark's), TUNING (the judge was tuned on it: with
multi-piece names, near misses and context rules) and HELD_OUT (never used in tuning, with
its own near misses): a judge's figures on HELD_OUT say whether its tuning generalises.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from ..errors import CorpusError
from ..exemplars import words
from ..schema import RECORDS, conform
from ..scoring.stress import Truth

# The mode benchmark's concepts: words common in the bundled Shakespeare corpus, most of them one token.
CONCEPTS: dict[str, tuple[str, ...]] = {
    "royal titles": ("king", "queen", "prince", "princess", "duke", "emperor", "crown"),
    "family members": ("father", "mother", "brother", "sister", "daughter", "uncle", "wife", "husband"),
    "body parts": ("hand", "hands", "eye", "eyes", "head", "face", "tongue", "arm", "cheek", "lips"),
    "number words": ("two", "three", "four", "five", "six", "seven", "ten", "twenty", "hundred", "thousand"),
    "animals": ("horse", "horses", "dog", "dogs", "lion", "wolf", "fox", "bird", "birds", "serpent"),
    "weapons": ("sword", "swords", "dagger", "spear", "shield", "armour", "arrow"),
    "colours": ("red", "white", "black", "green", "pale", "purple", "golden"),
    "place names": ("england", "france", "rome", "venice", "london", "scotland", "italy", "egypt", "wales"),
}


@dataclass(frozen=True)
class Context:
    """A context rule: fire only right after one of ``after`` (lower-case words)."""

    after: tuple[str, ...]
    said: str  # how a right explanation names it: "thy or your"
    wrong: str  # a context it does not fire after, as a false explanation names it: "my"


@dataclass(frozen=True)
class Rule:
    """What one planted neuron fires on: its concepts' words, after ``context`` where given."""

    concepts: tuple[str, ...]
    context: Context | None = None


@dataclass(frozen=True)
class ConceptTable:
    """Concepts (name -> lower-case words), each one's near miss, and the context rules planted."""

    concepts: dict[str, tuple[str, ...]]
    siblings: dict[str, str]  # a concept a reader would confuse with it (never planted beside it)
    contexts: dict[str, Context] = field(default_factory=dict)

    def sets(self, n_per: int, seed: int, sizes: Sequence[int] = (1, 2, 3)) -> list[tuple[str, ...]]:
        """``n_per`` random concept combinations of each size, none holding a concept and its
        near miss (that neuron's sibling explanation would be half right)."""
        rng, names, out = np.random.default_rng(seed), list(self.concepts), []
        for k in sizes:
            done = 0
            while done < n_per:
                cs = tuple(sorted(rng.choice(names, k, replace=False).tolist()))
                if not any(self.siblings.get(a) == b for a in cs for b in cs):
                    out.append(cs)
                    done += 1
        return out

    def rules(self, n_per: int, seed: int) -> list[Rule]:
        """``sets`` as rules, then one neuron per context rule."""
        return [Rule(cs) for cs in self.sets(n_per, seed)] + [Rule((c,), ctx) for c, ctx in self.contexts.items()]

    def truth(self, concepts: tuple[str, ...], context: Context | None = None) -> Truth:
        """The right explanation of a neuron of this table, in parts (``scoring.stress``)."""
        return Truth(
            concepts,
            tuple(self.siblings.get(c, "") for c in concepts),
            context.said if context else "",
            context.wrong if context else "",
        )


def _w(text: str) -> tuple[str, ...]:
    """A concept's words, written as one line."""
    return tuple(text.split())


TUNING = ConceptTable(
    {
        "royal titles": _w("king queen prince princess duke emperor crown majesty highness"),
        "family members": _w("father mother brother sister daughter uncle wife husband son niece cousin"),
        "body parts": _w("hand hands eye eyes head face tongue arm cheek lips heart blood"),
        "number words": _w("two three four five six seven ten twenty hundred thousand"),
        "animals": _w("horse horses dog dogs lion wolf fox bird birds serpent ass sheep"),
        "weapons": _w("sword swords dagger spear shield armour arrow rapier"),
        "colours": _w("red white black green pale purple golden"),
        "place names": _w("england france rome venice london scotland italy egypt wales padua"),
        # most of these are several pieces (" Ros|al|ind"): the neuron fires on the last
        "women's names": _w(
            "rosalind silvia beatrice hermia helena celia portia juliet viola olivia katherine julia isabella cressida titania"
        ),
        "men's names": _w(
            "claudio benedick proteus lysander demetrius falstaff bardolph orlando romeo pistol toby malvolio leonato hector pompey antonio sebastian petruchio"
        ),
        "emotions": _w("love hate fear grief joy sorrow anger rage despair pity shame"),
        "religion": _w("god heaven hell angel devil soul prayer prayers saint"),
        "currency and riches": _w("gold ducats crowns money coin purse pounds wealth"),
        "food and drink": _w("wine bread meat ale sack feast dinner supper beef"),
        "celestial bodies and weather": _w("sun moon stars wind rain storm clouds thunder"),
        "dying and killing": _w("death dead die grave tomb kill slain murder"),
    },
    {
        "royal titles": "military ranks",
        "family members": "friends and servants",
        "body parts": "clothing",
        "number words": "ordinal numbers",
        "animals": "insects",
        "weapons": "tools",
        "colours": "metals",
        "place names": "nationalities",
        "women's names": "men's names",
        "men's names": "women's names",
        "emotions": "virtues",
        "religion": "magic and fairies",
        "currency and riches": "merchants and trade",
        "food and drink": "cooking pots and dishes",
        "celestial bodies and weather": "landscape and hills",
        "dying and killing": "illness",
    },
    {
        "family members": Context(("my",), "my", "his or her"),
        "body parts": Context(("thy", "your"), "thy or your", "my"),
        "royal titles": Context(("the",), "the", "my or our"),
    },
)

HELD_OUT = ConceptTable(
    {
        "clothing": _w("cap coat cloak hat gown doublet hose sleeve shoes gloves"),
        "birds": _w("eagle crow dove owl lark raven falcon wren swan"),
        "trees and flowers": _w("rose roses oak lily flower flowers tree trees violet"),
        "seasons and times of day": _w("summer winter spring morning night evening noon midnight"),
        "war and soldiers": _w("soldier soldiers army captain battle war camp drum"),
        "buildings": _w("house castle tower chamber gate wall palace church abbey"),
        "trades and servants": _w("doctor priest friar lawyer merchant servant servants tailor"),
        "the sea": _w("sea ship ships waves shore sail tide ocean"),
        "virtues": _w("honour virtue mercy justice faith patience"),
        "sins and crimes": _w("sin sins treason lust pride envy theft"),
    },
    {
        "clothing": "jewellery",
        "birds": "insects",
        "trees and flowers": "fruits and vegetables",
        "seasons and times of day": "days of the week",
        "war and soldiers": "sports and games",
        "buildings": "furniture",
        "trades and servants": "noble ranks",
        "the sea": "rivers and lakes",
        "virtues": "vices",
        "sins and crimes": "virtues",
    },
)


def concept_sets(n_per: int, seed: int = 7, sizes=(1, 2, 3)) -> list[tuple[str, ...]]:
    """``n_per`` random concept combinations of CONCEPTS of each size in ``sizes`` (sorted names;
    reproducible)."""
    rng = np.random.default_rng(seed)
    names = list(CONCEPTS)
    return [tuple(sorted(rng.choice(names, k, replace=False).tolist())) for k in sizes for _ in range(n_per)]


@dataclass(frozen=True)
class Planted:
    """One planted neuron's records and its truth: the concept of each top exemplar."""

    neuron: int
    concepts: tuple[str, ...]
    table: pa.Table  # RECORDS rows
    truth: dict[int, str]  # window_id of each top exemplar -> its concept
    context: Context | None = None


def decode(tokenizer, windows: np.ndarray) -> np.ndarray:
    """The text of every token of ``windows``, (n, W) strings (each distinct id decoded once)."""
    ids, inv = np.unique(windows, return_inverse=True)
    texts = tokenizer.batch_decode([[int(i)] for i in ids])
    return np.array(texts, dtype=object)[inv].reshape(windows.shape)


def concept_words(pieces: np.ndarray, concepts: dict[str, tuple[str, ...]]) -> tuple[np.ndarray, np.ndarray]:
    """(concept index or -1, the word before, lower-cased) at the last piece of every concept word
    of the (n, W) token texts ``pieces``.

    A concept word is a whole word (``exemplars.words``) whose lower-cased text is in a concept:
    "dog" in "dogged" and "king" in "king's" are other words. A word at a window's edge never
    counts: a piece beyond the edge, unseen, might continue it."""
    index = {w: c for c, ws in enumerate(concepts.values()) for w in ws}
    n, width = pieces.shape
    concept = np.full((n, width), -1, dtype=np.int64)
    before = np.full((n, width), "", dtype=object)
    for r in range(n):
        ws = words(list(pieces[r]))
        for j, w in enumerate(ws):
            c = index.get(w.text.lower(), -1)
            if c >= 0 and w.start > 0 and w.end < width:
                concept[r, w.end - 1] = c
                before[r, w.end - 1] = ws[j - 1].text.lower() if j else ""
    return concept, before


def concept_of_tokens(
    tokenizer, windows: np.ndarray, concepts: dict[str, tuple[str, ...]]
) -> tuple[np.ndarray, np.ndarray]:
    """(concept index of every token of ``windows`` or -1, decoded text of every token): the index
    sits on the last piece of each concept word (``concept_words``)."""
    pieces = decode(tokenizer, windows)
    return concept_words(pieces, concepts)[0], pieces


class ConceptWindows:
    """Corpus windows ((n, W) token ids) with the concept words of each: what neurons are planted
    over (labelled once, planted as often as wanted)."""

    def __init__(self, windows: np.ndarray, tokenizer, concepts: dict[str, tuple[str, ...]] = CONCEPTS):
        self.windows, self.names = windows, list(concepts)
        self.pieces = decode(tokenizer, windows)
        self.concept, self.before = concept_words(self.pieces, concepts)  # (n, W) each

    def plant(
        self, neurons: Sequence[tuple[str, ...] | Rule], top_k: int, random_k: int, layer: int = 0, seed: int = 0
    ) -> list[Planted]:
        """Planted neurons ``0..len(neurons)-1`` of ``layer``, each firing by its rule (a tuple of
        concept names: those concepts, in any context).

        Activation: on the last piece of a word the rule fires on, a peak drawn per window from
        U(0.6, 1.0) (distinct ranks, strongest first); elsewhere, noise |N(0, 0.02)|."""
        rules = [n if isinstance(n, Rule) else Rule(tuple(n)) for n in neurons]
        unknown = sorted({c for r in rules for c in r.concepts} - set(self.names))
        if unknown:
            raise ValueError(f"unknown concept(s) {unknown}; known: {self.names}")
        return [self._neuron(neuron, rule, top_k, random_k, layer, seed) for neuron, rule in enumerate(rules)]

    def _neuron(self, neuron: int, rule: Rule, top_k: int, random_k: int, layer: int, seed: int) -> Planted:
        rng = np.random.default_rng([seed, layer, neuron])
        hot = [self._fires(c, rule.context) for c in rule.concepts]  # per concept, (n, W)
        picks = self._top(rule.concepts, hot, top_k, rng)
        top_ids = np.array([w for w, _ in picks])
        rest = np.setdiff1d(np.arange(len(self.windows)), top_ids)
        rnd_ids = rng.choice(rest, min(random_k, len(rest)), replace=False)
        acts = self._activations(np.logical_or.reduce(hot), top_ids, rng)
        rows = [
            self._row(layer, neuron, kind, rank, int(w), acts[w])
            for kind, wids in (("top", top_ids), ("random", rnd_ids))
            for rank, w in enumerate(wids)
        ]
        table = conform(pa.Table.from_pylist(rows, schema=RECORDS), RECORDS)
        return Planted(neuron, rule.concepts, table, dict(picks), rule.context)

    def _fires(self, concept: str, context: Context | None) -> np.ndarray:
        """(n, W): the tokens where a neuron firing on ``concept`` after ``context`` fires."""
        hot = self.concept == self.names.index(concept)
        if context is not None:
            at = np.nonzero(hot)
            hot[at] = [b in context.after for b in self.before[at]]
        return hot

    def _top(
        self, concepts: tuple[str, ...], hot: list[np.ndarray], top_k: int, rng: np.random.Generator
    ) -> list[tuple[int, str]]:
        """(window, concept) of the top exemplars: windows where exactly one of the neuron's
        concepts fires (other concepts' words may be there, quiet, as in real text), as many of
        each, taking turns so that the top_k cut keeps them balanced."""
        per = -(-top_k // len(concepts))
        fired = np.stack([h.any(axis=1) for h in hot], axis=1)  # (n, concepts)
        picks = []
        for i, c in enumerate(concepts):
            clean = np.flatnonzero(fired[:, i] & (fired.sum(axis=1) == 1))
            if len(clean) < per:
                raise CorpusError(f"only {len(clean)} windows hold {c!r} alone; need {per} (a larger corpus)")
            picks += [(int(w), c) for w in rng.choice(clean, per, replace=False)]
        return [picks[i * per + j] for j in range(per) for i in range(len(concepts))][:top_k]

    def _activations(self, hot: np.ndarray, top_ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(n, W) activations of a neuron firing at ``hot``."""
        acts = np.abs(rng.normal(0, 0.02, size=self.windows.shape)).astype(np.float32)
        peaks = rng.uniform(0.6, 1.0, size=len(self.windows)).astype(np.float32)
        # the top windows' peaks descend in the interleaved order, so every rank range (and so
        # every split of the ranks) holds the concepts in balance
        peaks[top_ids] = np.sort(peaks[top_ids])[::-1]
        return np.where(hot, peaks[:, None], acts)

    def _row(self, layer: int, neuron: int, kind: str, rank: int, w: int, a: np.ndarray) -> dict:
        """The RECORDS row of window ``w`` with activations ``a``."""
        return {
            "layer": layer,
            "neuron": neuron,
            "kind": kind,
            "rank": rank,
            "window_id": w,
            "tokens": self.pieces[w].tolist(),
            "token_ids": self.windows[w].astype(np.int32).tolist(),
            "activations": a.tolist(),
            "max_pos": int(a.argmax()),
            "max_act": float(a.max()),
        }
