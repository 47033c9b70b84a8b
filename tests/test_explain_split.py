"""The split by window, the neuron's activation scale and marking whole words."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from explain_helpers import MONTHS, records

from neuronscope import exemplars as X

SENTENCES = [
    f"Report number {i} was filed in {m} by the clerk."
    for i, m in enumerate(
        [
            "January",
            "March",
            "May",
            "July",
            "August",
            "October",
            "June",
            "April",
            "December",
            "February",
            "November",
            "September",
            "March",
            "May",
            "July",
            "June",
        ]
    )
]
RANDOMS = [f"The river ran {i} miles past the old mill." for i in range(8)]
SIZES = X.SplitSizes(explain=8, heldout_top=3, heldout_random=3, validation_top=2, validation_random=2)


def _pools(n_top=16, strata=0) -> X.Pools:
    """Top and random exemplars; with ``strata``, that many strata re-using top and random windows
    (top-k is per token: a window can be in several kinds) beside windows of their own."""
    p = X.load(records(SENTENCES[:n_top], MONTHS, randoms=RANDOMS))
    if not strata:
        return p
    own = X.load(records(SENTENCES, MONTHS, randoms=[])).top
    layers = []
    for j in range(strata):
        mine = [dataclasses.replace(e, window_id=e.window_id + 10_000 * (j + 1)) for e in own[j::strata]]
        shared = [p.top[j], p.random[j]]  # duplicates of windows already in other kinds
        layers.append([dataclasses.replace(e, kind=f"quantile_{j}", rank=r) for r, e in enumerate(shared + mine)])
    return X.Pools(p.top, p.random, layers)


def _ids(xs):
    return [e.window_id for e in xs]


@pytest.mark.parametrize("n_top,strata", [(16, 0), (16, 2), (10, 3), (5, 0), (2, 1)])
def test_split_is_disjoint_by_window_deterministic_and_spread(n_top, strata):
    pools = _pools(n_top, strata)
    sp = X.split(pools, SIZES)
    parts = [_ids(sp.explain), _ids(sp.heldout), _ids(sp.validation), _ids(sp.feedback)]
    flat = [w for p in parts for w in p]
    assert len(flat) == len(set(flat)), "a window is in one part only, whatever kinds it was recorded under"
    assert pools.top[0] in sp.explain, "the best exemplar stays with the explainer"
    held_top = [e for e in sp.heldout if e.kind == "top"]
    assert held_top
    if n_top > 2:  # spread over the ranks, not bunched at the top
        assert max(e.rank for e in held_top) >= n_top // 2
    assert len(sp.explain) <= SIZES.explain
    assert _ids(X.split(pools, SIZES).heldout) == _ids(sp.heldout)
    # every distinct window of the pools is used or was not needed (randoms beyond the sizes)
    kinds = {w for e in pools.top + [x for s in pools.strata for x in s] for w in [e.window_id]}
    assert kinds <= set(flat)
    if strata:  # two of every three stratum windows score, the third decides
        held_q = [e for e in sp.heldout if e.kind.startswith("quantile_")]
        val_q = [e for e in sp.validation if e.kind.startswith("quantile_")]
        assert held_q and val_q and len(held_q) >= len(val_q)


def test_split_needs_two_top_windows():
    with pytest.raises(ValueError, match="at least 2 top"):
        X.split(_pools(1), SIZES)
    p = _pools(16)
    twice = X.Pools([p.top[0], dataclasses.replace(p.top[0], rank=1)], p.random)
    with pytest.raises(ValueError, match="distinct windows"):
        X.split(twice, SIZES)


def test_spread_indices():
    assert X.spread(16, 3) == [3, 8, 13]
    assert X.spread(10, 2) == [3, 8]
    assert 0 not in X.spread(4, 3)


def test_the_scale_follows_the_neurons_own_distribution():
    p = _pools()
    sparse = X.Scale.of(p.top, p.random)
    assert sparse.peak == max(max(e.activations) for e in p.top) and sparse.base == 0.0
    assert sparse.scaled([-1.0, 0.0, sparse.peak / 2, sparse.peak, 99]).tolist() == [0, 0, 5, 10, 10]
    # a dense neuron (fires on most text): its random text's median is its 0, so it has quiet words
    dense = [dataclasses.replace(e, activations=tuple(a + 2.0 for a in e.activations)) for e in p.random]
    s = X.Scale.of([dataclasses.replace(e, activations=tuple(a + 2.0 for a in e.activations)) for e in p.top], dense)
    assert 2.0 < s.base < s.peak
    assert (s.scaled(dense[0].activations) <= 1).all() and s.scaled([s.peak]).tolist() == [10]
    assert X.Scale(0.0).scaled([1.0]).tolist() == [0]


def test_a_words_peak_is_its_strongest_piece_whitespace_between_words_aside():
    from neuronscope.exemplars.words import word_peaks

    rng = np.random.default_rng(0)
    pieces = [" the", "Ros", "al", "ind", " ", "\n", ",", "'s", " ru", "pee", "!", " cell", "o", "  "]
    for _ in range(300):
        tokens = [pieces[i] for i in rng.integers(0, len(pieces), rng.integers(0, 16))]
        acts = rng.normal(size=len(tokens))
        ws, peaks = word_peaks(tokens, acts)
        assert peaks.tolist() == [max(acts[w.start : w.end]) for w in ws]
    # a loud whitespace piece between two words counts for neither
    assert word_peaks(["A", " ", "B"], [1.0, 9.0, 2.0])[1].tolist() == [1.0, 2.0]


def test_a_words_strongest_piece_is_found_first_among_ties():
    from neuronscope.exemplars.words import piece_words, word_maxima

    rng = np.random.default_rng(1)
    pieces = [" the", "Ros", "al", "ind", " ", "\n", ",", "'s", " ru", "pee", "!", " cell", "o", "  "]
    for _ in range(300):
        tokens = [pieces[i] for i in rng.integers(0, len(pieces), rng.integers(0, 16))]
        acts = rng.integers(0, 3, len(tokens)).astype(float)  # ties within a word are common
        ws, peaks, pos = word_maxima(tokens, acts)
        assert pos.tolist() == [w.start + int(np.argmax(acts[w.start : w.end])) for w in ws]
        assert peaks.tolist() == acts[pos].tolist()
        owner = piece_words(tokens)
        assert [owner[w.start : w.end].tolist() for w in ws] == [[j] * (w.end - w.start) for j, w in enumerate(ws)]
        assert all(t.isspace() for t, o in zip(tokens, owner) if o < 0)


def test_an_exemplar_keeps_its_hash_but_never_pickles_it():
    import pickle

    ex = X.Exemplar(3, "top", 0, ("The", " cat"), (0.0, 2.0), 1)
    h = hash(ex)
    assert hash(ex) == h == hash(X.Exemplar(3, "top", 0, ("The", " cat"), (0.0, 2.0), 1))
    data = pickle.dumps(ex)
    assert b"_hash" not in data  # a string's hash differs between processes
    back = pickle.loads(data)
    assert back == ex and hash(back) == h and {ex: 1}[back] == 1


def test_marking_and_whole_words():
    top = _pools().top
    scale = X.Scale(5.0)
    text = X.marked_text(top[0], scale)
    assert text.count("<<") == 1 and "<<" + top[0].tokens[top[0].max_pos].strip() + ">>" in text
    assert X.top_tokens(top[0], scale).endswith("(10)")
    # pieces of one word are marked, listed and counted as the word
    ex = X.Exemplar(
        1, "top", 0, ("The", " Ros", "al", "ind", " and", " Touch", "stone", "."), (0, 0, 5, 0, 0, 0, 4, 0), 2
    )
    assert X.marked_text(ex, scale, after=8) == "<text>The <<Rosalind>> and <<Touchstone>>.</text>"
    assert X.top_tokens(ex, scale) == "Rosalind (10), Touchstone (8)"
    assert X.activating(ex, scale) == "Rosalind, Touchstone"
    assert X.mode_tokens([ex, ex], scale) == ["Rosalind (2)", "Touchstone (2)"]
    assert X.lexical_explanation([ex], scale) == "Rosalind, Touchstone"
    assert X.shown_words([ex], scale) == {"rosalind", "touchstone"}
    assert np.isfinite(scale.levels(top[0].activations)).all()
