"""One neuron's task: read its records and its output side, run the workflow through its
response cache, write its outputs, and report what the driver keeps of it (``NeuronSummary``);
the worker process that runs several such tasks at once (``WorkflowWorker``); and the failure
record of a neuron whose task could not run or died."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass

from ..config import ExplainConfig
from ..exemplars import NEGATIVE, POSITIVE
from ..llm.cache import NeuronCache
from ..results import read_neuron, read_output_tokens, write_result, write_rows, write_transcript
from ..results.transcript import NeuronError
from ..schema import TOKEN_COLUMNS, explanation_row
from ..store import Store
from ..timing import QUEUE, READ, WRITE, Timings
from .neuron import NeuronOptions
from .workflow import NeuronResult, explain_neuron, timing_entry


@dataclass(frozen=True)
class RunContext:
    """One explain run as each of its neurons' tasks gets it (put into Ray's object store once)."""

    records: Store  # of the records
    out: Store  # of the outputs
    llm: object
    cfg: ExplainConfig
    embedder: object = None  # picklable, shipped to the workers; None: explain_run serves cfg.embedder to all of them
    calibrated: bool | None = None  # the scorer self-check's verdict, written into every row
    workflow: Callable[..., NeuronResult] = explain_neuron  # or a stand-in with its signature (tests, benchmarks)


@dataclass(frozen=True)
class Side:
    """What one side of a neuron got and cost (``NeuronSummary.negative``)."""

    method: str
    tokens: int
    baseline_tokens: int


@dataclass(frozen=True)
class NeuronSummary:
    """What the driver keeps of a finished neuron (for progress, the budget and the manifest): its
    status (failed where a side failed), its positive side's scores and method, the tokens of both
    sides, and its negative side's method and share of them, where explained."""

    layer: int
    neuron: int
    status: str
    error: str | None
    n_modes: int
    score: float
    baseline_score: float
    control_score: float
    method: str
    tokens: int  # LLM tokens the neuron cost (cached answers included, so the count is the same on a rerun)
    baseline_tokens: int  # of which the single-pass explanation and its scoring
    negative: Side | None = None  # its negative side's share of the above, where it was explained

    def as_dict(self) -> dict:
        return asdict(self)

    def sides(self) -> list[Side]:
        """What each side got and cost: the positive side's, then the negative side's where explained."""
        neg = self.negative or Side("", 0, 0)
        first = Side(self.method, self.tokens - neg.tokens, self.baseline_tokens - neg.baseline_tokens)
        return [first] if self.negative is None else [first, self.negative]


# The row columns task_summary reads (a rerun rebuilds earlier neurons' summaries from them).
SUMMARY_COLUMNS = (
    "layer",
    "neuron",
    "polarity",
    "status",
    "error",
    "n_modes",
    "score",
    "baseline_score",
    "control_score",
    "method",
) + TOKEN_COLUMNS


def _side(r: dict) -> Side:
    """A side's method and cost, from its first row (each side's first row carries its totals)."""
    return Side(r["method"], sum(r[c] or 0 for c in TOKEN_COLUMNS), sum(r[c] or 0 for c in TOKEN_COLUMNS[2:]))


def task_summary(layer: int, neuron: int, rows: list[dict]) -> NeuronSummary:
    """The summary of a finished neuron from its rows: the positive side's first row (a row of a
    run before polarities is one), and the negative side's where it has one; failed where a side failed."""
    firsts: dict[int, dict] = {}
    for row in rows:
        firsts.setdefault(row.get("polarity") or POSITIVE, row)
    r, neg = firsts[POSITIVE], firsts.get(NEGATIVE)
    failed = next((x for x in firsts.values() if x["status"] != "ok"), None)
    sides = [_side(x) for x in firsts.values()]
    return NeuronSummary(
        layer,
        neuron,
        (failed or r)["status"],
        ("negative side: " if failed is neg else "") + str(failed["error"]) if failed else r["error"],
        r["n_modes"],
        r["score"],
        r["baseline_score"],
        r["control_score"],
        r["method"],
        sum(s.tokens for s in sides),
        sum(s.baseline_tokens for s in sides),
        None if neg is None else _side(neg),
    )


@dataclass(frozen=True)
class TaskOrder:
    """What the driver hands one neuron's task besides the run: where its inputs are and how far
    the workflow may go."""

    layer: int
    neuron: int
    record_keys: list[str]  # the RECORDS objects holding the neuron
    cache_sources: list[str]  # the response-cache objects that may hold its answers
    output_keys: list[str]  # the OUTPUT_TOKENS objects of its layer (none: no output side)
    full_allowed: bool = True  # see NeuronOptions (False: the run's budget holds triage's full workflow back)
    submitted: float | None = None  # when the driver submitted the task (Unix seconds)


def run_task(order: TaskOrder, s: RunContext) -> NeuronSummary:
    """Where the task's time went is in the rows' ``timings`` (and the transcript's ``timing``
    entry, up to the workflow's end)."""
    layer, neuron, submitted = order.layer, order.neuron, order.submitted
    timings = Timings()
    if submitted is not None:
        timings.add(QUEUE, max(0.0, timings.started - submitted))
    with timings.phase(READ):
        records = read_neuron(s.records, order.record_keys, layer, neuron)
        outputs = read_output_tokens(s.records, order.output_keys, layer, neuron)
        model_id = getattr(s.llm, "model_id", None)
        cache = NeuronCache(s.out, model_id, layer, neuron, order.cache_sources) if model_id else None
    try:
        options = NeuronOptions(
            embedder=s.embedder,
            cache=cache,
            calibrated=s.calibrated,
            full_allowed=order.full_allowed,
            outputs=outputs,
            timings=timings,
        )
        result = s.workflow(layer, neuron, records, s.llm, s.cfg, options)
    finally:
        if cache is not None:
            with timings.phase(WRITE):
                cache.flush()  # answers paid for are kept, whatever happened
    with timings.phase(WRITE):
        write_transcript(s.out, layer, neuron, result.transcript)
    spent = json.dumps(timing_entry(timings).to_json())
    write_rows(s.out, layer, neuron, [{**r, "timings": spent} for r in result.rows])
    return task_summary(layer, neuron, result.rows)


class WorkflowWorker:
    """A Ray actor's body: one worker process running up to ``cfg.workflows_per_worker`` neurons'
    tasks at once, each on its own thread (the actor's ``max_concurrency``). A workflow mostly
    waits on the LLM, so the neurons in flight share a process, its imports and its caches
    (the embedder client's, the words') instead of a process (~350 MB) each; more of them can
    then be in flight, which fills the engine's batches."""

    def run(self, order: TaskOrder, s: RunContext) -> NeuronSummary:
        return run_task(order, s)


def failed_rows(layer: int, neuron: int, cfg: ExplainConfig, reason: str) -> list[dict]:
    """The one "failed" row of a neuron whose workflow could not run."""
    return [explanation_row(layer, neuron, status="failed", error=reason, method=cfg.method)]


def record_failure(store, layer: int, neuron: int, cfg: ExplainConfig, reason: str) -> NeuronSummary:
    rows = failed_rows(layer, neuron, cfg, reason)
    write_result(store, layer, neuron, rows, [NeuronError(rows[0]["error"])])
    return task_summary(layer, neuron, rows)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def failure_reason(e: BaseException) -> str:
    """The original exception of a Ray task error, on one line, without terminal colours."""
    cause = getattr(e, "cause", None) or e
    text = _ANSI.sub("", f"{type(cause).__name__}: {cause}")
    return " ".join(text.split())[:500]
