"""A neuron's exemplars: the record of one window, its whole words, the neuron's activation scale,
the split by window, the text the agents and judges read, and the negative view of its records.
A leaf: it imports nothing of NeuronScope beyond itself."""

from .polarity import NEGATIVE, POSITIVE, extremes, flipped, strong
from .records import Exemplar, Pools, load
from .scale import Scale
from .split import FEEDBACK_RANDOM, Split, SplitSizes, needed, split, spread
from .text import (
    CONTEXT_AFTER,
    CONTEXT_BEFORE,
    MARK_AT,
    activating,
    describe,
    escape,
    fence,
    lexical_explanation,
    mark,
    marked_text,
    mode_tokens,
    shown_words,
    strongest,
    top_tokens,
    word_counts,
    word_levels,
)
from .words import Word, key, piece_words, word_at, word_maxima, word_peaks, words

__all__ = [
    "CONTEXT_AFTER",
    "CONTEXT_BEFORE",
    "FEEDBACK_RANDOM",
    "MARK_AT",
    "NEGATIVE",
    "POSITIVE",
    "Exemplar",
    "Pools",
    "Scale",
    "Split",
    "SplitSizes",
    "Word",
    "activating",
    "describe",
    "escape",
    "extremes",
    "fence",
    "flipped",
    "key",
    "lexical_explanation",
    "load",
    "mark",
    "marked_text",
    "mode_tokens",
    "needed",
    "piece_words",
    "shown_words",
    "split",
    "spread",
    "strong",
    "strongest",
    "top_tokens",
    "word_at",
    "word_counts",
    "word_levels",
    "word_maxima",
    "word_peaks",
    "words",
]
