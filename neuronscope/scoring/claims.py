"""How the reader judge reads an explanation: its alternatives, and whether it is a word list.

An explanation may name several alternatives separated by ";" (one per semantic mode): a word
fires when any of them says so. An alternative made only of two or more words the explainer was
shown firing ("king, queen, duke"; 'instances of the words "red" and "black"') is a *lexical
claim*: a reader takes it literally, as predicting those words and no others, however much the
list resembles a category.
"""

from __future__ import annotations

import re

from ..exemplars.words import key

SEPARATORS = re.compile(r"\s*(?:,|;|/|\band\b|\bor\b)\s*", re.I)
# words that introduce a list without describing anything ("instances of the words ...")
INTRODUCERS = re.compile(
    r"^(?:(?:instances|occurrences|mentions|uses) of\s+)?(?:the\s+)?(?:words?|tokens?|terms?|names?)\s*(?:like|such as)?\s*"
    r"|^(?:e\.g\.|i\.e\.|such as|like|including)\s*",
    re.I,
)
WORD = re.compile(r"[A-Za-z0-9']+")


def alternatives(explanation: str) -> list[str]:
    """The explanation's ";"-separated alternatives (the whole text when there is one)."""
    return [p.strip() for p in explanation.split(";") if p.strip()] or [explanation]


def lexical_claim(text: str, shown: frozenset[str] | set[str]) -> set[str] | None:
    """The word keys a list of two or more shown words claims; None when ``text`` says anything more."""
    claimed = []
    for part in SEPARATORS.split(text):
        part = INTRODUCERS.sub("", part.strip()).strip(" \"'.:")
        if not part:
            continue
        if len(part.split()) != 1 or key(part) not in shown:
            return None
        claimed.append(key(part))
    return set(claimed) if len(claimed) >= 2 else None


def named(text: str, shown: frozenset[str] | set[str]) -> set[str]:
    """The shown words that ``text`` names."""
    return {key(w) for w in WORD.findall(text)} & shown
