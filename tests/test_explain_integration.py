"""The explain workflow against the real bundled engine (vLLM-CPU, SmolLM2-135M-Instruct) on
real English sentences with planted activations: a month neuron and a month+animal neuron."""

from __future__ import annotations

import json
import math
import time

import pandas as pd
import pyarrow as pa
import pytest
from explain_helpers import ANIMAL_SENTENCES, ANIMALS, MONTH_SENTENCES, MONTHS, PLAIN_SENTENCES, token_records

from neuronscope.config import ExplainConfig
from neuronscope.explain.workflow import explain_neuron
from neuronscope.results import neuron_explanations, read_transcript, rows_table
from neuronscope.results.transcript import Entry, LedgerEntry, ScoreEntry
from neuronscope.schema import EXPLANATIONS, RECORDS

CFG = ExplainConfig(
    n_explain=8,
    n_heldout_top=3,
    n_heldout_random=3,
    max_modes=3,
    refine_rounds=1,
    max_in_flight=2,
    simulation_scores=True,
)


def _neurons(llm) -> dict[tuple[int, int], pd.DataFrame]:
    return {
        (5, 0): token_records(llm, MONTH_SENTENCES, PLAIN_SENTENCES, MONTHS, 5, 0),
        (5, 1): token_records(llm, MONTH_SENTENCES[:8] + ANIMAL_SENTENCES, PLAIN_SENTENCES, MONTHS | ANIMALS, 5, 1),
    }


def _check_rows(rows: list[dict]) -> None:
    table = rows_table(rows)
    assert table.schema == EXPLANATIONS
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
    for r in rows:
        assert r["explanation"].strip() and r["baseline_explanation"].strip()
        for key in ("mode_score", "score", "baseline_score", "coverage"):
            assert math.isfinite(r[key]), key
        assert r["llm_calls"] > 0 and r["llm_tokens_in"] > 0 and r["llm_tokens_out"] > 0
        assert r["baseline_llm_tokens_in"] > 0 and r["baseline_llm_tokens_out"] > 0
        assert r["n_modes"] == len(rows) and r["mode_size"] == len(r["exemplar_ids"]) > 0


def _check_transcript(transcript: list[Entry]) -> None:
    stages = {t.agent for t in transcript}
    assert {"split", "deconstruct", "cluster", "explain", "score", "single_pass", "ledger"} <= stages
    # the judge's scores and, beside them, the paper's simulation scores
    assert {t.scorer for t in transcript if isinstance(t, ScoreEntry)} == {CFG.scorer, "simulation"}
    ledger = next(t for t in transcript if isinstance(t, LedgerEntry))
    assert {"deconstruct", "explain", "simulate", "single_pass", "simulate_baseline"} <= set(ledger.usage)
    json.dumps([t.to_json() for t in transcript], default=float)  # everything in the audit trail serialises


@pytest.mark.slow
def test_two_neurons_end_to_end_with_the_bundled_engine(vllm_pool):
    timings = {}
    for (layer, neuron), df in _neurons(vllm_pool).items():
        t0 = time.time()
        res = explain_neuron(
            layer, neuron, pa.Table.from_pandas(df, schema=RECORDS, preserve_index=False), vllm_pool, CFG
        )
        timings[neuron] = round(time.time() - t0, 1)
        _check_rows(res.rows)
        _check_transcript(res.transcript)
    print(f"seconds per neuron: {timings}")


@pytest.mark.slow
def test_fanout_writes_and_skips_with_the_bundled_engine(tmp_path, vllm_pool):
    from neuronscope.store import Store

    store = Store.open(str(tmp_path / "run"))
    df = pd.concat(_neurons(vllm_pool).values(), ignore_index=True)
    store.write_parquet(
        "records/layer_005/part-00000.parquet", pa.Table.from_pandas(df, schema=RECORDS, preserve_index=False)
    )
    from neuronscope.explain import RunContext, explain_run

    seen = []
    summary = explain_run(RunContext(store, store, vllm_pool, CFG), None, seen.append)
    assert summary.ok == 2 and summary.failed == 0 and len(seen) == 2, summary
    for n in (0, 1):
        assert neuron_explanations(store, 5, n) is not None and read_transcript(store, 5, n)
        _check_rows(neuron_explanations(store, 5, n).to_pylist())
    again = explain_run(RunContext(store, store, vllm_pool, CFG))
    assert again.skipped == 2 and again.explained == 0
