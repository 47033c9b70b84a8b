"""Semantic modes of a neuron's explain exemplars, two ways.

- ``modes_from_words`` (the default, activation-guided): each exemplar's activating words,
  embedded, compared by their rank against a reference vocabulary, joined by average linkage
  until no two groups are alike;
  k=1 unless the words fall apart, and a single concept phrased many ways stays one mode.
- ``modes_from_components`` (the paper): the agents' components, FAISS k-means with k chosen by
  silhouette, exemplars following their components by majority vote.
Both drop groups too small to be a mode (``MIN_MODE_SHARE``)."""

from __future__ import annotations

import math
import weakref
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ..models.embedder import embed, embed_cached

SEED = 1234
# Below this no split into k>1 modes counts as real structure. Calibrated on all-MiniLM-L6-v2:
# one heterogeneous concept's components score ~0.1, two distinct concepts ~0.23 and up.
MIN_SILHOUETTE = 0.2
# A mode is a pattern that recurs: a cluster holding fewer than this share of the exemplars is an
# outlier (one odd word, one parroted phrase), not a mode (Q2 in benchmarks/ measures the rule).
MIN_MODE_SHARE = 0.2

# Words joined while their groups' mean affinity is at least this. Affinity is the percentile of
# two words' cosine among each word's cosines to a reference vocabulary (``reference``): raw cosines
# of single words differ in level from one concept to the next (colours sit closer together than
# weapons), their rank against the whole vocabulary much less. Chosen on 192 planted word-set
# neurons (8 draws of record/synthetic.py's concept sets): 92 % right k, ARI 0.93 (raw cosine
# at its best threshold: 86 %); benchmarks/quality.py Q2 measures it on its own draw.
MERGE_AT = 0.95
# Single-word embeddings share a large common direction ("a word"); removing this share of the
# reference vocabulary's mean embedding lets the concept differences show.
CENTRE_WEIGHT = 0.5
# Every REFERENCE_STRIDE-th whole word of the embedder's own tokenizer vocabulary (~2k words for
# MiniLM): enough for stable percentiles (1k and 21k words gave the same Q2), embedded in seconds.
REFERENCE_STRIDE = 10

# keyed by the embedder object itself: an id() could be reused by a later embedder
_REFERENCES: weakref.WeakKeyDictionary[object, np.ndarray] = weakref.WeakKeyDictionary()


def silhouette(x: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette (Euclidean; singletons count 0, as in Rousseeuw's definition), or -1 where
    it is undefined (fewer than 2 clusters, or one per point)."""
    from sklearn.metrics import silhouette_score

    if not 2 <= len(np.unique(labels)) < len(x):
        return -1.0
    return float(silhouette_score(x, labels, metric="euclidean"))


def kmeans(x: np.ndarray, k: int, seed: int = SEED) -> np.ndarray:
    import faiss

    if k == 1:
        return np.zeros(len(x), dtype=np.int64)
    km = faiss.Kmeans(
        x.shape[1],
        k,
        niter=50,
        nredo=5,
        seed=seed,
        verbose=False,
        min_points_per_centroid=1,
        max_points_per_centroid=1_000_000,
    )
    km.train(x)
    return km.index.search(x, 1)[1][:, 0].astype(np.int64)


@dataclass
class Choice:
    k: int
    labels: np.ndarray
    silhouettes: dict[int, float]  # candidate k -> silhouette (k=1 not scored; components only)
    merges: list[float] = field(default_factory=list)  # words only: similarity of each join, in order


def choose_k(x: np.ndarray, max_k: int, min_silhouette: float = MIN_SILHOUETTE, seed: int = SEED, valid=None) -> Choice:
    """The k in 1..max_k with the best silhouette, or 1 when none clears ``min_silhouette``.
    ``valid(labels)`` can veto a clustering (e.g. one whose clusters win no exemplar)."""
    best = Choice(1, np.zeros(len(x), dtype=np.int64), {})
    top = min_silhouette
    for k in range(2, min(max_k, len(x) - 1) + 1):
        labels = kmeans(x, k, seed)
        s = silhouette(x, labels)
        best.silhouettes[k] = round(s, 4)
        if s > top and (valid is None or valid(labels)):
            top, best.k, best.labels = s, k, labels
    return Choice(best.k, best.labels, best.silhouettes)


def exemplar_modes(owner: list[int], labels: np.ndarray, n_exemplars: int) -> list[int]:
    """Mode per exemplar: majority vote of its components' clusters (ties: lowest cluster id),
    then modes renumbered 0.. by size (largest first, ties by first exemplar), so mode ids are
    dense and deterministic. ``owner[j]`` is the exemplar of component j."""
    votes: list[Counter[int]] = [Counter() for _ in range(n_exemplars)]
    for ex, lab in zip(owner, labels):
        votes[ex][int(lab)] += 1
    raw = [min(v, key=lambda c: (-v[c], c)) if v else 0 for v in votes]
    sizes = Counter(raw)
    order = sorted(sizes, key=lambda c: (-sizes[c], raw.index(c)))
    rename = {c: i for i, c in enumerate(order)}
    return [rename[c] for c in raw]


def _recurring(owner: list[int], n_exemplars: int):
    """Veto for choose_k: every cluster must win at least MIN_MODE_SHARE of the exemplars."""
    least = max(1, math.ceil(MIN_MODE_SHARE * n_exemplars))

    def valid(labels) -> bool:
        modes = exemplar_modes(owner, labels, n_exemplars)
        return len(set(modes)) == len(set(labels.tolist())) and min(Counter(modes).values()) >= least

    return valid


def modes_from_components(
    embedder, components: list[list[str]], max_modes: int, min_silhouette: float = MIN_SILHOUETTE
) -> tuple[list[int], Choice]:
    """NeuronScope's clustering: components embedded and clustered; exemplars follow them."""
    owner = [i for i, comps in enumerate(components) for _ in comps]
    flat = [c for comps in components for c in comps]
    if not flat:  # no exemplar has a feature of its own: one mode
        return [0] * len(components), Choice(1, np.zeros(0, dtype=np.int64), {})
    choice = choose_k(embed(embedder, flat), max_modes, min_silhouette, valid=_recurring(owner, len(components)))
    return exemplar_modes(owner, choice.labels, len(components)), choice


def reference(embedder) -> np.ndarray:
    """Unit embeddings of a fixed sample of whole words from the embedder's tokenizer vocabulary."""
    if embedder not in _REFERENCES:
        vocab = sorted(embedder.tokenizer.get_vocab().items(), key=lambda kv: kv[1])
        words = [w.lstrip("\u0120\u2581") for w, _ in vocab]  # GPT-2 / SentencePiece word-start marks
        words = [w for w in words if w.isascii() and w.isalpha() and len(w) >= 3]
        if len(words) < 100:
            raise ValueError(f"the embedder's vocabulary has {len(words)} whole words; need a word-level vocabulary")
        _REFERENCES[embedder] = embed(embedder, words[::REFERENCE_STRIDE])
    return _REFERENCES[embedder]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def word_vectors(embedder, words: list[str]) -> np.ndarray:
    """One centred unit vector per exemplar: the mean embedding of its activating words
    ("white, red"), lower-cased, minus CENTRE_WEIGHT x the reference vocabulary's mean."""
    parts = [[w.strip().lower() for w in s.split(",") if w.strip()] or [s.lower()] for s in words]
    flat = sorted({w for p in parts for w in p})
    vec = dict(zip(flat, embed_cached(embedder, flat)))
    centre = CENTRE_WEIGHT * reference(embedder).mean(axis=0)
    return _unit(np.stack([np.mean([vec[w] for w in p], axis=0) for p in parts]) - centre)


def affinity(embedder, x: np.ndarray) -> np.ndarray:
    """Symmetric pairwise affinity of centred vectors ``x``: for each pair, the share of the
    reference vocabulary that is less similar to one of them than the other is, averaged."""
    ref = _unit(reference(embedder) - CENTRE_WEIGHT * reference(embedder).mean(axis=0))
    to_vocab = np.sort(x @ ref.T, axis=1)
    sim = x @ x.T
    pct = np.stack([np.searchsorted(to_vocab[i], sim[i]) for i in range(len(x))]) / ref.shape[0]
    return (pct + pct.T) / 2


def agglomerate(sim: np.ndarray, max_modes: int, merge_at: float = MERGE_AT) -> tuple[np.ndarray, list[float]]:
    """Average-linkage groups of items with pairwise similarity ``sim``: join the most alike pair
    of groups while their mean similarity is >= ``merge_at``; then fold groups under
    MIN_MODE_SHARE into their nearest, and the nearest pairs until at most ``max_modes`` remain.
    (labels, join similarities)."""
    n = len(sim)
    groups = [[i] for i in range(n)]
    least = max(1, math.ceil(MIN_MODE_SHARE * n))
    merges = []

    def link(a, b):
        return float(sim[np.ix_(groups[a], groups[b])].mean())

    while len(groups) > 1:
        small = [g for g in range(len(groups)) if len(groups[g]) < least]
        pairs = [(a, b) for a in range(len(groups)) for b in range(a + 1, len(groups))]
        a, b = max(pairs, key=lambda ab: link(*ab))
        if link(a, b) < merge_at:
            if small:  # the smallest outlier group joins its nearest group
                a = min(small, key=lambda g: (len(groups[g]), g))
                b = max((g for g in range(len(groups)) if g != a), key=lambda g: link(a, g))
            elif len(groups) <= max_modes:
                break
        merges.append(round(link(a, b), 4))
        groups[min(a, b)] += groups[max(a, b)]
        del groups[max(a, b)]
    labels = np.zeros(n, dtype=np.int64)
    for g, members in enumerate(groups):
        labels[members] = g
    return labels, merges


def modes_from_words(
    embedder, words: list[str], max_modes: int, merge_at: float = MERGE_AT
) -> tuple[list[int], Choice]:
    """Activation-guided modes: ``words[i]`` is exemplar i's activating words ("sword, spear")."""
    if len(words) < 2:
        return [0] * len(words), Choice(1, np.zeros(len(words), dtype=np.int64), {})
    labels, merges = agglomerate(affinity(embedder, word_vectors(embedder, words)), max_modes, merge_at)
    modes = exemplar_modes(list(range(len(words))), labels, len(words))
    return modes, Choice(len(set(modes)), np.array(modes), {}, merges)
