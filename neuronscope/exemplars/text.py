"""Exemplars as the agents and judges read them: activations on a 0-10 scale, escaped corpus
text, the firing tokens marked ``<<like this>>``."""

from __future__ import annotations

from collections import Counter

import numpy as np

from .records import Exemplar

# Tokens at or above this share of the neuron's max top activation (on the 0-10 scale) are marked.
MARK_AT = 4
# Context shown to the explainer around the max token: the 135M explainer does best on short text.
CONTEXT_BEFORE, CONTEXT_AFTER = 16, 4


def scaled(acts, max_act: float) -> np.ndarray:
    """Activations on the 0-10 integer scale of the neuron's max top activation (negatives are 0)."""
    a = np.asarray(acts, dtype=np.float64)
    if max_act <= 0:
        return np.zeros_like(a, dtype=np.int64)
    return np.clip(np.rint(a / max_act * 10), 0, 10).astype(np.int64)


# Corpus text never contains '<' or '>' after escaping, so every <tag> and <<mark>> in a prompt
# is ours: corpus text cannot close the fence or pose as instructions outside it.
_ESCAPES = str.maketrans({"<": "‹", ">": "›", "\n": "⏎", "\r": "⏎", "\t": " "})


def escape(text: str) -> str:
    return text.translate(_ESCAPES)


def fence(text: str) -> str:
    """Corpus text between <text> tags, escaped so it cannot end the fence itself."""
    return f"<text>{escape(text)}</text>"


def mark(token: str) -> str:
    """An (escaped) token in <<...>>, its leading space kept outside the mark: ' <<May>>'."""
    body = token.lstrip()
    return f"{token[: len(token) - len(body)]}<<{body}>>"


def marked_text(ex: Exemplar, max_act: float, before: int = CONTEXT_BEFORE, after: int = CONTEXT_AFTER) -> str:
    """The context around the max token with high-activation tokens in <<...>>, fenced."""
    lo, hi = max(0, ex.max_pos - before), min(len(ex.tokens), ex.max_pos + after + 1)
    s = scaled(ex.activations, max_act)
    parts = []
    for i in range(lo, hi):
        tok = escape(ex.tokens[i])
        parts.append(mark(tok) if s[i] >= MARK_AT else tok)
    return "<text>" + "".join(parts).strip() + "</text>"


def strongest(ex: Exemplar, max_act: float, n: int = 3) -> list[int]:
    """Positions of the exemplar's (at most ``n``) marked tokens, strongest first; the max token
    when none is marked."""
    s = scaled(ex.activations, max_act)
    order = sorted(range(len(s)), key=lambda i: (-s[i], i))[:n]
    return [i for i in order if s[i] >= MARK_AT] or order[:1]


def top_tokens(ex: Exemplar, max_act: float, n: int = 3) -> str:
    """'January (10), May (6)': the exemplar's strongest tokens with their 0-10 activation."""
    s = scaled(ex.activations, max_act)
    return ", ".join(f"{escape(ex.tokens[i]).strip() or '␣'} ({s[i]})" for i in strongest(ex, max_act, n))


def describe(ex: Exemplar, max_act: float, before: int = CONTEXT_BEFORE) -> str:
    """The exemplar as the explainer agents see it (``before``: tokens of context before the max)."""
    return f"{marked_text(ex, max_act, before)}\nStrongest: {top_tokens(ex, max_act)}"


def activating(ex: Exemplar, max_act: float) -> str:
    """What activation-guided clustering embeds: the exemplar's activating words ("sword, spear"),
    so the embedding is of what fires, not of the rest of the window."""
    return ", ".join(ex.tokens[i].strip() for i in sorted(strongest(ex, max_act)))


def mode_tokens(exemplars: list[Exemplar], max_act: float, n: int = 6) -> list[str]:
    """The evidence a reader checks a mode's explanation against: its activating tokens (the
    marked ones of each exemplar) with how many exemplars they fire in, most frequent first."""
    counts = Counter(w for ex in exemplars for w in {ex.tokens[i].strip() or "␣" for i in strongest(ex, max_act)})
    return [f"{w} ({c})" for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]
