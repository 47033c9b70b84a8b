"""One neuron, end to end: split, deconstruct, cluster, explain, refine, score; and the baseline.

``explain_neuron`` is the stage's unit of work (one Ray task per neuron runs it, ``task.py``);
the stages and the columns they fill are ``NeuronWork``'s (``neuron.py``), the scorers that
judge them ``judges.py``'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa

from ..config import ExplainConfig
from ..llm.base import Ledger
from ..results.transcript import Entry, LedgerEntry
from .neuron import NeuronOptions, NeuronWork


@dataclass
class NeuronResult:
    rows: list[dict]
    transcript: list[Entry] = field(default_factory=list)
    ledger: Ledger = field(default_factory=Ledger)


def explain_neuron(
    layer: int,
    neuron: int,
    records: pa.Table | pd.DataFrame,
    llm,
    cfg: ExplainConfig,
    options: NeuronOptions | None = None,
) -> NeuronResult:
    """Explain one neuron from its RECORDS rows; any failure becomes one 'failed' row with the
    reason. ``options``: the embedder, response cache, self-check verdict and budget's say
    (``NeuronOptions``). The transcript ends with the neuron's ledger."""
    work = NeuronWork(layer, neuron, llm, cfg, options or NeuronOptions())
    rows = work.run(records)
    work.transcript.append(LedgerEntry(work.ledger.as_dict()))
    return NeuronResult(rows, work.transcript, work.ledger)
