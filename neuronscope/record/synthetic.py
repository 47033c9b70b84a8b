"""Planted neurons: RECORDS over real corpus windows whose activation rule is known.

A planted neuron fires on every token of one or more *concepts* (word sets, e.g. royal titles ∪
weapons). Its top exemplars are windows that contain exactly one concept of the whole concept
table, balanced over the neuron's concepts, so each top exemplar has one true semantic mode; its
random exemplars are uniform corpus windows with the same activation rule. This is the ground
truth that the explain stage's mode finding is measured against (and a records dataset like any
other: ``neuronscope explain`` reads it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ..errors import CorpusError
from ..schema import RECORDS, conform

# Concepts whose words are common in the bundled Shakespeare corpus and are single tokens.
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


def concept_sets(n_per: int, seed: int = 7, sizes=(1, 2, 3)) -> list[tuple[str, ...]]:
    """``n_per`` random concept combinations of each size in ``sizes`` (sorted names; reproducible)."""
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


def concept_of_tokens(
    tokenizer, windows: np.ndarray, concepts: dict[str, tuple[str, ...]]
) -> tuple[np.ndarray, np.ndarray]:
    """(concept index of every token of ``windows`` or -1, decoded text of every token).

    A token belongs to a concept when its text, stripped and lower-cased, is one of the concept's
    words and it is a whole word: no letter joins it to the token before or after ("dog" in
    "dogged" does not count). The first and last token of a window, whose neighbours are not
    seen, never count."""
    index = {w: c for c, words in enumerate(concepts.values()) for w in words}
    ids, inv = np.unique(windows, return_inverse=True)
    texts = tokenizer.batch_decode([[int(i)] for i in ids])
    word = np.array([index.get(t.strip().lower(), -1) for t in texts], dtype=np.int64)[inv].reshape(windows.shape)
    opens = np.array([not t[:1].isalpha() for t in texts])[inv].reshape(windows.shape)  # starts with a non-letter
    closes = np.array([not t[-1:].isalpha() for t in texts])[inv].reshape(windows.shape)  # ends with one
    alone = np.zeros(windows.shape, dtype=bool)
    alone[:, 1:-1] = (opens[:, 1:-1] | closes[:, :-2]) & opens[:, 2:]
    pieces = np.array(texts, dtype=object)[inv].reshape(windows.shape)
    return np.where(alone, word, -1), pieces


class ConceptWindows:
    """Corpus windows ((n, W) token ids) with the concept of each of their tokens: what neurons
    are planted over (labelled once, planted as often as wanted)."""

    def __init__(self, windows: np.ndarray, tokenizer, concepts: dict[str, tuple[str, ...]] = CONCEPTS):
        self.windows, self.names = windows, list(concepts)
        self.concept, self.pieces = concept_of_tokens(tokenizer, windows, concepts)  # (n, W) each
        present = np.stack([(self.concept == c).any(axis=1) for c in range(len(self.names))], axis=1)
        # per concept, the windows that hold it and no other concept
        self.clean = {c: np.flatnonzero(present[:, c] & (present.sum(axis=1) == 1)) for c in range(len(self.names))}

    def plant(
        self, neurons: list[tuple[str, ...]], top_k: int, random_k: int, layer: int = 0, seed: int = 0
    ) -> list[Planted]:
        """Planted neurons ``0..len(neurons)-1`` of ``layer``, each firing on the concepts it names.

        Activation: on a token of one of the neuron's concepts, a peak drawn per window from
        U(0.6, 1.0) (distinct ranks, strongest first); elsewhere, noise |N(0, 0.02)|."""
        unknown = sorted({c for n in neurons for c in n} - set(self.names))
        if unknown:
            raise ValueError(f"unknown concept(s) {unknown}; known: {self.names}")
        out = []
        for neuron, wanted in enumerate(neurons):
            rng = np.random.default_rng([seed, layer, neuron])
            cs = [self.names.index(c) for c in wanted]
            picks = self._top(cs, top_k, rng)
            top_ids = np.array([w for w, _ in picks])
            rest = np.setdiff1d(np.arange(len(self.windows)), top_ids)
            rnd_ids = rng.choice(rest, min(random_k, len(rest)), replace=False)
            acts = self._activations(cs, top_ids, rng)
            rows = [
                self._row(layer, neuron, kind, rank, int(w), acts[w])
                for kind, wids in (("top", top_ids), ("random", rnd_ids))
                for rank, w in enumerate(wids)
            ]
            table = conform(pa.Table.from_pylist(rows, schema=RECORDS), RECORDS)
            out.append(Planted(neuron, tuple(wanted), table, dict(picks)))
        return out

    def _top(self, cs: list[int], top_k: int, rng: np.random.Generator) -> list[tuple[int, str]]:
        """(window, concept) of the top exemplars: as many windows of each concept, taking turns
        so that the top_k cut keeps them balanced."""
        per = -(-top_k // len(cs))
        picks = []
        for c in cs:
            if len(self.clean[c]) < per:
                raise CorpusError(
                    f"only {len(self.clean[c])} windows hold {self.names[c]!r} alone; need {per} (a larger corpus)"
                )
            picks += [(int(w), self.names[c]) for w in rng.choice(self.clean[c], per, replace=False)]
        return [picks[i * per + j] for j in range(per) for i in range(len(cs))][:top_k]

    def _activations(self, cs: list[int], top_ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(n, W) activations of a neuron firing on the concepts ``cs``."""
        hot = np.isin(self.concept, cs)
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
