"""``--dry-run``: the tokens and wall time a selection would take, from a sample explained aside;
a neuron whose negative side the rule selects counts as two workflows."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np

from .. import layout
from ..results import RecordsIndex, uncode
from .budget import sides
from .schedule import explain_run, pending_neurons
from .task import RunContext


@dataclass(frozen=True)
class Estimate:
    """A dry run's verdict: the sample it explained and what the whole selection would cost."""

    pending: int  # neurons of the selection not done yet
    sample: int  # of which explained in the scratch folder
    sample_failed: int
    sample_seconds: float
    tokens_per_neuron: int
    tokens: int  # the pending neurons' workflows', at the sample's mean per workflow
    seconds: int  # likewise
    negative: int = 0  # pending neurons whose negative side the rule selects: one more workflow each
    # the causal check of the sample's modes, seconds per neuron (the model's load left out), and
    # the pending neurons' at that pace; None where it is off or the sample has no modes
    causal_seconds_per_neuron: float | None = None
    causal_seconds: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def estimate_run(
    run: RunContext, progress=None, index: RecordsIndex | None = None, after: Callable | None = None
) -> Estimate:
    """Explain a sample of the pending neurons, spread over the selection, into a scratch folder
    of the run (removed afterwards), and scale its tokens and wall time to every pending neuron.
    ``after(scratch)``, where given, runs a later stage on the sample before the folder goes and
    returns its seconds per neuron (the causal check's, from ``stages.py``).
    The sample runs up to as many neurons at once as the real run would: with at least the
    in-flight limit its per-neuron time is the real run's pace (a little slower: the sample's tail
    runs alone); a smaller sample overestimates the time."""
    index, _, todo, pending = pending_neurons(run, None, True, index)
    waiting = todo[pending]
    picks = np.unique(np.linspace(0, len(waiting) - 1, min(run.cfg.dry_run_sample, len(waiting))).round().astype(int))
    sample = [(int(a), int(b)) for a, b in zip(*uncode(waiting[picks]))] if len(waiting) else []
    scratch = type(run.out).open(run.out.url(layout.dry_run_folder(uuid.uuid4().hex[:8])))
    plain = run.cfg.model_copy(update={"budget": None, "dry_run": False})
    try:
        s = explain_run(replace(run, out=scratch, cfg=plain), sample, progress, index=index) if sample else None
        later = after(scratch) if after and s else None
    finally:
        for key in scratch.list(""):
            scratch.delete(key)
        scratch.prune()
    n = len(sample)
    negative = negative_due(run, index, waiting)
    # per workflow: the sample's neurons ran theirs, negative sides included
    flows = n + (s.negative if s else 0)
    per_tokens, per_s = (s.tokens / flows, s.seconds / flows) if s else (0.0, 0.0)
    return Estimate(
        pending=len(waiting),
        sample=n,
        sample_failed=s.failed if s else 0,
        sample_seconds=s.seconds if s else 0.0,
        tokens_per_neuron=round(s.tokens / n) if s else 0,
        tokens=round(per_tokens * (len(waiting) + negative)),
        seconds=math.ceil(per_s * (len(waiting) + negative)),  # up: a quick sample is not free
        negative=negative,
        causal_seconds_per_neuron=later,
        causal_seconds=None if later is None else round(later * len(waiting)),
    )


def negative_due(run: RunContext, index: RecordsIndex, codes: np.ndarray) -> int:
    """How many of the neurons ``codes`` the rule gives a negative-side workflow (``exemplars.strong``)."""
    return int((sides(run.records, index, codes, run.cfg.negative_ratio) - 1).sum())
