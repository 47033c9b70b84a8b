"""The reader judge's scores pinned: the same explanations on the same exemplars score the same
whatever the judge's internals do to go faster (shared scorers, cached draws, vectorised maths)."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
from explain_helpers import MONTH_SENTENCES, MONTHS, PLAIN_SENTENCES, words

from neuronscope.config import ExplainConfig
from neuronscope.exemplars import Exemplar, Scale, shown_words
from neuronscope.explain.judges import Judges
from neuronscope.llm.base import Ledger, Metered


class HashEmbedder:
    """A fixed random unit vector per text (seeded by the text), plus a shared direction for texts
    about months: scores that are neither 0, 1 nor tied, the same on every machine."""

    def encode(self, texts, **_):
        out = []
        for t in texts:
            v = np.random.default_rng(zlib.crc32(t.encode())).normal(size=16)
            v[0] += 3.0 * any(m.lower() in t.lower() for m in MONTHS | {"month"})
            out.append(v / np.linalg.norm(v))
        return np.array(out)


def _exemplars(sentences, kind, start):
    rng = np.random.default_rng(start)
    out = []
    for i, s in enumerate(sentences):
        toks = tuple(words(s))
        acts = tuple(float(5.0 * (t.strip(" ,.;") in MONTHS) + rng.uniform(0, 0.6)) for t in toks)
        out.append(Exemplar(start + i, kind, i, toks, acts, int(np.argmax(acts))))
    return out


EXPLAIN = _exemplars(MONTH_SENTENCES[:3], "top", 0)
HELDOUT = _exemplars(MONTH_SENTENCES[3:], "top", 10) + _exemplars(PLAIN_SENTENCES, "random", 100)
VALIDATION = _exemplars(MONTH_SENTENCES[:6], "top", 200) + _exemplars(PLAIN_SENTENCES[:4], "random", 300)
TEXTS = ["names of months", "calendar dates; the river", "January, March", "units of measurement", "a date"]


def _judged() -> list[tuple[float, float, float]]:
    """(score, interval low, high) of every text under each judge of a neuron, on validation then
    held out; the held-out ones with intervals, and the texts combined as modes are."""
    scale = Scale.of(EXPLAIN)
    cfg = ExplainConfig(scorer="reader", simulation_scores=False)
    judges = Judges.of(Metered(None, Ledger()), cfg, HashEmbedder(), scale, shown_words(EXPLAIN, scale)).decide
    out = []
    for judge in (judges.method, judges.baseline, judges.control):
        out += [(r.score, math.nan, math.nan) for r in judge([(t, VALIDATION) for t in TEXTS])]
        held = [judge.with_interval(r) for r in judge([(t, HELDOUT) for t in TEXTS])]
        out += [(r.score, *r.interval) for r in held]
        sc = judge.scorer
        both = judge.with_interval(sc.result(sc.combine([r.values for r in held[:2]]), held[0].items))
        out.append((both.score, *both.interval))
        out.append((float(np.sum(both.guesses)), sc.covered(held[0]).count(True), both.extra["auroc_words"]))
    return out


# computed by the judge before its speed-ups (the reader as of 2026-12-05's main)
PINNED = [
    (0.8186274509803921, math.nan, math.nan),
    (0.2903186274509804, math.nan, math.nan),
    (0.6875, math.nan, math.nan),
    (0.5604166666666667, math.nan, math.nan),
    (0.8334558823529411, math.nan, math.nan),
    (0.732900135578707, 0.6355483795772238, 0.8264782632187653),
    (0.32059904381332954, 0.19066068229419098, 0.4681203532892809),
    (0.6259615384615385, 0.5549431652046785, 0.6789930555555557),
    (0.5811500999001, 0.4927794248018357, 0.6650208505688153),
    (0.7432148208933924, 0.6430290131349744, 0.8506187908848428),
    (0.6067825032110747, 0.4990137240680099, 0.7202156341135945),
    (1146.6228414442699, 4.0, 0.5138483965014577),
]


def test_the_judges_scores_and_intervals_are_pinned():
    rows = _judged()
    assert len(rows) == 3 * len(PINNED), "each judge of the neuron: validation, held out, combined, guesses"
    for got, want in zip(rows, PINNED * 3):
        assert got == pytest.approx(want, abs=1e-9, nan_ok=True)
