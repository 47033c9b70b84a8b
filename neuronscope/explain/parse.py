"""Strict parsers of agent answers. Each returns the parsed value or raises ParseError with a
short reason that is sent back to the agent as the corrective follow-up."""

from __future__ import annotations

import re
from collections import Counter


class ParseError(ValueError):
    pass


MAX_COMPONENTS = 6
_BULLET = re.compile(r"^\s*[-*•]\s+(.*\S)\s*$")
_EXPLANATION = re.compile(r"^\s*explanation\s*:\s*(.*?)\s*$", re.I)
# Our own prompt markup echoed back: <<mark>> brackets, <text> fences, "(10)"-style levels.
_ECHOES = re.compile(r"<<|>>|</?text>|\s*\(\d{1,2}\)")


_QUOTES = {'"': '"', "'": "'", "`": "`", "“": "”"}


def _clean(phrase: str) -> str:
    """Trailing full stop and one pair of wrapping quotes removed; inner quotes kept."""
    p = phrase.strip().rstrip(".").strip()
    if len(p) >= 2 and _QUOTES.get(p[0]) == p[-1]:
        p = p[1:-1].strip().rstrip(".").strip()
    return p


def components(answer: str, truncated: bool = False, drop: frozenset[str] = frozenset()) -> list[str]:
    """A '- item' list, one short feature per line. An optional first line ending with ':' is a
    heading; any other non-list line means the format was not followed. When the answer hit the
    token limit (``truncated``), its last line is incomplete and is dropped. Features in ``drop``
    (lower case: the prompt's example answer) are left out, even if none is left: a small model
    repeats the example's features for texts they do not fit."""
    lines = [ln for ln in answer.strip().splitlines() if ln.strip()]
    if truncated and len(lines) > 1:
        lines = lines[:-1]
    if lines and not _BULLET.match(lines[0]) and lines[0].rstrip().endswith(":"):
        lines = lines[1:]
    if not lines:
        raise ParseError("the answer has no '- ' lines")
    items: list[str] = []
    too_long = []
    for ln in lines:
        m = _BULLET.match(ln)
        if not m:
            raise ParseError(f"line {ln.strip()[:60]!r} does not start with '- '")
        item = _clean(m.group(1))
        if len(item.split()) > 8:
            too_long.append(item)  # an over-long feature is not one: dropped, if others are well formed
        elif item and item.lower() not in (i.lower() for i in items):
            items.append(item)
    if too_long and not items:
        raise ParseError(f"feature {too_long[0][:60]!r} must be 1 to 8 words")
    if len(items) > MAX_COMPONENTS:
        raise ParseError(f"{len(items)} features; give at most {MAX_COMPONENTS}")
    return [i for i in items if i.lower() not in drop]


def example_features(conversation) -> frozenset[str]:
    """The features of a conversation's few-shot answers (its assistant turns), lower case."""
    out: set[str] = set()
    for m in conversation:
        if m["role"] == "assistant":
            out.update(_clean(b.group(1)).lower() for b in map(_BULLET.match, m["content"].splitlines()) if b)
    return frozenset(out)


def explanation(answer: str, truncated: bool = False) -> str:
    """The phrase of the first 'Explanation: <phrase>' line (other lines are not read). Our own
    markup copied from the prompt (<<mark>> brackets, "(10)" levels) is removed, so an explanation is always plain text
    (it is later put into the simulator prompt). A ``truncated`` phrase is kept: the token limit
    is what bounds an explanation's length."""
    for ln in answer.splitlines():
        m = _EXPLANATION.match(ln)
        if m:
            phrase = _clean(_ECHOES.sub("", m.group(1)))
            if not phrase:
                raise ParseError("the Explanation line is empty")
            if len(phrase.split()) > 25:
                raise ParseError("the explanation is longer than 25 words")
            if "<" in phrase or ">" in phrase:
                raise ParseError("the explanation must be plain words, without < or >")
            return _not_looping(_unique_items(phrase))
    raise ParseError("no line starts with 'Explanation:'")


# A word said this often in one explanation is a small model looping ("England, England, England"),
# not a description.
MAX_REPEATS = 2


def _unique_items(phrase: str) -> str:
    """A list that names one item again and again ("England, England, France") keeps each once: a
    small model loops over its list; the items themselves are still the answer."""
    items = [i.strip() for i in phrase.split(",")]
    seen: list[str] = []
    for item in items:
        if item and item.lower() not in (s.lower() for s in seen):
            seen.append(item)
    return ", ".join(seen) if len(seen) < len(items) else phrase


def _most_repeated(phrase: str) -> tuple[str, int]:
    counts = Counter(w for w in _WORDS.findall(phrase.lower()) if len(w) > 3)  # short function words may recur
    return max(counts.items(), key=lambda kv: kv[1], default=("", 0))


_CONNECTORS = {"of", "and", "or", "the", "a", "an", "in", "to", "with"}


def _repeated_unit(phrase: str) -> str:
    """The unit of a phrase that is nothing but one unit said again and again ("darkness of
    darkness of darkness" -> "darkness"), its trailing connectors dropped; "" for any other phrase."""
    words = phrase.split()
    for p in range(1, len(words) // 2 + 1):
        if all(w.lower() == words[i % p].lower() for i, w in enumerate(words)):
            unit = words[:p]
            while unit and unit[-1].lower() in _CONNECTORS:
                unit.pop()
            return " ".join(unit)
    return ""


def _not_looping(phrase: str) -> str:
    """A phrase that says one word again and again keeps its repeated unit, or else its first
    clause ("number of people; number of couples; number of ..." -> "number of people"): the loop
    follows the answer. ParseError when even that clause loops."""
    if _most_repeated(phrase)[1] <= MAX_REPEATS:
        return phrase
    unit = _repeated_unit(phrase)
    if unit:
        return unit
    first = re.split(r"[;,]", phrase, maxsplit=1)[0].strip()
    if not first or _most_repeated(first)[1] > MAX_REPEATS:
        word, n = _most_repeated(phrase)
        raise ParseError(f"the explanation repeats {word!r} {n} times; name the common feature once")
    return first


# This many words in a row taken from an exemplar's text make an explanation a copy of it.
COPY_RUN = 4
_WORDS = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_FENCED = re.compile(r"<text>(.*?)</text>", re.S)


def not_a_copy(phrase: str, conversation) -> None:
    """ParseError when the explanation ``phrase`` repeats a few-shot answer of ``conversation``
    (its assistant turns) or copies COPY_RUN words in a row of one of its <text> fences: a small
    explainer echoes what it was shown instead of describing it."""
    words = _WORDS.findall(phrase.lower())
    for m in conversation:
        if m["role"] == "assistant":
            shot = _EXPLANATION.match(m["content"].strip())
            if shot and shot.group(1).strip() and words == _WORDS.findall(shot.group(1).lower()):
                raise ParseError(f"{phrase!r} is the example's answer; describe these texts instead")
        elif m["role"] == "user":
            for fence in _FENCED.findall(m["content"]):
                text = _WORDS.findall(_ECHOES.sub(" ", fence).lower())
                runs = {tuple(text[i : i + COPY_RUN]) for i in range(len(text) - COPY_RUN + 1)}
                if any(tuple(words[i : i + COPY_RUN]) in runs for i in range(len(words) - COPY_RUN + 1)):
                    raise ParseError("the explanation copies the text; say what the marked words have in common")


FORMATS = {
    components: "one feature per line, each line starting with '- ', nothing else",
    explanation: "one line: Explanation: <short phrase>",
}
