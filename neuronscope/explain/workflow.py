"""One neuron, end to end: split, deconstruct, cluster, explain, refine, score; and the baseline;
then, where it is strong enough, the same for its negative side.

``explain_neuron`` is the stage's unit of work (one Ray task per neuron runs it, ``task.py``);
the stages and the columns they fill are ``NeuronWork``'s (``neuron.py``), the scorers that
judge them ``judges.py``'s. The negative side is the same workflow on the neuron's negative view
(``exemplars.flipped``), its rows marked polarity -1; the neuron's rows, transcript and ledger
hold both sides, so it is written, and done, only with both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import pandas as pd
import pyarrow as pa

from ..config import ExplainConfig
from ..exemplars import NEGATIVE, extremes, flipped, strong
from ..llm.base import Ledger
from ..results.transcript import Entry, LedgerEntry, PolarityEntry, TimingEntry
from ..timing import Timings
from .neuron import NeuronOptions, NeuronWork


@dataclass
class NeuronResult:
    rows: list[dict]
    transcript: list[Entry] = field(default_factory=list)
    ledger: Ledger = field(default_factory=Ledger)


def timing_entry(timings: Timings) -> TimingEntry:
    """The timings so far as a transcript entry."""
    return TimingEntry(round(timings.started, 3), round(time.time(), 3), timings.as_dict())


def negative_verdict(records: pa.Table | pd.DataFrame, ratio: float | None) -> PolarityEntry | None:
    """Whether the neuron's negative side is explained (``exemplars.strong``); None where its
    records hold none (GPT-2, a run recorded without it)."""
    ends = extremes(records)
    if ends is None:
        return None
    return PolarityEntry(NEGATIVE, ends[0], ends[1], ratio, strong(*ends, ratio))


def _ledger(works: list[NeuronWork]) -> Ledger:
    """The neuron's ledger: its sides' together."""
    if len(works) == 1:
        return works[0].ledger
    out = Ledger()
    for w in works:
        for agent, u in w.ledger.by_agent.items():
            out.add(agent, u.calls, u.tokens_in, u.tokens_out, u.cached)
    return out


def explain_neuron(
    layer: int,
    neuron: int,
    records: pa.Table | pd.DataFrame,
    llm,
    cfg: ExplainConfig,
    options: NeuronOptions | None = None,
) -> NeuronResult:
    """Explain one neuron from its RECORDS rows, and its negative side where the rule says so
    (``negative_verdict``: the verdict goes into the transcript, that side's entries after it);
    any failure of a side becomes its one 'failed' row with the reason. ``options``: the embedder,
    response cache, self-check verdict, budget's say and timings (``NeuronOptions``). The
    transcript ends with where the time went and the ledger."""
    opts = options or NeuronOptions()
    timings = opts.timings or Timings()
    opts = replace(opts, timings=timings)  # both sides' phases in one
    works = [NeuronWork(layer, neuron, llm, cfg, opts)]
    rows = works[0].run(records)
    transcript = list(works[0].transcript)
    verdict = negative_verdict(records, cfg.negative_ratio) if all(r["status"] == "ok" for r in rows) else None
    if verdict is not None:
        transcript.append(verdict)
    if verdict is not None and verdict.explained:
        works.append(NeuronWork(layer, neuron, llm, cfg, replace(opts, polarity=NEGATIVE)))
        rows += works[-1].run(flipped(records))
        transcript += works[-1].transcript
    ledger = _ledger(works)
    transcript += [timing_entry(timings), LedgerEntry(ledger.as_dict())]
    return NeuronResult(rows, transcript, ledger)
