"""The reader judge: does the explanation pick out the words where the neuron fires, among the
words of held-out text, the way a reader checks it? The default decision scorer.

Items are the whole words (``exemplars.words``) of the held-out windows: a word *fires* when its
strongest piece reaches FIRES on the neuron's 0-10 scale, is *quiet* below QUIET, and is left out
in between. An explanation's value for a word is, per ``;``-separated alternative (the best one
counts, as modes combine):
- a *lexical claim* (``claims.py``: a list of words the explainer was shown firing) is read
  literally: 1 for the listed words, 0 for every other;
- any other text is read for its meaning: the weighted cosine of its embedding with the word's
  (alone, with the word before it — "my father" — and the word's whole window, each embedded once
  per process), plus 1 where it names the word itself among those it was shown.
The words' AUROC (firing vs quiet) counts half on all firing words and half on the firing words
the explainer was *not* shown (where there are NOVEL_MIN of them): an explanation earns credit
for predicting beyond the words it was given. Beside the words, the embedding scorer's contexts
(12 tokens around the firing token, and quiet stretches) are judged too, for what a phrase says
that its words alone do not; the score is ``WORDS`` x the words' AUROC + (1 - ``WORDS``) x the
contexts'.

The weights were chosen on the planted neurons of ``benchmarks/scorers.py``'s tuning set (the
best worst-kind win rate of the truth over false explanations); its held-out set and a published
set of neuron puzzles check them (figures in benchmarks/RESULTS.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..exemplars import Exemplar, Scale, escape, key, piece_words, word_maxima, words
from ..models.embedder import Lrus, embed_cached
from .claims import alternatives, lexical_claim, named
from .contexts import window_items
from .metrics import auroc_resampled, auroc_weighted
from .scorer import ITEM_SETS, Item, Scorer, rank_guesses

FIRES, QUIET = 2.0, 1.0  # a word fires at or above FIRES on the 0-10 scale, is quiet below QUIET
ALONE, PAIRED, WINDOW = 0.3, 0.3, 0.4  # how a word's meaning is read: alone, after its predecessor, in its window
PREDECESSOR = 0.5  # the word before, in the paired reading
NOVEL_MIN = 3  # firing words the explainer was not shown, needed to judge generalisation
WORDS = 0.7  # the words' share of the score; the rest is the contexts'

# Windows whose every word's reading a process keeps, by embedder: a run's neurons read the same
# corpus windows (the bundled corpus has 1,875), each about 27 words of 384 floats.
WINDOWS_READ = 2_048
_READ = Lrus(WINDOWS_READ)


def word_items(exemplars: list[Exemplar], scale: Scale) -> list[Item]:
    """The firing and quiet words of ``exemplars``, in text order."""
    out = []
    for ex in exemplars:
        words, peaks, pos = word_maxima(ex.tokens, ex.activations)
        levels = scale.levels(peaks)
        fires = levels >= FIRES
        kept = np.flatnonzero(fires | (levels < QUIET))
        for j, p, act, level, label in zip(
            kept.tolist(), pos[kept].tolist(), peaks[kept].tolist(), levels[kept].tolist(), fires[kept].tolist()
        ):
            out.append(Item(ex, p, act, level, label, "", words[j].text, words[j - 1].text if j else "", "word"))
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@dataclass(eq=False)
class _Prepared:
    """What the reader derives from one list of items whatever the explanation: the word items'
    readings and keys, the contexts' vectors, the masks its statistic takes. Made once per list
    (``Scorer.item_set`` hands the same list back), each part on first use."""

    scorer: ReaderScorer
    items: list[Item]

    @cached_property
    def words(self) -> list[int]:
        return [i for i, it in enumerate(self.items) if it.family == "word"]

    @cached_property
    def contexts(self) -> list[int]:
        return [i for i, it in enumerate(self.items) if it.family != "word"]

    @cached_property
    def readings(self) -> np.ndarray:
        return self.scorer._readings([self.items[i] for i in self.words])

    @cached_property
    def keys(self) -> tuple[list[str], np.ndarray]:
        """The word items' distinct keys, and each item's index among them: an explanation's
        claims are looked up once per distinct word."""
        distinct: dict[str, int] = {}
        index = [distinct.setdefault(key(self.items[i].word), len(distinct)) for i in self.words]
        return list(distinct), np.array(index, dtype=np.int64)

    @cached_property
    def context_vectors(self) -> np.ndarray:
        return self.scorer._vectors([self.items[i].text for i in self.contexts])

    @cached_property
    def levels(self) -> np.ndarray:
        return np.array([it.level for it in self.items], dtype=np.float64)

    @cached_property
    def masks(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(word items, activating items, activating word items the explainer was not shown)."""
        fam = np.array([it.family == "word" for it in self.items], dtype=bool)
        labels = np.array([it.label for it in self.items], dtype=bool)
        novel = fam & labels & np.array([key(it.word) not in self.scorer.shown for it in self.items], dtype=bool)
        return fam, labels, novel


class ReaderScorer(Scorer):
    """See the module doc. ``shown``: the keys (``exemplars.key``) of the words the explainer was
    shown firing (``exemplars.shown_words`` of the explain exemplars)."""

    name = "reader"
    metric_name = "auroc"

    def __init__(self, embedder, shown: frozenset[str] = frozenset()):
        self.embedder, self.shown = embedder, shown

    def items(self, exemplars: list[Exemplar], scale: Scale) -> list[Item]:
        return word_items(exemplars, scale) + window_items(exemplars, scale)

    def _vectors(self, texts: list[str]) -> np.ndarray:
        return embed_cached(self.embedder, texts)

    def _prepared(self, items: list[Item]) -> _Prepared:
        """The list's ``_Prepared``, made on its first use (the last ITEM_SETS lists are kept)."""
        memo: dict[int, _Prepared] = self.__dict__.setdefault("_prepared_sets", {})
        p = memo.get(id(items))  # the memo holds each list it keys: no other list has its id meanwhile
        if p is None:
            if len(memo) >= ITEM_SETS:
                del memo[next(iter(memo))]
            p = memo[id(items)] = _Prepared(self, items)
        return p

    def _readings(self, items: list[Item]) -> np.ndarray:
        """(items, dim): each word item's reading (``window_readings``' row of its word)."""
        if not items:
            return np.zeros((0, 0), np.float32)
        starts = [0] + [i for i in range(1, len(items)) if items[i].exemplar is not items[i - 1].exemplar]
        spans = list(zip(starts, starts[1:] + [len(items)]))
        tables = self.window_readings([items[a].exemplar.tokens for a, _ in spans])
        return np.concatenate(
            [
                t[piece_words(items[a].exemplar.tokens)[[it.pos for it in items[a:b]]]]
                for (a, b), t in zip(spans, tables)
            ]
        )

    def window_readings(self, windows: list[tuple[str, ...]]) -> list[np.ndarray]:
        """Per window, (its words, dim): each word's reading, the weighted sum of its vectors alone,
        paired with its predecessor, and in its window (a cosine with it is the weighted sum of
        theirs). Computed once per window and process: it depends on the text alone."""
        return _READ.of(self.embedder).get(windows, self._read)

    def _read(self, windows: list[tuple[str, ...]]) -> list[np.ndarray]:
        ws = [words(w) for w in windows]
        alone = self._vectors([x.text for one in ws for x in one])
        before = self._vectors([t for one in ws for t in [".", *(x.text for x in one)][: len(one)]])
        texts = [escape("".join(w)).strip() for w in windows]
        window = self._vectors([t for t, one in zip(texts, ws) for _ in one])
        every = ALONE * alone + PAIRED * _unit(alone + PREDECESSOR * before) + WINDOW * window
        return np.split(every, np.cumsum([len(one) for one in ws])[:-1])

    def _word_values(self, explanation: str, keys: tuple[list[str], np.ndarray], readings: np.ndarray) -> np.ndarray:
        distinct, index = keys

        def among(words: set[str]) -> np.ndarray:  # 1 for the items whose word is in ``words``
            return np.array([k in words for k in distinct], dtype=np.float64)[index]

        parts = []
        for alt in alternatives(explanation):
            claim = lexical_claim(alt, self.shown)
            if claim is not None:
                parts.append(among(claim))
                continue
            meaning = readings @ self._vectors([alt])[0]
            parts.append(meaning + among(named(alt, self.shown)))
        return np.max(parts, axis=0)

    def values(self, jobs: list[tuple[str, list[Item]]]) -> list[np.ndarray]:
        out = []
        for x, its in jobs:
            p = self._prepared(its)  # one held-out set's readings, for all its jobs
            v = np.zeros(len(its))
            if p.words:
                v[p.words] = self._word_values(x, p.keys, p.readings)
            if p.contexts:
                v[p.contexts] = p.context_vectors @ self._vectors([x])[0]
            out.append(v)
        return out

    def statistic(self, values: np.ndarray, items: list[Item], weights: np.ndarray) -> np.ndarray:
        w = np.atleast_2d(weights)
        labels = self._prepared(items).masks[1]
        return self._blend(items, lambda keep: auroc_weighted(values[keep], labels[keep], w[:, keep]))

    def resampled(self, values: np.ndarray, items: list[Item], counts: np.ndarray, groups: np.ndarray) -> np.ndarray:
        labels = self._prepared(items).masks[1]
        return self._blend(items, lambda keep: auroc_resampled(values[keep], labels[keep], groups[keep], counts))

    def _blend(self, items: list[Item], auroc) -> np.ndarray:
        """The score from ``auroc(mask)``, the AUROCs of the items a mask keeps (see the module doc)."""
        fam, labels, novel = self._prepared(items).masks
        words = auroc(fam)
        if novel.sum() >= NOVEL_MIN:
            words = 0.5 * words + 0.5 * auroc(novel | (fam & ~labels))
        contexts = auroc(~fam)
        both = WORDS * words + (1 - WORDS) * contexts
        return np.where(np.isnan(contexts), words, np.where(np.isnan(words), contexts, both))

    def extra(self, values: np.ndarray, items: list[Item]) -> dict:
        fam, labels, _ = self._prepared(items).masks
        one = np.ones((1, fam.sum()))
        return {"auroc_words": float(auroc_weighted(values[fam], labels[fam], one)[0]) if fam.any() else math.nan}

    def guesses(self, values: np.ndarray, items: list[Item]) -> np.ndarray:
        """Each item's rank against the other class of its own family (words, contexts)."""
        p = self._prepared(items)
        out, labels = p.levels.copy(), p.masks[1]
        for idx in (p.words, p.contexts):
            g = rank_guesses(values[idx], labels[idx])
            out[idx] = np.where(np.isnan(g), out[idx], g)
        return out

    def covered(self, result) -> list[bool]:
        """Per exemplar: its firing words outrank COVERED_AT of the quiet words (contexts aside)."""
        words = [i for i, it in enumerate(result.items) if it.family == "word"]
        sub = type(result)(
            result.score, [result.items[i] for i in words], result.values[words], result.guesses[words], {}
        )
        return super().covered(sub)
