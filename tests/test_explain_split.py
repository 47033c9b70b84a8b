"""Held-out split properties, 0-10 scaling and marking."""

from __future__ import annotations

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


def _load(n_top=16):
    return X.load(records(SENTENCES[:n_top], MONTHS, randoms=RANDOMS))


@pytest.mark.parametrize(
    "n_top,n_explain,h_top,h_rand", [(16, 8, 3, 3), (16, 8, 4, 4), (10, 6, 2, 2), (5, 8, 4, 4), (2, 8, 4, 0)]
)
def test_split_is_disjoint_deterministic_and_spread(n_top, n_explain, h_top, h_rand):
    top, rnd = _load(n_top)
    sp = X.split(top, rnd, n_explain, h_top, h_rand)
    ids = lambda xs: [e.window_id for e in xs]
    explain, held, val = set(ids(sp.explain)), set(ids(sp.heldout)), set(ids(sp.validation))
    assert not (explain & held) and not (explain & val) and not (held & val), "never score on explain exemplars"
    assert sp.explain and len(sp.explain) <= n_explain
    held_top = [e for e in sp.heldout if e.kind == "top"]
    assert 1 <= len(held_top) <= h_top and len([e for e in sp.heldout if e.kind == "random"]) == min(h_rand, len(rnd))
    assert top[0] in sp.explain, "the best exemplar stays with the explainer"
    ranks = [e.rank for e in held_top]
    if len(held_top) > 1:  # spread over the ranks, not bunched at the top
        assert max(ranks) >= n_top // 2
    assert ids(X.split(top, rnd, n_explain, h_top, h_rand).heldout) == ids(sp.heldout)
    assert sp.max_act == max(max(e.activations) for e in top)


def test_split_needs_two_top_exemplars():
    top, rnd = _load(1)
    with pytest.raises(ValueError, match="at least 2 top"):
        X.split(top, rnd, 8, 4, 4)


def test_spread_indices():
    assert X.spread(16, 3) == [3, 8, 13]
    assert X.spread(10, 2) == [3, 8]
    assert X.spread(3, 5) == [1, 2] or 0 not in X.spread(4, 3)


def test_scaling_and_marking():
    assert X.scaled([-1.0, 0.0, 2.5, 5.0, 7.0], 5.0).tolist() == [0, 0, 5, 10, 10]
    assert X.scaled([1.0], 0.0).tolist() == [0]
    top, _ = _load()
    text = X.marked_text(top[0], 5.0)
    assert text.count("<<") == 1 and "<<" + top[0].tokens[top[0].max_pos].strip() + ">>" in text
    assert X.top_tokens(top[0], 5.0).endswith("(10)")
    assert np.isfinite(X.scaled(top[0].activations, 5.0)).all()
