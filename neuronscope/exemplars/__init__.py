"""A neuron's exemplars: the record of one window, its whole words, the neuron's activation scale,
the split by window, and the text the agents and judges read. A leaf: it imports nothing of
NeuronScope beyond itself."""

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
from .words import Word, key, word_at, word_peaks, words

__all__ = [
    "CONTEXT_AFTER",
    "CONTEXT_BEFORE",
    "FEEDBACK_RANDOM",
    "MARK_AT",
    "Exemplar",
    "Pools",
    "Scale",
    "Split",
    "SplitSizes",
    "Word",
    "activating",
    "describe",
    "escape",
    "fence",
    "key",
    "lexical_explanation",
    "load",
    "mark",
    "marked_text",
    "mode_tokens",
    "needed",
    "shown_words",
    "split",
    "spread",
    "strongest",
    "top_tokens",
    "word_at",
    "word_counts",
    "word_levels",
    "word_peaks",
    "words",
]
