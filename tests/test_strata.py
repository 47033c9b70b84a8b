"""The strata against brute force while the running max rises: octaves fall out of the range,
their slots are reused, and merging actors whose ranges differ drops the lower strata."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from record_helpers import expected_strata

from neuronscope.record.bestk import PAD_CODE
from neuronscope.record.fold import LayerFold, token_codes
from neuronscope.record.hashing import strata_keys
from neuronscope.record.strata import NO_OCTAVE, octave
from neuronscope.record.topk import Counts

BINS, K, SEED, LAYER = 3, 2, 5, 1
COUNTS = Counts(2, 0, quantile_bins=BINS, quantile_k=K, negative=True, bottom_k=2)


def _rising(n_batches: int = 6, per: int = 12, t: int = 5, n: int = 4) -> list[torch.Tensor]:
    """Batches of windows whose values grow 4x per batch: the max climbs an octave pair each time.
    Neuron 3 is never positive (its positive strata stay empty); neuron 2 is positive only."""
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n_batches):
        a = torch.randn(per, t, n, generator=g) * 4.0**i
        a[:, :, 2] = a[:, :, 2].abs()
        a[:, :, 3] = -a[:, :, 3].abs()
        out.append(a)
    return out


def _fold(batches: list[torch.Tensor], order: list[int], actors: int = 1):
    """Fold the batches (window ids by position in ``batches``) in ``order``, dealt round-robin to
    ``actors`` folds, merged; also the first fold, for its slots."""
    per = len(batches[0])
    folds = [LayerFold(LAYER, torch.arange(batches[0].shape[2]), COUNTS, SEED) for _ in range(actors)]
    for i, b in enumerate(order):
        wids = torch.arange(b * per, (b + 1) * per)
        folds[i % actors].add(batches[b], token_codes(wids, batches[b].shape[1]))
    s = folds[0].finish()
    for f in folds[1:]:
        s.merge(f.finish())
    return s, folds[0]


def _check_against_brute_force(s, acts: torch.Tensor) -> int:
    """Every stratum of both sides equals brute force; returns the entries checked."""
    n_win, _, n = acts.shape
    checked = 0
    for side, sign in ((s.top, 1), (s.bottom, -1)):
        keys = strata_keys(SEED, LAYER, torch.arange(n), torch.arange(n_win), sign).numpy()
        for neuron in range(n):
            a = sign * acts[:, :, neuron].numpy()
            want = expected_strata(a, keys[:, neuron], BINS, K)
            for j in range(BINS):
                code = side.strata.code[neuron, j]
                got = (code[code != PAD_CODE] >> 20).tolist()
                assert got == want[j], (sign, neuron, j)
                for c, wid in enumerate(got):
                    assert side.strata.key[neuron, j, c] == keys[wid, neuron]
                    np.testing.assert_array_equal(side.strata.win[neuron, j, c], acts[wid, :, neuron].numpy())
                    assert side.strata.val[neuron, j, c] == sign * a[wid].max()
                checked += len(got)
    return checked


def test_strata_follow_a_rising_max_and_reuse_the_slots_of_dropped_octaves():
    batches = _rising()
    acts = torch.cat(batches)
    s, fold = _fold(batches, list(range(len(batches))))
    assert _check_against_brute_force(s, acts) > 0
    held = fold.sides[0].strata.held.view(-1, BINS)
    top = octave(acts[:, :, 0].max().reshape(1))[0]
    # neuron 0's slots hold exactly the octaves of its final range, each in slot octave mod BINS,
    # though the first batches put octaves 8-10 lower in them
    assert sorted(held[0].tolist()) == list(range(int(top) - BINS + 1, int(top) + 1))
    assert all(int(o) % BINS == slot for slot, o in enumerate(held[0]))
    first, _ = _fold(batches[:1], [0])
    assert first.top.strata.top[0] < s.top.strata.top[0] - BINS  # the first batch's range was dropped whole
    # neuron 3 is never positive, neuron 2 never negative: those sides hold nothing
    assert (s.top.strata.code[3] == PAD_CODE).all() and s.top.strata.top[3] == NO_OCTAVE
    assert (s.bottom.strata.code[2] == PAD_CODE).all()


@pytest.mark.parametrize(
    "order,actors",
    [
        ("reversed", 1),  # the max first: nothing is ever dropped
        ("shuffled", 1),
        ("forward", 2),  # one actor sees lower windows than the other: the merge drops its strata
        ("shuffled", 3),
    ],
)
def test_strata_do_not_depend_on_order_or_actors(order, actors):
    batches = _rising()
    n = len(batches)
    orders = {
        "forward": list(range(n)),
        "reversed": list(range(n))[::-1],
        "shuffled": np.random.default_rng(1).permutation(n).tolist(),
    }
    one, _ = _fold(batches, list(range(n)))
    other, _ = _fold(batches, orders[order], actors)
    for side in ("top", "bottom"):
        a, b = getattr(one, side).strata, getattr(other, side).strata
        for name in ("top", "key", "code", "val", "win"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=f"{side} {name}")
    _check_against_brute_force(other, torch.cat(batches))


def test_merging_summaries_keeps_the_smallest_keys_of_each_merged_octave():
    """Two actors: the strata of the union are those of all windows folded by one."""
    batches = _rising(n_batches=2, per=40)
    low, _ = _fold(batches, [0])  # windows 0-39, as one actor holds them
    high, _ = _fold(batches, [1])  # windows 40-79, 4x larger: the other actor's range is higher
    assert (low.top.strata.top[:3] < high.top.strata.top[:3]).all()
    low.merge(high)
    assert (low.top.strata.top == high.top.strata.top).all()
    _check_against_brute_force(low, torch.cat(batches))
