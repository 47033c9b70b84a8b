"""A neuron's activation scale: where its activations sit between "quiet" and "as strong as it gets".

The agents read activations on a 0-10 scale and the judges label words as firing or quiet on the
same scale, so both follow the neuron's own distribution: 0 is its usual activation — 0 for a
neuron that is silent on most text, the median of its random exemplars for one whose median
reaches DENSE_AT of its peak (a dense neuron then still has quiet text) — and 10 its strongest
top activation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .records import Exemplar

DENSE_AT = 0.1  # a neuron whose median activation reaches this share of its peak fires on most text


@dataclass(frozen=True)
class Scale:
    peak: float  # the neuron's max top activation: the scale's 10
    base: float = 0.0  # its usual activation: the scale's 0

    def levels(self, acts) -> np.ndarray:
        """Activations on the 0-10 scale, as floats (below the base: 0)."""
        a = np.asarray(acts, dtype=np.float64)
        span = self.peak - self.base
        if span <= 0:
            return np.zeros_like(a)
        return np.clip((a - self.base) / span * 10, 0, 10)

    def scaled(self, acts) -> np.ndarray:
        """Activations on the 0-10 integer scale the agents read."""
        return np.rint(self.levels(acts)).astype(np.int64)

    @classmethod
    def of(cls, top: Sequence[Exemplar], random: Sequence[Exemplar] = ()) -> Scale:
        """The scale of a neuron's exemplars: its top exemplars' max, and the median of its random
        exemplars' activations where that reaches DENSE_AT of the max (and stays below it)."""
        peak = max(max(e.activations) for e in top) if top else 0.0
        acts = [a for e in random for a in e.activations]
        base = float(np.median(acts)) if acts else 0.0
        return cls(peak, base if DENSE_AT * peak <= base < peak else 0.0)
