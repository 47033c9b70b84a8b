"""Many neurons: one Ray task per neuron, a bounded number in flight, all sharing one LLM client.

Each finished neuron writes ``transcripts/layer_LLL/neuron_NNNNN.jsonl`` and then
``explanations/layer_LLL/neuron_NNNNN.parquet``; the latter marks the neuron done, so a rerun skips it
(a neuron recorded as failed is tried again unless ``retry_failed=False``: its LLM answers come
from the response cache, so a deterministic failure costs nothing and a transient one recovers).
"""

from __future__ import annotations

import json
import math
import re
import time

import numpy as np
import pandas as pd
import pyarrow as pa

from ..config import ExplainConfig
from ..schema import EXPLANATIONS, conform
from ..selection import parse_selection
from .workflow import _row, explain_neuron

TASK_CPUS = 0.25  # the workflow mostly waits on the LLM actor; leave the cores to the engine
MAX_LISTED_FAILURES = 50  # the summary goes into the manifest: the rest are in the files


def explanation_key(layer: int, neuron: int) -> str:
    return f"explanations/layer_{layer:03d}/neuron_{neuron:05d}.parquet"


def transcript_key(layer: int, neuron: int) -> str:
    return f"transcripts/layer_{layer:03d}/neuron_{neuron:05d}.jsonl"


def _jsonable(x):
    """Strict JSON: numpy scalars/arrays as Python values, NaN/inf as null."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def rows_table(rows: list[dict]) -> pa.Table:
    return conform(pa.Table.from_pylist(rows, schema=EXPLANATIONS), EXPLANATIONS)


def write_result(store, layer: int, neuron: int, rows: list[dict], transcript: list[dict]) -> None:
    lines = "".join(json.dumps(_jsonable(t), ensure_ascii=False, allow_nan=False) + "\n" for t in transcript)
    store.write_bytes(transcript_key(layer, neuron), lines.encode("utf-8"))
    store.write_parquet(explanation_key(layer, neuron), rows_table(rows))


def _cache_for(llm, store):
    """The run's content-addressed response cache, when the LLM client names its model."""
    model_id = getattr(llm, "model_id", None)
    if not model_id:
        return None
    from ..llm.cache import ResponseCache

    return ResponseCache(store, model_id)


def _fmt(x) -> str:
    return f"{x:.3f}" if isinstance(x, float) and math.isfinite(x) else "-"


def _summary(layer: int, neuron: int, rows: list[dict]) -> dict:
    r = rows[0]
    return {"layer": layer, "neuron": neuron, "status": r["status"], "error": r["error"],
            "n_modes": r["n_modes"], "score": r["score"], "baseline_score": r["baseline_score"],
            "control_score": r["control_score"]}


def _task(layer: int, neuron: int, records: pd.DataFrame, llm, cfg: ExplainConfig, store, embedder,
          calibrated: bool | None) -> dict:
    result = explain_neuron(layer, neuron, records, llm, cfg, embedder=embedder, cache=_cache_for(llm, store),
                            calibrated=calibrated)
    write_result(store, layer, neuron, result.rows, result.transcript)
    return _summary(layer, neuron, result.rows)


def _failed(layer: int, neuron: int, cfg: ExplainConfig, reason: str) -> list[dict]:
    return [_row(layer, neuron, status="failed", error=reason, method=cfg.method)]


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _reason(e: BaseException) -> str:
    """The original exception of a Ray task error, on one line, without terminal colours."""
    cause = getattr(e, "cause", None) or e
    text = _ANSI.sub("", f"{type(cause).__name__}: {cause}")
    return " ".join(text.split())[:500]


def _is_done(store, layer: int, neuron: int, retry_failed: bool) -> bool:
    key = explanation_key(layer, neuron)
    if not store.exists(key):
        return False
    if not retry_failed:
        return True
    status = store.read_parquet(key).column("status").to_pylist()
    return "failed" not in status


def load_records(records_store) -> pd.DataFrame:
    df = records_store.read_parquet("records/").to_pandas()
    # Hive partition columns can come back as categories: make the keys plain ints.
    for col in ("layer", "neuron"):
        df[col] = df[col].astype("int64")
    return df


def _select(df: pd.DataFrame, cfg: ExplainConfig, neurons) -> list[tuple[int, int]]:
    present = sorted({(int(a), int(b)) for a, b in zip(df["layer"], df["neuron"])})
    if neurons is not None:
        return sorted({(int(a), int(b)) for a, b in neurons})
    if not present:
        return []
    layers = set(parse_selection(cfg.layers, max(p[0] for p in present) + 1, "layer"))
    units = set(parse_selection(cfg.neurons, max(p[1] for p in present) + 1, "neuron"))
    return [p for p in present if p[0] in layers and p[1] in units]


def explain_run(records_store, out_store, llm, cfg: ExplainConfig, neurons: list[tuple[int, int]] | None = None,
                progress=None, retry_failed: bool = True, embedder=None, calibrated: bool | None = None) -> dict:
    """Explain every selected neuron (``neurons``, else cfg.layers x cfg.neurons over the records)
    not already done in ``out_store``; returns counts and mean scores. Needs Ray initialised;
    ``progress(message)`` is called once per finished neuron. ``embedder`` (picklable, shipped to
    the workers) replaces cfg.embedder, which each worker process otherwise loads once;
    ``calibrated`` is the scorer self-check's verdict, written into every row."""
    import ray

    t0 = time.time()
    df = load_records(records_store)
    todo = _select(df, cfg, neurons)
    groups = {k: g for k, g in df.groupby(["layer", "neuron"])}
    pending = [n for n in todo if not _is_done(out_store, *n, retry_failed)]
    skipped = len(todo) - len(pending)
    task = ray.remote(num_cpus=TASK_CPUS, max_retries=0)(_task)
    llm_ref, cfg_ref, emb_ref = ray.put(llm), ray.put(cfg), ray.put(embedder)
    in_flight: dict = {}
    done: list[dict] = []

    def finish(ref) -> None:
        layer, neuron = in_flight.pop(ref)
        try:
            summary = ray.get(ref)
        except Exception as e:  # the task itself died (OOM, worker crash, store write): still recorded
            rows = _failed(layer, neuron, cfg, f"task failed: {_reason(e)}")
            try:
                write_result(out_store, layer, neuron, rows, [{"agent": "error", "error": rows[0]["error"]}])
            except Exception:
                pass  # the summary below still names the neuron and its failure
            summary = _summary(layer, neuron, rows)
        done.append(summary)
        if progress:
            s = summary
            note = f"{cfg.scorer} {_fmt(s['score'])} baseline {_fmt(s['baseline_score'])} " \
                f"control {_fmt(s['control_score'])}, {s['n_modes']} mode(s)" \
                if s["status"] == "ok" else f"FAILED: {s['error']}"
            progress(f"explain {len(done)}/{len(pending)}: layer {layer} neuron {neuron}: {note}")

    for layer, neuron in pending:
        while len(in_flight) >= cfg.max_in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            finish(ready[0])
        records = groups.get((layer, neuron))
        if records is None:
            rows = _failed(layer, neuron, cfg, "no activation records for this neuron")
            write_result(out_store, layer, neuron, rows, [{"agent": "error", "error": rows[0]["error"]}])
            done.append(_summary(layer, neuron, rows))
            continue
        ref = task.remote(layer, neuron, records.reset_index(drop=True), llm_ref, cfg_ref, out_store, emb_ref,
                          calibrated)
        in_flight[ref] = (layer, neuron)
    while in_flight:
        ready, _ = ray.wait(list(in_flight), num_returns=1)
        finish(ready[0])

    ok = [s for s in done if s["status"] == "ok"]

    def mean(key):
        vals = [s[key] for s in ok if s[key] is not None and math.isfinite(s[key])]
        return round(float(np.mean(vals)), 4) if vals else None

    failures = {f"{s['layer']}/{s['neuron']}": s["error"] for s in done if s["status"] != "ok"}
    return {"neurons": len(todo), "explained": len(done), "skipped": skipped, "ok": len(ok),
            "failed": len(failures), "failures": dict(list(failures.items())[:MAX_LISTED_FAILURES]),
            "scorer": cfg.scorer, "mean_score": mean("score"), "mean_baseline_score": mean("baseline_score"),
            "mean_control_score": mean("control_score"),
            "seconds": round(time.time() - t0, 1)}
