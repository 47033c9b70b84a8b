"""The held-out split of one neuron's exemplars: what the explainer sees, what scores, what decides."""

from __future__ import annotations

from dataclasses import dataclass

from .records import Exemplar

# Extra exemplars, beyond the held-out set, that decide whether a refinement is kept.
VALIDATION_TOP, VALIDATION_RANDOM = 2, 2
# Random exemplars beyond those, shown with a mode's own exemplars as the refine feedback's
# quiet text (where a false alarm shows), when the records have them.
FEEDBACK_RANDOM = 2


@dataclass(frozen=True)
class Split:
    explain: list[Exemplar]  # top exemplars the explainer agents see
    heldout: list[Exemplar]  # top + random, only ever used for the reported scores
    validation: list[Exemplar]  # top + random, disjoint from both: decides refinements
    max_act: float  # the neuron's max top activation: the 0-10 scale's 10
    feedback: tuple[Exemplar, ...] = ()  # random, disjoint from all above: quiet text for refine feedback


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
