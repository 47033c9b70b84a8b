"""One neuron's Ray task: read its records, run the workflow through its response cache, write
its outputs; and the failure record of a neuron whose task could not run or died."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from ..config import ExplainConfig
from ..llm.cache import NeuronCache
from ..results import read_neuron, write_result
from ..results.transcript import NeuronError
from ..schema import TOKEN_COLUMNS
from ..store import Store
from .workflow import NeuronResult, result_row


@dataclass(frozen=True)
class Shared:
    """What every task of a run gets (put into Ray's object store once)."""

    records: Store  # of the records
    out: Store  # of the outputs
    llm: object
    cfg: ExplainConfig
    embedder: object
    calibrated: bool | None
    workflow: Callable[..., NeuronResult]  # explain_neuron, or a stand-in with its signature (tests, benchmarks)


# The row columns task_summary reads (a rerun rebuilds earlier neurons' summaries from them).
SUMMARY_COLUMNS = (
    "layer",
    "neuron",
    "status",
    "error",
    "n_modes",
    "score",
    "baseline_score",
    "control_score",
    "method",
) + TOKEN_COLUMNS


def task_summary(layer: int, neuron: int, rows: list[dict]) -> dict:
    """What the driver keeps of a finished neuron (for progress and the manifest)."""
    r = rows[0]
    return {
        "layer": layer,
        "neuron": neuron,
        "status": r["status"],
        "error": r["error"],
        "n_modes": r["n_modes"],
        "score": r["score"],
        "baseline_score": r["baseline_score"],
        "control_score": r["control_score"],
        "method": r["method"],
        # LLM tokens the neuron cost (cached answers included, so the count is the same on a rerun)
        "tokens": sum(r[c] or 0 for c in TOKEN_COLUMNS),
        "baseline_tokens": sum(r[c] or 0 for c in TOKEN_COLUMNS[2:]),
    }


def run_task(
    layer: int, neuron: int, record_keys: list[str], cache_sources: list[str], s: Shared, full_allowed: bool = True
) -> dict:
    """``full_allowed``: see ``explain_neuron`` (False: the run's budget holds triage's full workflow back)."""
    records = read_neuron(s.records, record_keys, layer, neuron)
    model_id = getattr(s.llm, "model_id", None)
    cache = NeuronCache(s.out, model_id, layer, neuron, cache_sources) if model_id else None
    try:
        result = s.workflow(
            layer,
            neuron,
            records,
            s.llm,
            s.cfg,
            embedder=s.embedder,
            cache=cache,
            calibrated=s.calibrated,
            full_allowed=full_allowed,
        )
    finally:
        if cache is not None:
            cache.flush()  # answers paid for are kept, whatever happened
    write_result(s.out, layer, neuron, result.rows, result.transcript)
    return task_summary(layer, neuron, result.rows)


def failed_rows(layer: int, neuron: int, cfg: ExplainConfig, reason: str) -> list[dict]:
    """The one "failed" row of a neuron whose workflow could not run."""
    return [result_row(layer, neuron, status="failed", error=reason, method=cfg.method)]


def record_failure(store, layer: int, neuron: int, cfg: ExplainConfig, reason: str) -> dict:
    rows = failed_rows(layer, neuron, cfg, reason)
    write_result(store, layer, neuron, rows, [NeuronError(rows[0]["error"])])
    return task_summary(layer, neuron, rows)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def failure_reason(e: BaseException) -> str:
    """The original exception of a Ray task error, on one line, without terminal colours."""
    cause = getattr(e, "cause", None) or e
    text = _ANSI.sub("", f"{type(cause).__name__}: {cause}")
    return " ".join(text.split())[:500]
