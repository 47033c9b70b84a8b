"""Whole words from subword pieces: the unit a reader (and a sentence embedder) understands.

A tokenizer splits rare words into pieces (SmolLM2: ``Ros|al|ind``, `` ru|pee``, `` cell|o``). A
piece continues the word before it when it starts with a letter or digit (or an apostrophe, as in
``'s``) and the piece before ends with a letter or digit; a piece led by whitespace or punctuation
starts a new word. Punctuation runs are words of their own; whitespace-only pieces belong to no
word. A word fires as strongly as its strongest piece.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# Windows whose words are kept per process: a run's neurons share the corpus windows, and a
# neuron's scorers read the same windows again and again.
WINDOWS_CACHED = 20_000


@dataclass(frozen=True)
class Word:
    text: str  # the joined pieces without surrounding whitespace: "Rosalind"
    start: int  # its first piece's position in the window
    end: int  # one past its last piece


def _continues(piece: str, before: str) -> bool:
    first = piece[:1]
    return bool(before) and before[-1:].isalnum() and (first.isalnum() or (first == "'" and len(piece) > 1))


def words(tokens: Sequence[str]) -> list[Word]:
    """The window's words, in order (whitespace-only pieces are in none)."""
    return list(_layout(tuple(tokens)).words)


@dataclass(frozen=True, eq=False)
class _Layout:
    """A window's words and the index arrays that reduce its pieces per word (shared, read-only)."""

    words: tuple[Word, ...]
    bounds: np.ndarray  # each word's start and end, interleaved: the segments of a ufunc's reduceat
    owner: np.ndarray  # each piece's word, -1 for a whitespace piece


@lru_cache(maxsize=WINDOWS_CACHED)
def _layout(tokens: tuple[str, ...]) -> _Layout:
    out: list[Word] = []
    start, text = 0, ""
    for i, piece in enumerate(tokens):
        if i and text and _continues(piece, tokens[i - 1]) and not piece[:1].isspace():
            text += piece
            continue
        if text.strip():
            out.append(Word(text.strip(), start, i))
        start, text = i, piece
    if text.strip():
        out.append(Word(text.strip(), start, len(tokens)))
    bounds = np.array([(w.start, w.end) for w in out], dtype=np.int64).reshape(-1)
    owner = np.full(len(tokens), -1, dtype=np.int64)
    for j, w in enumerate(out):
        owner[w.start : w.end] = j
    bounds.flags.writeable = owner.flags.writeable = False
    return _Layout(tuple(out), bounds, owner)


def piece_words(tokens: Sequence[str]) -> np.ndarray:
    """Each piece's index in ``words(tokens)``, -1 for a whitespace piece (read-only)."""
    return _layout(tuple(tokens)).owner


def word_peaks(tokens: Sequence[str], activations: Sequence[float]) -> tuple[list[Word], np.ndarray]:
    """The window's words and, per word, its strongest piece's activation."""
    lay = _layout(tuple(tokens))
    return list(lay.words), _peaks(lay, np.asarray(activations, dtype=np.float64))


def word_maxima(tokens: Sequence[str], activations: Sequence[float]) -> tuple[list[Word], np.ndarray, np.ndarray]:
    """The window's words, per word its strongest piece's activation, and that piece's position
    (the first, where pieces tie)."""
    lay, x = _layout(tuple(tokens)), np.asarray(activations, dtype=np.float64)
    peaks = _peaks(lay, x)
    if not lay.words:
        return [], peaks, np.zeros(0, dtype=np.int64)
    n = len(lay.owner)
    at_peak = (lay.owner >= 0) & (x == peaks[lay.owner])
    pos = np.minimum.reduceat(np.append(np.where(at_peak, np.arange(n), n), n), lay.bounds)[::2]
    return list(lay.words), peaks, pos


def _peaks(lay: _Layout, x: np.ndarray) -> np.ndarray:
    if not lay.words:
        return np.zeros(0)
    a = np.append(x, 0.0)  # a word may end at the last piece
    # the max over [start, end) of each word: the even segments of the reduction at start, end, start, ...
    return np.maximum.reduceat(a, lay.bounds)[::2]


def word_at(tokens: Sequence[str], pos: int) -> Word | None:
    """The word holding the piece at ``pos`` (None for a whitespace piece)."""
    return next((w for w in words(tokens) if w.start <= pos < w.end), None)


@lru_cache(maxsize=1 << 16)  # a scoring call keys every word item of its held-out text, most of them recurring
def key(text: str) -> str:
    """The form under which two mentions of a word are the same: lower case, without surrounding
    quotes and a plural or possessive ending."""
    w = text.lower().strip("\"'.,;:!?()[]")
    for end in ("'s", "s'"):
        if w.endswith(end):
            w = w[: -len(end)]
    return w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w
