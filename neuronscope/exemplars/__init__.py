"""A neuron's exemplars: the record of one window, the held-out split, and the text the agents
and judges read. A leaf: it imports nothing of NeuronScope beyond itself."""

from .records import Exemplar, load
from .split import FEEDBACK_RANDOM, VALIDATION_RANDOM, VALIDATION_TOP, Split, needed, split, spread
from .text import (
    CONTEXT_AFTER,
    CONTEXT_BEFORE,
    MARK_AT,
    activating,
    describe,
    escape,
    fence,
    mark,
    marked_text,
    mode_tokens,
    scaled,
    strongest,
    top_tokens,
)

__all__ = [
    "CONTEXT_AFTER",
    "CONTEXT_BEFORE",
    "FEEDBACK_RANDOM",
    "MARK_AT",
    "VALIDATION_RANDOM",
    "VALIDATION_TOP",
    "Exemplar",
    "Split",
    "activating",
    "describe",
    "escape",
    "fence",
    "load",
    "mark",
    "marked_text",
    "mode_tokens",
    "needed",
    "scaled",
    "split",
    "spread",
    "strongest",
    "top_tokens",
]
