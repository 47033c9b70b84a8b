"""Exemplars as the agents and judges read them: whole words (subword pieces joined), activations
on the neuron's 0-10 scale, escaped corpus text, the firing words marked ``<<like this>>``."""

from __future__ import annotations

from collections import Counter

import numpy as np

from .records import Exemplar
from .scale import Scale
from .words import Word, key, word_peaks

# Words at or above this level of the neuron's 0-10 scale fire: they are marked and listed.
MARK_AT = 4
# Context shown to the explainer around the max token: the 135M explainer does best on short text.
CONTEXT_BEFORE, CONTEXT_AFTER = 16, 4

# Corpus text never contains '<' or '>' after escaping, so every <tag> and <<mark>> in a prompt
# is ours: corpus text cannot close the fence or pose as instructions outside it.
_ESCAPES = str.maketrans({"<": "‹", ">": "›", "\n": "⏎", "\r": "⏎", "\t": " "})


def escape(text: str) -> str:
    return text.translate(_ESCAPES)


def fence(text: str) -> str:
    """Corpus text between <text> tags, escaped so it cannot end the fence itself."""
    return f"<text>{escape(text)}</text>"


def mark(token: str) -> str:
    """An (escaped) word in <<...>>, its leading space kept outside the mark: ' <<May>>'."""
    body = token.lstrip()
    return f"{token[: len(token) - len(body)]}<<{body}>>"


def word_levels(ex: Exemplar, scale: Scale) -> tuple[list[Word], np.ndarray]:
    """The exemplar's words and each one's level on the 0-10 integer scale (its strongest piece)."""
    words, peaks = word_peaks(ex.tokens, ex.activations)
    return words, scale.scaled(peaks)


def marked_text(ex: Exemplar, scale: Scale, before: int = CONTEXT_BEFORE, after: int = CONTEXT_AFTER) -> str:
    """The whole words around the max token, the firing ones in <<...>>, fenced."""
    words, levels = word_levels(ex, scale)
    lo, hi = max(0, ex.max_pos - before), min(len(ex.tokens), ex.max_pos + after + 1)
    shown = [(w, lv) for w, lv in zip(words, levels) if w.end > lo and w.start < hi]
    if not shown:
        return "<text></text>"
    parts, at = [], shown[0][0].start
    for w, lv in shown:
        parts.append(escape("".join(ex.tokens[at : w.start])))  # whitespace pieces between words
        text = escape("".join(ex.tokens[w.start : w.end]))
        parts.append(mark(text) if lv >= MARK_AT else text)
        at = w.end
    return "<text>" + "".join(parts).strip() + "</text>"


def strongest(ex: Exemplar, scale: Scale, n: int = 3) -> list[tuple[Word, int]]:
    """The exemplar's (at most ``n``) firing words with their levels, strongest first; its
    strongest word when none fires."""
    words, levels = word_levels(ex, scale)
    order = sorted(range(len(words)), key=lambda i: (-levels[i], words[i].start))[:n]
    picked = [i for i in order if levels[i] >= MARK_AT] or order[:1]
    return [(words[i], int(levels[i])) for i in picked]


def top_tokens(ex: Exemplar, scale: Scale, n: int = 3) -> str:
    """'Rosalind (10), May (6)': the exemplar's strongest words with their 0-10 level."""
    return ", ".join(f"{escape(w.text) or '␣'} ({lv})" for w, lv in strongest(ex, scale, n))


def describe(ex: Exemplar, scale: Scale, before: int = CONTEXT_BEFORE) -> str:
    """The exemplar as the explainer agents see it (``before``: tokens of context before the max)."""
    return f"{marked_text(ex, scale, before)}\nStrongest: {top_tokens(ex, scale)}"


def activating(ex: Exemplar, scale: Scale) -> str:
    """What activation-guided clustering embeds: the exemplar's firing words in text order
    ("sword, spear"), so the embedding is of what fires, not of the rest of the window."""
    return ", ".join(w.text for w, _ in sorted(strongest(ex, scale), key=lambda wl: wl[0].start))


def word_counts(exemplars: list[Exemplar], scale: Scale) -> list[tuple[str, int]]:
    """The firing words of ``exemplars`` with the number of exemplars each fires in, most
    frequent first (ties alphabetical)."""
    counts = Counter(w for ex in exemplars for w in {w.text or "␣" for w, _ in strongest(ex, scale)})
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def mode_tokens(exemplars: list[Exemplar], scale: Scale, n: int = 6) -> list[str]:
    """The evidence a reader checks a mode's explanation against: its firing words with how many
    exemplars they fire in, most frequent first: ["Rosalind (3)", ...]."""
    return [f"{w} ({c})" for w, c in word_counts(exemplars, scale)[:n]]


def lexical_explanation(exemplars: list[Exemplar], scale: Scale, n: int = 5) -> str:
    """The words baseline: the ``n`` most frequent firing words ("king, queen, duke"), what an
    explanation must say more than."""
    return ", ".join(w for w, _ in word_counts(exemplars, scale)[:n])


def shown_words(exemplars: list[Exemplar], scale: Scale) -> frozenset[str]:
    """The keys (``words.key``) of every word that fires in ``exemplars``: what an explainer shown
    them was shown firing."""
    out: set[str] = set()
    for ex in exemplars:
        words, levels = word_levels(ex, scale)
        out.update(key(w.text) for w, lv in zip(words, levels) if lv >= MARK_AT)
    return frozenset(out)
