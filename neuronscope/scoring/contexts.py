"""Window items for the scorers that judge text contexts (embedding, detection, fuzzing).

From every exemplar: one *positive* context centred on its max token when that token is marked
(>= MARK_AT on the neuron's 0-10 scale), and *negative* contexts from its quiet stretches (no
token in the context reaches QUIET), spaced so they do not overlap. Quiet stretches of top
exemplars are negatives too: they are the hard ones, the same document without the firing word.
"""

from __future__ import annotations

from ..exemplars import MARK_AT, Exemplar, Scale, escape
from ..exemplars import mark as mark_token
from .scorer import Item

BEFORE, AFTER = 8, 3  # a 12-token context: what precedes the token matters most to a causal LM
QUIET = 2  # a negative context has no token at or above this level
NEG_PER_WINDOW = 3


def context_text(ex: Exemplar, pos: int, mark: bool = False) -> str:
    """The tokens around ``pos``, escaped (no fence: a judge that reads prompts adds it); with
    ``mark``, the token at pos in <<>>."""
    lo, hi = max(0, pos - BEFORE), min(len(ex.tokens), pos + AFTER + 1)
    toks = [escape(t) for t in ex.tokens[lo:hi]]
    if mark:
        toks[pos - lo] = mark_token(toks[pos - lo])
    return "".join(toks).strip()


def window_items(exemplars: list[Exemplar], scale: Scale, mark: bool = False) -> list[Item]:
    """Positive and negative contexts of ``exemplars`` (see the module doc), in exemplar order."""
    out = []
    for ex in exemplars:
        levels = scale.scaled(ex.activations)
        if len(levels) and levels[ex.max_pos] >= MARK_AT:
            out.append(_item(ex, ex.max_pos, levels, True, mark))
        taken = 0
        # a window shorter than a context still gives one (clipped) context
        for pos in range(min(BEFORE, len(levels) - 1), len(levels), BEFORE + AFTER + 1):
            if taken == NEG_PER_WINDOW:
                break
            if levels[max(0, pos - BEFORE) : pos + AFTER + 1].max() < QUIET:
                out.append(_item(ex, pos, levels, False, mark))
                taken += 1
    return out


def _item(ex: Exemplar, pos: int, levels, label: bool, mark: bool) -> Item:
    text = context_text(ex, pos, mark)
    return Item(ex, pos, float(ex.activations[pos]), float(levels[pos]), label, text, family="context")
