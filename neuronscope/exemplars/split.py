"""The split of one neuron's exemplars into what the explainer sees, what decides between
explanations, and what scores them — disjoint by window.

Top-k is kept per token, so one window can be a top exemplar, a stratum exemplar and a random one
at once; each window goes into one part only (top before strata before random), so no score is
taken on text an agent has read or a decision was made on.
- top exemplars: the explainer gets the strongest (as Bills et al. show them); of the rest, the
  held-out ones are spread over the ranks and validation gets those between.
- strata (the activating range, weakest to strongest): two of every three windows score, the
  third decides.
- random exemplars: the first few are the refine agent's quiet text (``feedback``), the next
  decide, the rest score.
Where a pool is shorter than the sizes ask, its parts shrink in proportion (the explainer's
share first); where it is longer, the extra windows score.
"""

from __future__ import annotations

from dataclasses import dataclass

from .records import Exemplar, Pools
from .scale import Scale

FEEDBACK_RANDOM = 2  # random exemplars shown with a mode's own as the refine feedback's quiet text
STRATUM_VALIDATION_EVERY = 3  # of a stratum's windows, every third decides, the others score


@dataclass(frozen=True)
class SplitSizes:
    """How many exemplars each part wants (held-out: at least, where the pools hold more)."""

    explain: int = 8
    heldout_top: int = 32
    heldout_random: int = 46
    validation_top: int = 8
    validation_random: int = 16

    @classmethod
    def of(cls, cfg) -> SplitSizes:
        """The sizes an explain config (``n_explain``, ``n_heldout_top``, ...) asks for."""
        return cls(
            cfg.n_explain, cfg.n_heldout_top, cfg.n_heldout_random, cfg.n_validation_top, cfg.n_validation_random
        )


@dataclass(frozen=True)
class Split:
    explain: list[Exemplar]  # top exemplars the explainer agents see
    heldout: list[Exemplar]  # what every reported score is taken on (never seen by an agent)
    validation: list[Exemplar]  # decides between explanations (candidates, refinements)
    scale: Scale  # the neuron's activation scale
    feedback: tuple[Exemplar, ...] = ()  # random, disjoint from all above: quiet text for refine feedback


def spread(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (centres of k equal bins), never index 0 when
    k < n, so the very best exemplar always stays with the explainer."""
    k = min(k, n)
    return sorted({min(n - 1, int((i + 0.5) * n / k + 0.5)) for i in range(k)}) if k else []


def _distinct(exemplars: list[Exemplar], taken: set[int]) -> list[Exemplar]:
    """``exemplars`` whose window is not in ``taken``, first of each window only; marks them taken."""
    out = []
    for e in exemplars:
        if e.window_id not in taken:
            taken.add(e.window_id)
            out.append(e)
    return out


def _share(n: int, validation: int, heldout: int) -> int:
    """How many of ``n`` exemplars decide when ``validation`` and ``heldout`` are wanted: all that
    is wanted when there are enough, else a proportional share (the held-out part keeps the rest)."""
    return min(validation, n * validation // max(1, validation + heldout))


def split(pools: Pools, sizes: SplitSizes = SplitSizes()) -> Split:
    """Deterministic split of ``pools`` (see the module doc). Short pools are shared in proportion
    to the sizes, the explainer's top exemplars first; whatever the sizes leave over scores."""
    taken: set[int] = set()
    top = _distinct(pools.top, taken)
    if len(top) < 2:
        raise ValueError(f"need at least 2 top exemplars (distinct windows) to explain and score, got {len(top)}")
    n_explain = min(sizes.explain, len(top) - 1)
    # the strongest go to the explainer: a rank stride here would alias with any periodic order
    # of the top windows (a planted neuron's concepts take turns) and show it one concept only
    explain, others = top[:n_explain], top[n_explain:]
    n_val = _share(len(others), sizes.validation_top, sizes.heldout_top)
    ho_idx = set(spread(len(others), len(others) - n_val))
    validation = [e for i, e in enumerate(others) if i not in ho_idx]
    heldout = [others[i] for i in sorted(ho_idx)]
    for stratum in pools.strata:
        for i, e in enumerate(_distinct(stratum, taken)):
            (validation if i % STRATUM_VALIDATION_EVERY == STRATUM_VALIDATION_EVERY - 1 else heldout).append(e)
    rnd = _distinct(pools.random, taken)
    feedback, rnd = tuple(rnd[:FEEDBACK_RANDOM]), rnd[FEEDBACK_RANDOM:]
    n_val = _share(len(rnd), sizes.validation_random, sizes.heldout_random)
    validation += rnd[:n_val]
    heldout += rnd[n_val:]
    return Split(explain, heldout, validation, Scale.of(pools.top, pools.random), feedback)


def needed(sizes: SplitSizes) -> tuple[int, int]:
    """(top, random) exemplars per neuron that fill every part of ``split`` with these sizes."""
    return (
        sizes.explain + sizes.heldout_top + sizes.validation_top,
        FEEDBACK_RANDOM + sizes.validation_random + sizes.heldout_random,
    )
