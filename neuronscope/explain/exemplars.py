"""Exemplars of one neuron: loading from RECORDS rows, the held-out split, and prompt formatting."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

# Tokens at or above this share of the neuron's max top activation (on the 0-10 scale) are marked.
MARK_AT = 4
# Context shown to the explainer around the max token: the 135M explainer does best on short text.
CONTEXT_BEFORE, CONTEXT_AFTER = 16, 4
# Extra exemplars, beyond the held-out set, that decide whether a refinement is kept.
VALIDATION_TOP, VALIDATION_RANDOM = 2, 2
# Random exemplars beyond those, shown with a mode's own exemplars as the refine feedback's
# quiet text (where a false alarm shows), when the records have them.
FEEDBACK_RANDOM = 2


@dataclass(frozen=True)
class Exemplar:
    window_id: int
    kind: str  # "top" | "random"
    rank: int
    tokens: tuple[str, ...]
    activations: tuple[float, ...]
    max_pos: int


@dataclass(frozen=True)
class Split:
    explain: list[Exemplar]  # top exemplars the explainer agents see
    heldout: list[Exemplar]  # top + random, only ever used for the reported scores
    validation: list[Exemplar]  # top + random, disjoint from both: decides refinements
    max_act: float  # the neuron's max top activation: the 0-10 scale's 10
    feedback: tuple[Exemplar, ...] = ()  # random, disjoint from all above: quiet text for refine feedback


def load(records: pa.Table | pd.DataFrame) -> tuple[list[Exemplar], list[Exemplar]]:
    """(top exemplars by rank, random exemplars by rank) from one neuron's RECORDS rows."""
    df = records.to_pandas() if isinstance(records, pa.Table) else records
    out: dict[str, list[Exemplar]] = {"top": [], "random": []}
    for r in df.sort_values(["kind", "rank"]).itertuples(index=False):
        if r.kind in out:
            acts = tuple(float(a) for a in r.activations)
            if not all(math.isfinite(a) for a in acts):
                raise ValueError(
                    f"window {int(r.window_id)} ({r.kind} rank {int(r.rank)}) has activations that are not finite"
                )
            out[r.kind].append(Exemplar(int(r.window_id), r.kind, int(r.rank), tuple(r.tokens), acts, int(r.max_pos)))
    return out["top"], out["random"]


def spread(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (centres of k equal bins), never index 0 when
    k < n, so the very best exemplar always stays with the explainer."""
    k = min(k, n)
    return sorted({min(n - 1, int((i + 0.5) * n / k + 0.5)) for i in range(k)}) if k else []


def split(
    top: list[Exemplar], random: list[Exemplar], n_explain: int, n_heldout_top: int, n_heldout_random: int
) -> Split:
    """Deterministic split. Held-out top exemplars are spread over the ranks, so the score covers
    weak as well as strong activations; the explainer gets the best of the rest."""
    if len(top) < 2:
        raise ValueError(f"need at least 2 top exemplars to explain and score, got {len(top)}")
    n_ho = min(n_heldout_top, len(top) - 1)
    ho_idx = set(spread(len(top), n_ho))
    rest = [e for i, e in enumerate(top) if i not in ho_idx]
    explain, spare = rest[:n_explain], rest[n_explain:]
    heldout = [top[i] for i in sorted(ho_idx)] + random[:n_heldout_random]
    validation = spare[:VALIDATION_TOP] + random[n_heldout_random : n_heldout_random + VALIDATION_RANDOM]
    max_act = max(max(e.activations) for e in top)
    used = n_heldout_random + VALIDATION_RANDOM
    return Split(explain, heldout, validation, max_act, tuple(random[used : used + FEEDBACK_RANDOM]))


def needed(n_explain: int, n_heldout_top: int, n_heldout_random: int) -> tuple[int, int]:
    """(top, random) exemplars per neuron that fill every part of ``split`` with these settings."""
    return (
        n_explain + n_heldout_top + VALIDATION_TOP,
        n_heldout_random + VALIDATION_RANDOM + FEEDBACK_RANDOM,
    )


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


def marked_text(ex: Exemplar, max_act: float, before: int = CONTEXT_BEFORE, after: int = CONTEXT_AFTER) -> str:
    """The context around the max token with high-activation tokens in <<...>>, fenced."""
    lo, hi = max(0, ex.max_pos - before), min(len(ex.tokens), ex.max_pos + after + 1)
    s = scaled(ex.activations, max_act)
    parts = []
    for i in range(lo, hi):
        tok = escape(ex.tokens[i])
        if s[i] >= MARK_AT:
            lead = tok[: len(tok) - len(tok.lstrip())]  # keep the space outside the mark
            tok = f"{lead}<<{tok.lstrip()}>>"
        parts.append(tok)
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
