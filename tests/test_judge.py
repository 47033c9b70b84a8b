"""The judge's footing: whole words on the bundled tokenizer, a dense neuron scored, and intervals
that cover the truth as often as they say."""

from __future__ import annotations

import math

import numpy as np
import pytest
from explain_helpers import MONTH_SENTENCES, MONTHS, PLAIN_SENTENCES, planted, words

from neuronscope.exemplars import Exemplar, Scale, shown_words
from neuronscope.exemplars import words as whole_words
from neuronscope.scoring import ReaderScorer
from neuronscope.scoring.scorer import Item, Scorer


def test_whole_words_on_the_bundled_tokenizer():
    from transformers import AutoTokenizer

    from neuronscope.models.bundled import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("bundled:smollm2-135m").path)
    text = "Rosalind's rupee, the cello—and Touchstone's \"elbow\": 1599 years."
    pieces = [tok.decode([i]) for i in tok.encode(text, add_special_tokens=False)]
    assert "ru" in [p.strip() for p in pieces] and "cell" in [p.strip() for p in pieces]  # the pieces mislead
    got = [w.text for w in whole_words(pieces)]
    assert got == [
        "Rosalind's",
        "rupee",
        ",",
        "the",
        "cello",
        "—",
        "and",
        "Touchstone's",
        '"',
        "elbow",
        '":',
        "1599",
        "years",
        ".",
    ]
    # every piece but the lone space belongs to exactly one word, in order
    spans = [i for w in whole_words(pieces) for i in range(w.start, w.end)]
    assert spans == [i for i, p in enumerate(pieces) if p.strip()]


def _exemplars(sentences, kind, start, base, peak):
    out = []
    for i, s in enumerate(sentences):
        toks = tuple(words(s))
        acts = tuple(base + (peak - base) * a / 5 for a in planted(list(toks), MONTHS))
        out.append(Exemplar(start + i, kind, i, toks, acts, int(np.argmax(acts))))
    return out


@pytest.fixture(scope="module")
def minilm():
    from neuronscope.models.embedder import get_embedder

    return get_embedder("bundled:all-minilm-l6-v2")


def test_a_dense_neuron_is_scored_against_its_own_quiet_level(minilm):
    # fires at 3 on every token of every text, at 5 on month names: nothing is quiet in absolute terms
    top = _exemplars(MONTH_SENTENCES[:10], "top", 0, 3.0, 5.0)
    rnd = _exemplars(PLAIN_SENTENCES[:10], "random", 100, 3.0, 5.0)
    scale = Scale.of(top, rnd)
    assert scale.base == pytest.approx(3.0, abs=0.1)
    reader = ReaderScorer(minilm, frozenset(shown_words(top[:4], scale)))
    right, wrong = reader([("months of the year", top[4:] + rnd), ("animals", top[4:] + rnd)], scale)
    assert math.isfinite(right.score) and right.score > 0.9 and right.score > wrong.score + 0.2
    # with an absolute zero the same neuron has no quiet word and no score
    assert math.isnan(reader([("months of the year", top[4:] + rnd)], Scale(5.0))[0].score)


class MeanScorer(Scorer):
    """A scorer of known variance: the score is the mean of the items' values."""

    name = "mean"

    def items(self, exemplars, scale):
        return [Item(e, 0, 0.0, 0.0, True) for e in exemplars]

    def values(self, jobs):
        raise NotImplementedError  # the test hands values in

    def statistic(self, values, items, weights):
        return weights @ values / weights.sum(axis=1)


def test_the_95_percent_interval_covers_the_true_score_about_95_percent_of_the_time():
    scorer, rng, n, covered, widths = MeanScorer(), np.random.default_rng(3), 40, 0, []
    exemplars = [Exemplar(w, "random", w, ("x",), (0.0,), 0) for w in range(n)]
    items = scorer.items(exemplars, Scale(1.0))
    trials = 300
    for t in range(trials):
        result = scorer.result(rng.normal(0.5, 1.0, n), items)
        lo, hi = scorer.interval(result, seed=t)
        covered += lo <= 0.5 <= hi
        widths.append(hi - lo)
    assert 0.88 <= covered / trials <= 0.99
    assert np.mean(widths) == pytest.approx(2 * 1.96 / math.sqrt(n), rel=0.1)  # the width follows the variance
