"""Clustering on planted embeddings: k found for 1, 2 and 3 separated groups, deterministically."""

from __future__ import annotations

import numpy as np
import pytest
from fakes import FeatureEmbedder

from neuronscope.explain import cluster as C
from neuronscope.models.embedder import get_embedder


def _groups(k: int, per: int = 6, dim: int = 16, noise: float = 0.05, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.eye(dim)[:k] * 3
    x = np.concatenate([c + noise * rng.standard_normal((per, dim)) for c in centres]).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_k_is_recovered_for_separated_groups(k):
    x = _groups(k)
    choice = C.choose_k(x, max_k=4)
    assert choice.k == k
    if k > 1:  # each planted group lands in one cluster
        for g in range(k):
            assert len(set(choice.labels[g * 6 : (g + 1) * 6])) == 1
        assert len(set(choice.labels)) == k


def test_k1_when_nothing_clears_the_threshold():
    x = _groups(2)
    assert C.choose_k(x, 3, min_silhouette=0.999).k == 1
    noise = np.random.default_rng(1).standard_normal((12, 16)).astype(np.float32)
    assert C.choose_k(noise / np.linalg.norm(noise, axis=1, keepdims=True), 3).k == 1


def test_clustering_is_deterministic():
    x = _groups(3, noise=0.3)
    a, b = C.choose_k(x, 3), C.choose_k(x, 3)
    assert a.k == b.k and a.labels.tolist() == b.labels.tolist() and a.silhouettes == b.silhouettes


def test_silhouette_matches_definition():
    x = np.array([[0.0], [1.0], [10.0], [11.0]])
    labels = np.array([0, 0, 1, 1])
    # a = 1 for all; b = 10.5, 9.5, 9.5, 10.5 -> s = 1 - a / b
    assert C.silhouette(x, labels) == pytest.approx(np.mean([1 - 1 / 10.5, 1 - 1 / 9.5, 1 - 1 / 9.5, 1 - 1 / 10.5]))


def test_exemplars_follow_the_majority_of_their_components():
    owner = [0, 0, 0, 1, 1, 2, 3]
    labels = np.array([5, 5, 2, 2, 2, 7, 2])
    # exemplar 0: 5,5,2 -> 5; 1: 2; 2: 7; 3: 2 -> renumbered by size: 2 -> 0, 5 -> 1, 7 -> 2
    assert C.exemplar_modes(owner, labels, 4) == [1, 0, 2, 0]
    assert C.exemplar_modes([0, 0], np.array([3, 1]), 1) == [0], "ties go to the lowest cluster id"


def test_modes_from_components_end_to_end():
    comps = [["month name", "month after in"], ["number word"], ["month name"], ["number digit", "number"]]
    modes, choice = C.modes_from_components(FeatureEmbedder(), comps, max_modes=3)
    assert choice.k == 2 and modes[0] == modes[2] and modes[1] == modes[3] and modes[0] != modes[1]


def test_an_outlier_exemplar_is_not_a_mode():
    # ten month exemplars and one whose only component is odd: the odd one clusters apart (a high
    # silhouette) but holds under MIN_MODE_SHARE of the exemplars, so it joins the one mode
    comps = [["month name"]] * 10 + [["verb"]]
    modes, choice = C.modes_from_components(FeatureEmbedder(), comps, max_modes=3)
    assert choice.k == 1 and set(modes) == {0} and choice.silhouettes[2] > C.MIN_SILHOUETTE
    # the same odd group, recurring in a fifth of the exemplars, is a mode of its own
    modes, choice = C.modes_from_components(FeatureEmbedder(), [["month name"]] * 8 + [["verb"]] * 2, max_modes=3)
    assert choice.k == 2 and modes[-1] == modes[-2] != modes[0]


@pytest.mark.parametrize("k", [1, 2, 3])
def test_agglomeration_recovers_separated_groups(k):
    x = _groups(k, per=4, noise=0.3)
    labels, merges = C.agglomerate(x @ x.T, max_modes=3, merge_at=0.2)
    assert len(set(labels)) == k and len(merges) == len(x) - k
    for g in range(k):
        assert len(set(labels[g * 4 : (g + 1) * 4])) == 1


def test_agglomeration_folds_outliers_and_caps_the_modes():
    x = np.concatenate([_groups(1, per=9), _groups(2, per=1)[1:]])  # nine alike, one apart
    labels, _ = C.agglomerate(x @ x.T, max_modes=3, merge_at=0.2)
    assert set(labels) == {0}, "a group under MIN_MODE_SHARE of the exemplars joins its nearest"
    x = _groups(3, per=4)
    labels, _ = C.agglomerate(x @ x.T, max_modes=2, merge_at=0.2)
    assert len(set(labels)) == 2


@pytest.fixture(scope="module")
def minilm():
    return get_embedder("bundled:all-minilm-l6-v2")


@pytest.mark.parametrize(
    "concepts",
    [
        # one concept phrased many ways (different words, repeats, two at once) stays one mode
        [["sword", "dagger", "spear", "blade, sword", "axe", "sword", "lance", "swords"]],
        [["January", "march", "June", "October", "june, july", "december", "April", "May"]],
        [["january", "march", "june", "october"], ["iron", "copper", "silver", "gold"]],
        [["oak", "elm", "willow"], ["iron", "copper", "silver"], ["march", "june", "october"]],
        # related but distinct: raw cosine merged these (kings and swords are both "medieval")
        [["duke", "King", "king", "prince, prince"], ["sword", "sword", "swords", "spear"]],
    ],
)
def test_words_give_one_mode_per_concept(minilm, concepts):
    words = [w for c in concepts for w in c]
    truth = [i for i, c in enumerate(concepts) for _ in c]
    modes, choice = C.modes_from_words(minilm, words, max_modes=3)
    assert choice.k == len(concepts), (modes, choice.merges)
    assert len(set(zip(truth, modes))) == len(concepts), "each concept's words in one mode of their own"
