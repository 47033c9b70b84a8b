"""The token budget of an explain run: what its neurons cost so far (``Tally``), whether one more
full workflow fits (method triage), and what earlier runs spent on the same selection."""

from __future__ import annotations

import math

import numpy as np
import pyarrow.dataset as ds

from .. import layout
from ..results import uncode
from .neuron import FULL_ATTEMPTS
from .task import SUMMARY_COLUMNS, NeuronSummary, task_summary

MAX_LISTED_FAILURES = 50  # the summary goes into the manifest: the rest are in the files


class Tally:
    """Running counts and score sums: the driver keeps no per-neuron list."""

    KEYS = ("score", "baseline_score", "control_score")

    def __init__(self):
        self.explained = self.ok = self.failed = self.tokens = 0
        self.baseline_tokens = 0  # of which the single-pass explanation and its scoring
        self.full_extra = 0  # triage: tokens of the full workflows beyond their single-pass share
        self.methods: dict[str, int] = {}  # what the neurons got (each row's method)
        self.sums = dict.fromkeys(self.KEYS, 0.0)
        self.counts = dict.fromkeys(self.KEYS, 0)
        self.failures: dict[str, str | None] = {}

    def add(self, s: NeuronSummary) -> None:
        self.explained += 1
        self.tokens += s.tokens
        self.baseline_tokens += s.baseline_tokens
        method = s.method or "?"
        self.methods[method] = self.methods.get(method, 0) + 1
        if method in FULL_ATTEMPTS:
            self.full_extra += s.tokens - s.baseline_tokens
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
        for k in ("explained", "tokens", "baseline_tokens", "full_extra"):
            setattr(out, k, getattr(self, k) + getattr(other, k))
        out.methods = {m: self.methods.get(m, 0) + other.methods.get(m, 0) for m in {*self.methods, *other.methods}}
        return out


def full_fits(t: Tally, in_flight: int, allowed_in_flight: int, left: int, budget: int) -> bool:
    """Whether one more full workflow fits the budget beside every neuron's single-pass share: the
    spend ``t``, the ``in_flight`` neurons at the single-pass cost each plus a full workflow's extra
    for the ``allowed_in_flight`` of them that may take one (a mean over all finished neurons would
    count them at a few single-pass neurons' cost), the ``left`` neurons not submitted yet (the next
    one included) at the single-pass cost, and one more extra. Costs are the means so far; a full
    workflow's extra counts as 0 until one has finished."""
    if not t.explained:
        return True
    single = t.baseline_tokens / t.explained
    full = sum(t.methods.get(m, 0) for m in FULL_ATTEMPTS)
    extra = t.full_extra / full if full else 0
    return t.tokens + single * (in_flight + left) + extra * (allowed_in_flight + 1) <= budget


def spent_before(out_store, done: np.ndarray) -> Tally:
    """What the already-done neurons of the selection (``done``: codes) spent, read from their
    rows: a budget covers the whole selection, so a rerun after a kill does not spend it again."""
    t = Tally()
    if not len(done):
        return t
    layers, units = uncode(done)
    table = out_store.read_parquet_where(
        layout.prefix(layout.EXPLANATIONS), ds.field("layer").isin(np.unique(layers).tolist()), list(SUMMARY_COLUMNS)
    )
    df = table.to_pandas().drop_duplicates(["layer", "neuron"])
    wanted = set(zip(layers.tolist(), units.tolist()))
    for r in df.to_dict("records"):
        if (r["layer"], r["neuron"]) in wanted:
            t.add(task_summary(r["layer"], r["neuron"], [r]))
    return t
