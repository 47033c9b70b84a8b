"""The token budget of an explain run: what its neurons cost so far (``Tally``), whether one more
full workflow fits (method triage), and what earlier runs spent on the same selection."""

from __future__ import annotations

import math

import numpy as np
import pyarrow.dataset as ds

from .. import layout
from ..exemplars import strong
from ..results import RecordsIndex, code, neuron_extremes, uncode
from ..schema import EXPLANATIONS, backfill
from .neuron import FULL_ATTEMPTS
from .task import SUMMARY_COLUMNS, NeuronSummary, task_summary

MAX_LISTED_FAILURES = 50  # the summary goes into the manifest: the rest are in the files
# What a neuron is taken to cost until this run's own means exist (before any neuron, or any full
# workflow, has finished), so that the neurons in flight at a run's start cannot all take the full
# workflow unseen: a budget of 300,000 tokens with 48 in flight spent 553,254. Measured on the
# bundled explainer over every layer (RESULTS.md, the all-layer run): 653 tokens per single-pass
# side, 9,514 beyond it per neuron that took the full workflow (1.9 sides).
PRIOR_SINGLE = 650
PRIOR_FULL_EXTRA = 9_500
# The weight the priors keep in the means (``unit_costs``). The single pass's reserve is its
# mean times every side left, so its prior keeps more weight; single passes finish by the dozen.
PRIOR_SIDES = 16
PRIOR_FULLS = 4
# The share of the single pass's reserve for the sides not submitted yet held back beyond its
# mean. Layers differ (624-695 tokens a side on the same 1,000 neurons; the first layer the
# dearest) and the loss is lopsided: a full workflow too many leaves about seven neurons without
# even their single pass (9,000 tokens against 1,230 a neuron), one too few costs one neuron's
# refinement. Replayed on that run's costs at 1,500,000 tokens, those in flight counted at the
# prior alone left 34-35 full workflows where about 30 fitted and 35-45 neurons pending; with the
# 3 % as well, 30-31 and 0-3 (RESULTS.md, the budget replay).
SINGLE_MARGIN = 0.03


class Tally:
    """Running counts and score sums: the driver keeps no per-neuron list."""

    KEYS = ("score", "baseline_score", "control_score")

    def __init__(self):
        self.explained = self.ok = self.failed = self.tokens = 0
        self.baseline_tokens = 0  # of which the single-pass explanation and its scoring
        self.negative = 0  # neurons whose negative side was explained too: one more workflow each
        self.full = 0  # neurons of which a side spent a full workflow
        self.full_extra = 0  # triage: tokens of their full workflows beyond their single-pass share
        # what the neurons got (each side's method; the negative side's as "negative: METHOD")
        self.methods: dict[str, int] = {}
        self.sums = dict.fromkeys(self.KEYS, 0.0)
        self.counts = dict.fromkeys(self.KEYS, 0)
        self.failures: dict[str, str | None] = {}

    def add(self, s: NeuronSummary) -> None:
        self.explained += 1
        self.tokens += s.tokens
        self.baseline_tokens += s.baseline_tokens
        self.negative += s.negative is not None
        full = [side for side in s.sides() if side.method in FULL_ATTEMPTS]
        self.full += bool(full)
        self.full_extra += sum(side.tokens - side.baseline_tokens for side in full)
        for i, side in enumerate(s.sides()):
            method = ("negative: " if i else "") + (side.method or "?")
            self.methods[method] = self.methods.get(method, 0) + 1
        if s.status != "ok":
            self.failed += 1
            if len(self.failures) < MAX_LISTED_FAILURES:
                self.failures[f"{s.layer}/{s.neuron}"] = s.error
            return
        self.ok += 1
        for k in self.KEYS:
            value = getattr(s, k)
            if value is not None and math.isfinite(value):
                self.sums[k] += value
                self.counts[k] += 1

    def mean(self, key: str):
        return round(self.sums[key] / self.counts[key], 4) if self.counts[key] else None

    def plus(self, other: Tally) -> Tally:
        """The spend of both (tokens, neurons and methods; scores are not merged)."""
        out = Tally()
        for k in ("explained", "tokens", "baseline_tokens", "negative", "full", "full_extra"):
            setattr(out, k, getattr(self, k) + getattr(other, k))
        out.methods = {m: self.methods.get(m, 0) + other.methods.get(m, 0) for m in {*self.methods, *other.methods}}
        return out


def unit_costs(t: Tally, sides_in_flight: int = 0, allowed_in_flight: int = 0) -> tuple[float, float]:
    """(a single pass per side, a full workflow's extra per neuron that took one) as ``t`` and the
    PRIOR costs give them: each the larger of its measured mean and that mean with the prior
    counted as PRIOR_SIDES sides (PRIOR_FULLS full workflows) more, plus one more for each side
    (neuron allowed the full workflow) still in flight; and not below the prior while fewer have
    finished than are in flight. The prior alone before any was measured.

    The first to finish are the cheapest (a short workflow ends first), so those in flight are
    observations not made yet that will cost more than the mean so far: one full workflow that
    cost 3,382 beyond its single pass let 12 start at once where the run's mean was 9,392; with
    30-36 full workflows in flight, the first 4-12 to finish (a mean of 4,187-6,132 against 9,066)
    let 8 more start (RESULTS.md). Never below the measured mean: a prior lower than an
    explainer's costs would otherwise let more start than fit."""
    n_sides = t.explained + t.negative
    single = _cautious_mean(t.baseline_tokens, n_sides, PRIOR_SIDES + sides_in_flight, PRIOR_SINGLE)
    extra = _cautious_mean(t.full_extra, t.full, PRIOR_FULLS + allowed_in_flight, PRIOR_FULL_EXTRA)
    if n_sides < sides_in_flight:
        single = max(single, PRIOR_SINGLE)
    if t.full < allowed_in_flight:
        extra = max(extra, PRIOR_FULL_EXTRA)
    return single, extra


def _cautious_mean(total: float, n: int, weight: int, prior: float) -> float:
    """The larger of the mean ``total / n`` and the mean with ``weight`` more at ``prior``; the
    prior where ``n`` is 0."""
    if not n:
        return prior
    return max(total / n, (total + weight * prior) / (n + weight))


def full_fits(t: Tally, in_flight: int, allowed_in_flight: int, left: int, budget: int) -> bool:
    """Whether one more full workflow fits the budget beside every neuron's single-pass share: the
    spend ``t``, the ``in_flight`` sides at the single-pass cost each plus a full workflow's extra
    for the ``allowed_in_flight`` neurons that may take one (a mean over all finished neurons would
    count them at a few single-pass neurons' cost), the ``left`` sides of the neurons not submitted
    yet (the next one's included) at the single-pass cost and SINGLE_MARGIN more, and one more
    extra. A side is one workflow: a neuron whose negative side the rule takes has two
    (``sides``), so layers with more of them are reserved for as such. Costs are ``unit_costs``;
    where nothing has finished and no full workflow is in flight, one starts (if the single passes'
    share allows) and its cost is learnt."""
    if not t.explained and not allowed_in_flight:
        return True  # nothing to go by: the first full workflow starts
    single, extra = unit_costs(t, in_flight, allowed_in_flight)
    own = extra if t.full or allowed_in_flight else 0
    reserve = single * (in_flight + left * (1 + SINGLE_MARGIN))
    return t.tokens + reserve + extra * allowed_in_flight + own <= budget


def likely_in_flight(t: Tally, neurons: int, sides: int, allowed: int, triage: bool) -> float:
    """What the ``neurons`` in flight (``sides`` workflows, ``allowed`` of them allowed the full
    workflow) will likely spend. Under ``triage`` neurons differ in what they get: ``unit_costs``
    per side and per neuron allowed the full workflow, the costs that let them start (a mean per
    neuron of mostly single passes would count those at a single pass's cost). Otherwise every
    neuron gets the same: their mean so far, or before any finished the PRIOR costs."""
    if triage or not t.explained:
        single, extra = unit_costs(t, sides, allowed)
        return single * sides + extra * allowed
    return t.tokens / t.explained * neurons


def sides(records, index: RecordsIndex, codes: np.ndarray, ratio: float | None) -> np.ndarray:
    """Per neuron of ``codes``: the workflows it will take, 2 where the rule explains its negative
    side too (``exemplars.strong`` on its records' extremes), else 1."""
    out = np.ones(len(codes), dtype=np.int64)
    if ratio is None or not len(codes):
        return out
    ends = neuron_extremes(records, index.keys)
    keys = code(ends["layer"].to_numpy(), ends["neuron"].to_numpy()).tolist()
    at = {k: (float(lo), float(hi)) for k, lo, hi in zip(keys, ends["min"], ends["max"])}
    for i, c in enumerate(codes.tolist()):
        if c in at and strong(at[c][0], at[c][1], ratio):
            out[i] = 2
    return out


def spent_before(out_store, done: np.ndarray) -> Tally:
    """What the already-done neurons of the selection (``done``: codes) spent, read from their
    rows: a budget covers the whole selection, so a rerun after a kill does not spend it again."""
    t = Tally()
    if not len(done):
        return t
    layers, units = uncode(done)
    table = out_store.read_parquet_where(
        layout.prefix(layout.EXPLANATIONS),
        ds.field("layer").isin(np.unique(layers).tolist()),
        list(SUMMARY_COLUMNS),
        schema=EXPLANATIONS,  # a run written before a column existed reads it as nulls
    )
    df = backfill(table.to_pandas()).drop_duplicates(["layer", "neuron", "polarity"])
    wanted = set(zip(layers.tolist(), units.tolist()))
    for (layer, neuron), rows in df.groupby(["layer", "neuron"], sort=False):
        if (layer, neuron) in wanted:
            t.add(task_summary(layer, neuron, rows.to_dict("records")))
    return t
