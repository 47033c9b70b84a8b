"""Controls: the same scorer on an explanation that has nothing to do with the neuron, so that
every score is read against what chance looks like for that neuron and scorer."""

from __future__ import annotations

import numpy as np

# Concepts far from each other and from the bundled corpus's usual themes. Read as one list,
# so a neuron's control is reproducible from its layer and neuron alone.
UNRELATED = (
    "programming language keywords",
    "chemical element names",
    "units of measurement",
    "football match scores",
    "computer file extensions",
    "stock market tickers",
    "cooking temperatures",
    "airline flight numbers",
    "software version numbers",
    "email addresses",
    "mathematical operators",
    "postal codes",
)


def control_explanation(layer: int, neuron: int, others=(), embedder=None, avoid: str = "") -> str:
    """An unrelated explanation for this neuron: one of ``others`` (explanations of other neurons
    of the run) when given, else one of UNRELATED; drawn by (layer, neuron), and, with an
    ``embedder``, the one of four draws least similar to ``avoid`` (what the neuron fires on), so
    a control never happens to describe the neuron."""
    pool = [o for o in dict.fromkeys(others) if o and o != avoid] or list(UNRELATED)
    rng = np.random.default_rng([layer, neuron, 7])
    picks = [pool[i] for i in rng.permutation(len(pool))[:4]]
    if embedder is None or not avoid or len(picks) == 1:
        return picks[0]
    from ..models.embedder import embed_cached

    v = embed_cached(embedder, [avoid, *picks])
    return picks[int(np.argmin(v[1:] @ v[0]))]
