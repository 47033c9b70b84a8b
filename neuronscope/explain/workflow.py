"""One neuron, end to end: split, deconstruct, cluster, explain, refine, score; and the baseline.

``explain_neuron`` is the stage's unit of work (one Ray task per neuron runs it, ``task.py``);
the stages and the columns they fill are ``NeuronWork``'s (``neuron.py``), the scorers that
judge them ``judges.py``'s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa

from ..config import ExplainConfig
from ..llm.base import Ledger
from ..results.transcript import Entry, LedgerEntry, TimingEntry
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


def explain_neuron(
    layer: int,
    neuron: int,
    records: pa.Table | pd.DataFrame,
    llm,
    cfg: ExplainConfig,
    options: NeuronOptions | None = None,
) -> NeuronResult:
    """Explain one neuron from its RECORDS rows; any failure becomes one 'failed' row with the
    reason. ``options``: the embedder, response cache, self-check verdict, budget's say and
    timings (``NeuronOptions``). The transcript ends with where the time went and the ledger."""
    work = NeuronWork(layer, neuron, llm, cfg, options or NeuronOptions())
    rows = work.run(records)
    work.transcript.append(timing_entry(work.timings))
    work.transcript.append(LedgerEntry(work.ledger.as_dict()))
    return NeuronResult(rows, work.transcript, work.ledger)
