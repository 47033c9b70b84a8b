"""Fan-out over neurons on a 2-CPU Ray with the scripted test double of the LLM: files written,
finished neurons skipped, failures recorded (never dropped), progress reported."""

from __future__ import annotations

import json
import time

import pandas as pd
import pyarrow as pa
import pytest
from explain_helpers import MONTHS, RANDOMS, SENTENCES, month_neurons, records
from fakes import PlantedEmbedder, ScriptedLLM

from neuronscope import layout
from neuronscope.config import ExplainConfig
from neuronscope.explain import NeuronSummary, RunContext, estimate_run, explain_run, schedule
from neuronscope.explain.budget import Tally, full_fits
from neuronscope.explain.task import Side
from neuronscope.results import neuron_explanations, read_transcript
from neuronscope.schema import EXPLANATIONS, OUTPUT_TOKENS, RECORDS
from neuronscope.summary import estimate_line

EMB = PlantedEmbedder()  # no sentence-transformers model to load in the workers


class Exploding(ScriptedLLM):
    def chat(self, conversations, params):
        raise RuntimeError("engine on fire")


def _records_store(store):
    frames = [records(SENTENCES, MONTHS, layer=1, neuron=n, randoms=RANDOMS) for n in (0, 1, 2)]
    frames.append(records(SENTENCES[:1], MONTHS, layer=1, neuron=3, randoms=RANDOMS))  # too few top
    df = pd.concat(frames, ignore_index=True)
    df["window_id"] = df["window_id"] + 100 * df["neuron"]
    store.write_parquet(
        "records/layer_001/part-00000.parquet", pa.Table.from_pandas(df, schema=RECORDS, preserve_index=False)
    )


def _output_tokens(store, neuron: int, promoted: list[str]) -> None:
    """An OUTPUT_TOKENS part of layer 1 holding one neuron's output side."""
    n = len(promoted)
    row = {"layer": 1, "neuron": neuron, "promoted_tokens": promoted, "promoted_ids": list(range(n))}
    row |= {
        "promoted_weights": [1.0] * n,
        "suppressed_tokens": ["x"],
        "suppressed_ids": [9],
        "suppressed_weights": [-1.0],
    }
    store.write_parquet(layout.output_tokens_key(1), pa.Table.from_pylist([row], schema=OUTPUT_TOKENS))


def test_explain_run_writes_skips_and_records_failures(tmp_path, ray_by_value):
    from neuronscope.store import Store

    store = Store.open(str(tmp_path / "run"))
    _records_store(store)
    _output_tokens(store, 0, [" April", " May"])
    cfg = ExplainConfig(n_explain=6, n_heldout_top=3, n_heldout_random=2, max_in_flight=2, output_evidence=True)
    seen = []
    summary = explain_run(RunContext(store, store, ScriptedLLM(), cfg, embedder=EMB), None, seen.append)
    assert summary.neurons == 4 and summary.ok == 3 and summary.failed == 1, summary
    assert "at least 2 top" in summary.failures["1/3"] and len(seen) == 4
    for n in range(4):
        t = neuron_explanations(store, 1, n)
        assert t.schema == EXPLANATIONS
        assert read_transcript(store, 1, n)
    # each task read its own neuron's output side: the explainers of neuron 0 saw it, neuron 1's did not
    pushed = "When it fires, the model is pushed towards: April, May"
    assert pushed in json.dumps(read_transcript(store, 1, 0), ensure_ascii=False)
    assert "pushed towards" not in json.dumps(read_transcript(store, 1, 1), ensure_ascii=False)
    # Done neurons are skipped; the failed one is tried again (and fails the same way).
    again = explain_run(RunContext(store, store, ScriptedLLM(), cfg, embedder=EMB))
    assert again.skipped == 3 and again.explained == 1 and again.failed == 1
    # A selection names neurons explicitly; one without records is a recorded failure.
    only = explain_run(RunContext(store, store, ScriptedLLM(), cfg, embedder=EMB), [(1, 0), (1, 9)])
    assert only.skipped == 1 and only.failures == {"1/9": "no activation records for this neuron"}


def test_a_crashing_llm_fails_each_neuron_with_its_reason(tmp_path, ray_by_value):
    from neuronscope.store import Store

    store = Store.open(str(tmp_path / "run"))
    _records_store(store)
    cfg = ExplainConfig(n_explain=6, n_heldout_top=3, n_heldout_random=2)
    summary = explain_run(RunContext(store, store, Exploding(), cfg, embedder=EMB), [(1, 0), (1, 1)])
    assert summary.failed == 2
    assert all("RuntimeError: engine on fire" in v for v in summary.failures.values())
    row = neuron_explanations(store, 1, 0).to_pylist()[0]
    assert row["status"] == "failed" and row["mode"] == -1


class Paired(ScriptedLLM):
    """Each workflow's first call waits (up to a deadline) for another workflow's first call in
    the same worker process: both answer only where two workflows run at once in one process."""

    def __init__(self, wait_s: float):
        super().__init__()
        self.wait_s = wait_s

    def chat(self, conversations, params):
        if not self.params:  # each task unpickles its own copy: this workflow's first call
            import sys
            import threading
            import types

            # the test module is unpickled anew per task: the barrier lives with the process
            pair = sys.modules.setdefault(
                "paired", types.SimpleNamespace(barrier=threading.Barrier(2, timeout=self.wait_s))
            )
            pair.barrier.wait()
        return super().chat(conversations, params)


def test_a_worker_process_runs_several_workflows_at_once(tmp_path, ray_by_value):
    """Two neurons in flight and two workflows per worker: one worker runs both at once."""
    from neuronscope.store import Store

    store = Store.open(str(tmp_path / "run"))
    _records_store(store)
    cfg = ExplainConfig(n_explain=6, n_heldout_top=3, n_heldout_random=2, max_in_flight=2, workflows_per_worker=2)
    summary = explain_run(RunContext(store, store, Paired(120), cfg, embedder=EMB), [(1, 0), (1, 1)])
    assert summary.ok == 2, summary.failures
    # one workflow per worker (a fresh process: the run stopped its workers): nobody to meet
    apart = cfg.model_copy(update={"workflows_per_worker": 1})
    summary = explain_run(RunContext(store, store, Paired(1), apart, embedder=EMB), [(1, 2)])
    assert summary.failed == 1 and "BrokenBarrierError" in summary.failures["1/2"]


class Cached(ScriptedLLM):
    model_id = "scripted@1"  # the response cache keys on it


def test_outputs_are_compacted_resumed_from_a_listing_and_replayed_from_the_cache(tmp_path, ray_by_value):
    from neuronscope.store import Store

    store, fresh = Store.open(str(tmp_path / "run")), Store.open(str(tmp_path / "fresh"))
    _records_store(store)
    cfg = ExplainConfig(n_explain=6, n_heldout_top=3, n_heldout_random=2, max_in_flight=2, compact_every=2)
    summary = explain_run(RunContext(store, store, Cached(), cfg, embedder=EMB))
    assert summary.ok == 3 and summary.compaction_errors == []
    # Only the failed neuron keeps objects of its own; the three others are in parts.
    for folder in ("explanations/", "transcripts/", "llm_cache/"):
        keys = store.list(folder)
        assert all("/part-" in k or "neuron_00003" in k for k in keys) and len(keys) <= 3, keys
    assert store.read_parquet("explanations/").num_rows == len(
        set(store.read_parquet("explanations/").to_pandas()[["neuron", "mode"]].itertuples())
    )
    again = explain_run(RunContext(store, store, Cached(), cfg, embedder=EMB), [(1, 0), (1, 1), (1, 2)])
    assert again.skipped == 3 and again.explained == 0
    for key in store.list("llm_cache/"):
        fresh.write_bytes(key, store.read_bytes(key))
    replay = explain_run(RunContext(store, fresh, Cached(), cfg, embedder=EMB), [(1, 0), (1, 1), (1, 2)])
    rows = fresh.read_parquet("explanations/").to_pandas()
    assert replay.ok == 3 and (rows["llm_calls"] == 0).all() and (rows["llm_tokens_in"] > 0).all()


def test_each_neuron_s_rows_say_where_its_task_time_went(tmp_path, ray_by_value):
    """The rows' ``timings``: the task's queue, reads, workflow phases and writes; the transcript's
    ``timing`` entry holds the same up to the workflow's end (before the ledger)."""
    from neuronscope.results.transcript import LedgerEntry, TimingEntry, entry_from_json
    from neuronscope.store import Store

    store = Store.open(str(tmp_path / "run"))
    _records_store(store)
    cfg = ExplainConfig(n_explain=6, n_heldout_top=3, n_heldout_random=2, max_in_flight=2)
    t0 = time.time()
    assert explain_run(RunContext(store, store, Cached(), cfg, embedder=EMB), [(1, 0), (1, 1)]).ok == 2
    for n in (0, 1):
        rows = neuron_explanations(store, 1, n).to_pylist()
        row = entry_from_json(json.loads(rows[0]["timings"]))
        assert isinstance(row, TimingEntry) and all(r["timings"] == rows[0]["timings"] for r in rows)
        assert {"queue", "read", "setup", "llm", "judge reader", "workflow", "write"} <= set(row.seconds)
        assert all(v >= 0 for v in row.seconds.values())
        assert t0 <= row.started <= row.finished <= time.time()
        *_, timing, ledger = [entry_from_json(d) for d in read_transcript(store, 1, n)]
        assert isinstance(timing, TimingEntry) and isinstance(ledger, LedgerEntry)
        # the rows' copy goes on to the transcript's write
        assert "write" in row.seconds and timing.finished <= row.finished
        assert {k: v for k, v in row.seconds.items() if k != "write"} == {
            k: v for k, v in timing.seconds.items() if k != "write"
        }


class CountingEmbedder(PlantedEmbedder):
    """Counts the texts it embeds (in the served embedder's actor)."""

    def __init__(self):
        self.texts = []

    def encode(self, texts, **kw):
        self.texts += list(texts)
        return super().encode(texts, **kw)


def _wait_until_gone(ray, actor, within: float = 60.0) -> None:
    """Until a call to ``actor`` fails: ray.kill returns before the actor's process has exited."""
    import time

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            ray.get(actor.__ray_ready__.remote(), timeout=5)
        except ray.exceptions.GetTimeoutError:
            continue
        except ray.exceptions.RayActorError:
            return
    raise AssertionError(f"the killed actor still answered after {within:.0f}s")


def test_a_served_embedder_embeds_each_text_once_for_every_worker(ray_by_value):
    import pickle

    import numpy as np

    from neuronscope.models import embedder

    served = embedder.serve(CountingEmbedder())
    try:
        texts = ["in May", "the river ran", "in May", "June"]
        assert np.allclose(embedder.embed(served, texts), embedder.embed(PlantedEmbedder(), texts))
        # a task's copy is its process's one client of the actor: the per-process caches key on it
        assert pickle.loads(pickle.dumps(served)) is pickle.loads(pickle.dumps(served))

        @ray_by_value.remote(num_cpus=0.25)
        def workflow(e, extra):
            return embedder.embed_cached(e, texts + [extra]).shape

        assert ray_by_value.get([workflow.remote(served, t) for t in ("a", "b", "a")]) == [(5, 3)] * 3
        computed = ray_by_value.get(served.actor.__ray_call__.remote(lambda s: s.model.texts))
        assert sorted(computed) == ["June", "a", "b", "in May", "the river ran"]  # each text once
        assert served.tokenizer.get_vocab() == PlantedEmbedder.tokenizer.get_vocab()
    finally:
        embedder.stop(served)
    _wait_until_gone(ray_by_value, served.actor)
    # its process gone (killed for memory, say), a client goes on with its own model
    assert np.allclose(embedder.embed(served, texts), embedder.embed(PlantedEmbedder(), texts))
    assert served.own is not None


def test_a_run_serves_its_embedder_to_every_workflow_and_stops_it(tmp_path, ray_by_value, monkeypatch):
    """Without an embedder object, explain_run serves cfg.embedder from one actor for the run,
    which every workflow embeds through, and stops it at the end."""
    from neuronscope.models import embedder
    from neuronscope.store import Store

    served, computed = [], []
    serve, stop = embedder.serve, embedder.stop
    monkeypatch.setattr(
        embedder, "serve", lambda spec, *_: served.append((spec, serve(CountingEmbedder()))) or served[-1][1]
    )

    def stopping(e):
        computed.extend(ray_by_value.get(e.actor.__ray_call__.remote(lambda s: s.model.texts)))
        stop(e)

    monkeypatch.setattr(embedder, "stop", stopping)
    store = Store.open(str(tmp_path / "run"))
    _records_store(store)
    cfg = ExplainConfig(n_explain=6, n_heldout_top=3, n_heldout_random=2, max_in_flight=2)
    assert explain_run(RunContext(store, store, ScriptedLLM(), cfg), [(1, 0), (1, 1)]).ok == 2
    ((spec, e),) = served
    assert spec == cfg.embedder and computed and len(computed) == len(set(computed))
    _wait_until_gone(ray_by_value, e.actor)
    # a rerun with nothing left to explain serves nothing
    assert explain_run(RunContext(store, store, ScriptedLLM(), cfg), [(1, 0), (1, 1)]).skipped == 2
    assert len(served) == 1


def test_every_workflow_in_flight_fits_the_cpus_ray_has_free():
    """One engine holds one of a 2-core machine's two CPUs: 12 workers ask for 1/12
    each, not 0.25 (which would let only 4 of them run, the rest queued behind them)."""
    assert schedule.task_cpus(12, 1.0) == 0.0833 and 12 * schedule.task_cpus(12, 1.0) <= 1.0
    assert schedule.task_cpus(2, 2.0) == schedule.TASK_CPUS  # room enough: as before
    assert schedule.task_cpus(12, 0.0) == schedule.MIN_TASK_CPUS


def test_in_flight_default_follows_the_llm_pool():
    class Pool:
        actors = [object()] * 3

    cfg = ExplainConfig()
    assert schedule.max_in_flight(cfg, Pool()) == 3 * schedule.IN_FLIGHT_PER_REPLICA
    assert schedule.max_in_flight(cfg, ScriptedLLM()) == schedule.IN_FLIGHT_PER_REPLICA
    assert schedule.max_in_flight(ExplainConfig(max_in_flight=5), Pool()) == 5


def test_a_token_budget_stops_new_neurons_and_a_rerun_continues(tmp_path, ray_by_value):
    from neuronscope.store import Store

    store, probe = Store.open(str(tmp_path / "run")), Store.open(str(tmp_path / "probe"))
    month_neurons(store, 10)
    month_neurons(probe, 1)
    cfg = ExplainConfig(n_explain=6, n_heldout_top=3, n_heldout_random=2, max_in_flight=1)
    per_neuron = explain_run(RunContext(probe, probe, ScriptedLLM(), cfg, embedder=EMB)).tokens
    seen = []
    capped = cfg.model_copy(update={"budget": int(2.5 * per_neuron)})
    first = explain_run(RunContext(store, store, ScriptedLLM(), capped, embedder=EMB), None, seen.append)
    assert first.ok == 3 and first.left_by_budget == 7 and first.tokens == 3 * per_neuron, first
    assert "token budget reached" in seen[-1] and "7 neurons left pending" in seen[-1]
    # the budget covers the selection, not one run: the same budget again starts nothing new
    same = explain_run(RunContext(store, store, ScriptedLLM(), capped, embedder=EMB))
    assert same.explained == 0 and same.tokens_before == 3 * per_neuron and same.left_by_budget == 7, same
    larger = capped.model_copy(update={"budget": int(5.5 * per_neuron)})
    more = explain_run(RunContext(store, store, ScriptedLLM(), larger, embedder=EMB))
    assert more.ok == 3 and more.left_by_budget == 4, more
    rest = explain_run(RunContext(store, store, ScriptedLLM(), cfg, embedder=EMB))
    assert rest.skipped == 6 and rest.ok == 4 and rest.left_by_budget == 0


def _weak() -> ScriptedLLM:
    return ScriptedLLM(single_pass="Explanation: rivers and lakes")  # every neuron is due the full workflow


def _true_priors(monkeypatch, single: float, extra: float) -> None:
    """The budget's priors set to this explainer's own costs."""
    from neuronscope.explain import budget as B

    monkeypatch.setattr(B, "PRIOR_SINGLE", single)
    monkeypatch.setattr(B, "PRIOR_FULL_EXTRA", extra)


def _reserve(single: float, in_flight: int, left: int) -> float:
    """The single passes ``full_fits`` reserves: the sides in flight and those not submitted yet,
    the latter with the budget's margin."""
    from neuronscope.explain.budget import SINGLE_MARGIN

    return single * (in_flight + left * (1 + SINGLE_MARGIN))


def _full_workflow_costs(probe, cfg: ExplainConfig) -> tuple[int, int]:
    """(single-pass tokens, tokens beyond them) of one month neuron's full workflow under ``cfg``."""
    month_neurons(probe, 1)
    explain_run(RunContext(probe, probe, _weak(), cfg, embedder=EMB))
    row = probe.read_parquet("explanations/").to_pandas().iloc[0]
    single = int(row["baseline_llm_tokens_in"] + row["baseline_llm_tokens_out"])
    extra = int(row["llm_tokens_in"] + row["llm_tokens_out"])
    assert row["method"] == "triage/neuronscope" and single > 0 and extra > 0
    return single, extra


def test_under_a_budget_triage_gives_every_neuron_single_pass_and_the_rest_buys_full_workflows(
    tmp_path, ray_by_value, monkeypatch
):
    from neuronscope.store import Store

    store = Store.open(str(tmp_path / "run"))
    month_neurons(store, 10)
    weak = _weak()
    cfg = ExplainConfig(n_explain=6, n_heldout_top=3, n_heldout_random=2, max_in_flight=1, method="triage")
    single, extra = _full_workflow_costs(Store.open(str(tmp_path / "probe")), cfg)
    _true_priors(monkeypatch, single, extra)
    seen = []
    capped = cfg.model_copy(update={"budget": 10 * single + int(2.5 * extra)})
    run = explain_run(RunContext(store, store, weak, capped, embedder=EMB), None, seen.append)
    # two full workflows fit beside ten single-pass ones; a third would not
    assert run.ok == 10 and run.left_by_budget == 0 and run.tokens == 10 * single + 2 * extra, run
    assert run.methods == {"triage/neuronscope": 2, "triage/single-pass (budget)": 8}
    got = store.read_parquet("explanations/").to_pandas().drop_duplicates(["neuron"]).set_index("neuron")["method"]
    assert list(got.sort_index()) == ["triage/neuronscope"] * 2 + ["triage/single-pass (budget)"] * 8
    assert sum("neurons left get the single-pass explanation only" in m for m in seen) == 1
    # killed after four neurons and rerun: the rerun counts what the four spent, and the two runs
    # together keep to the budget and buy the same full workflows as one run
    again = Store.open(str(tmp_path / "again"))
    month_neurons(again, 10)
    finished: list[str] = []

    def killed_after_four(message):
        finished.extend([message] if "layer" in message else [])
        if len(finished) == 4:
            raise KeyboardInterrupt  # the driver dies with nothing in flight (max_in_flight 1)

    with pytest.raises(KeyboardInterrupt):
        explain_run(RunContext(again, again, weak, capped, embedder=EMB), None, killed_after_four)
    resumed = explain_run(RunContext(again, again, weak, capped, embedder=EMB))
    assert resumed.skipped == 4 and resumed.ok == 6 and resumed.left_by_budget == 0, resumed
    assert resumed.tokens_before + resumed.tokens == run.tokens
    methods = again.read_parquet("explanations/").to_pandas().drop_duplicates(["neuron"])["method"]
    assert methods.value_counts().to_dict() == run.methods


def test_at_the_start_many_in_flight_keep_to_the_budget_and_a_prior_never_stops_the_run(
    tmp_path, ray_by_value, monkeypatch
):
    from neuronscope.explain import budget as B
    from neuronscope.store import Store

    store, probe, other = (Store.open(str(tmp_path / name)) for name in ("run", "probe", "other"))
    month_neurons(store, 8)
    month_neurons(other, 8)
    weak = _weak()
    cfg = ExplainConfig(n_explain=6, n_heldout_top=3, n_heldout_random=2, max_in_flight=4, method="triage")
    single, extra = _full_workflow_costs(probe, cfg)
    budget = 8 * single + int(1.5 * extra)  # room for one full workflow
    _true_priors(monkeypatch, single, extra)
    run = explain_run(RunContext(store, store, weak, cfg.model_copy(update={"budget": budget}), embedder=EMB))
    assert run.methods == {"triage/neuronscope": 1, "triage/single-pass (budget)": 7}, run
    assert run.tokens <= budget and run.left_by_budget == 0, "4 in flight at the start took 1 full workflow, not 4"
    # priors that dwarf this explainer's costs: the run waits for its own mean instead of stopping on them
    both = ExplainConfig(n_explain=6, n_heldout_top=3, n_heldout_random=2, max_in_flight=4)
    per_neuron = explain_run(RunContext(probe, Store.open(str(tmp_path / "probe2")), weak, both, embedder=EMB)).tokens
    monkeypatch.setattr(B, "PRIOR_FULL_EXTRA", 100 * per_neuron)
    every = explain_run(
        RunContext(other, other, weak, both.model_copy(update={"budget": 9 * per_neuron}), embedder=EMB)
    )
    assert every.ok == 8 and every.left_by_budget == 0, every


def test_full_workflows_in_flight_count_at_their_own_cost_in_the_budget(monkeypatch):
    """A rerun's spend is mostly single-pass neurons, so their mean cost is far below a full
    workflow's: the neurons in flight that were allowed the full workflow count at its cost."""
    _true_priors(monkeypatch, 600, 3300)
    tally = _tally([("triage/neuronscope", 3900)] * 2 + [("triage/single-pass (budget)", 600)] * 8)
    single, extra, left = 600, 3300, 20
    budget = tally.tokens + _reserve(single, 4, left) + 2 * extra  # room for two more full workflows
    assert full_fits(tally, 4, 0, left, budget) and full_fits(tally, 4, 1, left, budget)
    assert not full_fits(tally, 4, 2, left, budget)  # 4 in flight at the mean so far would still fit
    assert not full_fits(tally, 4, 0, left + 6, budget)  # the single-pass share of those to come first
    assert full_fits(Tally(), 12, 0, 1000, 1)  # nothing finished, none allowed in flight: one starts


def test_before_any_neuron_finished_the_neurons_in_flight_count_at_the_prior_costs(monkeypatch):
    """At a run's start no mean exists: the neurons in flight that may take the full workflow count
    at the prior costs, so a budget lets only as many start as it holds (not every one in flight)."""
    from neuronscope.explain import budget as B

    _true_priors(monkeypatch, 600, B.PRIOR_FULL_EXTRA)  # the single pass of ``_tally``'s neurons
    from neuronscope.explain.budget import PRIOR_FULL_EXTRA, PRIOR_SINGLE, likely_in_flight  # as patched

    left, in_flight = 300, 48
    budget = _reserve(PRIOR_SINGLE, in_flight, left) + 5 * PRIOR_FULL_EXTRA
    fits = [full_fits(Tally(), in_flight, allowed, left, budget) for allowed in range(48)]
    assert fits == [True] * 5 + [False] * 43, "the first starts; then four more, each counting its own extra too"
    assert full_fits(Tally(), in_flight, 47, left, 10**8), "a budget that holds them all lets them all start"
    for triage in (True, False):
        assert likely_in_flight(Tally(), 3, 5, 2, triage) == 5 * PRIOR_SINGLE + 2 * PRIOR_FULL_EXTRA
    done = _tally([("triage/single-pass (budget)", 600)] * 4)  # finished, but no full workflow yet
    assert likely_in_flight(done, 3, 5, 2, triage=False) == 3 * 600, "one method for all: their mean"
    started = 5 * 600 + 2 * PRIOR_FULL_EXTRA
    assert likely_in_flight(done, 3, 5, 2, triage=True) == started, "the costs that let them start"
    room = done.tokens + _reserve(600, 4, 10)
    assert not full_fits(done, 4, 1, 10, room + 2 * PRIOR_FULL_EXTRA - 1)
    assert full_fits(done, 4, 1, 10, room + 2 * PRIOR_FULL_EXTRA)
    assert full_fits(done, 4, 0, 10, room), "none in flight: one starts and its cost is learnt"


def test_the_first_full_workflows_to_finish_do_not_set_the_cost_of_those_in_flight(monkeypatch):
    """The first full workflow to finish is a cheap one (a short workflow ends first): its cost
    alone would let every neuron in flight start one. The prior keeps its weight in the mean until
    enough have finished."""
    from neuronscope.explain.budget import PRIOR_FULL_EXTRA, PRIOR_FULLS

    _true_priors(monkeypatch, 600, PRIOR_FULL_EXTRA)  # the single pass of ``_tally``'s neurons

    cheap = int(PRIOR_FULL_EXTRA / 3)
    in_flight, left = 48, 300

    def allowed(t: Tally) -> int:
        budget = t.tokens + _reserve(600, in_flight, left) + 6 * PRIOR_FULL_EXTRA  # room for 6 at the prior
        return sum(full_fits(t, in_flight, k, left, budget) for k in range(in_flight))

    singles = [("triage/single-pass (budget)", 600)] * 20
    one = _tally([("triage/neuronscope", 600 + cheap)] + singles)
    assert allowed(one) == 6, "one cheap one finished: about as many as the prior allows, not 18"
    many = _tally([("triage/neuronscope", 600 + cheap)] * 120 * PRIOR_FULLS + singles)
    assert allowed(many) == 16, "many finished at that cost: their mean rules (18 at it exactly)"


def test_the_budget_s_unit_costs_shrink_towards_the_priors_from_below_only(monkeypatch):
    """A few cheap neurons finished first count towards the prior; a measured mean above the prior
    counts at once (a prior below an explainer's costs must not let more start than fit)."""
    from neuronscope.explain.budget import PRIOR_FULLS, PRIOR_SIDES, unit_costs

    _true_priors(monkeypatch, 650, 9500)
    assert unit_costs(Tally()) == (650, 9500)
    cheap = _tally([("triage/neuronscope", 600 + 3500)])  # one side: a single pass of 600
    assert unit_costs(cheap) == (
        (600 + PRIOR_SIDES * 650) / (1 + PRIOR_SIDES),
        (3500 + PRIOR_FULLS * 9500) / (1 + PRIOR_FULLS),
    )
    dear = _tally([("triage/neuronscope", 600 + 30_000)])
    assert unit_costs(dear)[1] == 30_000
    many = _tally([("triage/single-pass (budget)", 600)] * 10_000)
    assert 600 < unit_costs(many)[0] < 601, "many finished: their mean"


def test_those_in_flight_count_at_the_prior_until_as_many_have_finished(monkeypatch):
    """The first to finish are the cheap ones, so those still in flight will cost more than the
    mean so far: 4-12 full workflows finished at about half the run's mean let 8 more start beside
    30 in flight (RESULTS.md). Each one in flight counts as one more at the prior, and no cost falls
    below its prior while fewer have finished than are in flight."""
    from neuronscope.explain.budget import PRIOR_FULLS, PRIOR_SIDES, unit_costs

    _true_priors(monkeypatch, 650, 9500)
    first = _tally([("triage/neuronscope", 600 + 4260)] * 4)
    assert unit_costs(first, 87, 30) == (650, 9500), "4 finished, 30 in flight: the priors"
    assert unit_costs(first)[1] < 7000, "with none in flight their cheap mean pulls the cost down"
    later = _tally([("triage/neuronscope", 600 + 4260)] * 40 + [("triage/single-pass", 600)] * 60)
    assert unit_costs(later, 87, 30) == (
        (100 * 600 + (PRIOR_SIDES + 87) * 650) / (100 + PRIOR_SIDES + 87),
        (40 * 4260 + (PRIOR_FULLS + 30) * 9500) / (40 + PRIOR_FULLS + 30),
    )


def test_the_full_workflows_in_flight_at_the_start_are_not_joined_by_more_as_cheap_ones_finish(monkeypatch):
    """Room for 30 full workflows at the prior: the first four to finish, cheap, let none more
    start while the other 26 run (the mean with a light prior let the ninth to the twelfth start)."""
    from neuronscope.explain.budget import PRIOR_FULL_EXTRA

    _true_priors(monkeypatch, 600, PRIOR_FULL_EXTRA)  # the single pass of ``_tally``'s neurons
    t = _tally([("triage/neuronscope", 600 + 4260)] * 4 + [("triage/single-pass", 600)] * 8)
    in_flight, left = 48, 1700
    budget = t.tokens + _reserve(600, in_flight, left) + 30 * PRIOR_FULL_EXTRA
    fits = [full_fits(t, in_flight, k, left, budget) for k in range(24, 34)]
    assert fits == [True] * 6 + [False] * 4, "26 in flight and the 4 finished: 30 in all, at the prior"


def test_the_sides_not_submitted_are_reserved_with_a_margin(monkeypatch):
    """A full workflow too many leaves about seven neurons without their single pass, and layers
    differ in what a side costs: the sides to come are reserved at SINGLE_MARGIN beyond the mean."""
    from neuronscope.explain.budget import SINGLE_MARGIN

    _true_priors(monkeypatch, 600, 3300)
    t = _tally([("triage/single-pass", 600)] * 1000)
    at_mean = t.tokens + 600 * 500
    assert not full_fits(t, 0, 0, 500, at_mean), "the first full workflow starts only where the sides to come fit"
    assert full_fits(t, 0, 0, 500, at_mean + 600 * 500 * SINGLE_MARGIN)


def test_a_dry_run_scales_a_sample_to_the_selection_and_keeps_nothing(tmp_path, ray_by_value):
    from neuronscope.store import Store

    store = Store.open(str(tmp_path / "run"))
    month_neurons(store, 10)
    cfg = ExplainConfig(n_explain=6, n_heldout_top=3, n_heldout_random=2, dry_run=True, dry_run_sample=3)
    before = sorted(store.list(""))
    seen = []  # a later stage (the causal check) runs on the sample before its folder goes

    def causal(scratch) -> float:
        seen.append(scratch.list(layout.prefix(layout.EXPLANATIONS)))
        return 1.5

    est = estimate_run(RunContext(store, store, ScriptedLLM(), cfg, embedder=EMB), after=causal)
    assert len(seen) == 1 and seen[0] and (est.causal_seconds_per_neuron, est.causal_seconds) == (1.5, 15)
    assert "the causal check: 1.5 s per neuron" in estimate_line(est)
    assert sorted(store.list("")) == before  # the sample's outputs went to a scratch folder, now gone
    assert not list(tmp_path.glob("run/dry-run-*"))  # the folder too, not only its objects
    assert est.pending == 10 and est.sample == 3 and est.sample_failed == 0
    real = explain_run(RunContext(store, store, ScriptedLLM(), cfg.model_copy(update={"dry_run": False}), embedder=EMB))
    assert est.tokens == real.tokens  # alike neurons: the sample's mean is exact
    assert est.seconds > 0


def _tally(neurons: list[tuple[str, int]]) -> Tally:
    """A Tally of finished ok neurons, each (method, tokens) with a single-pass share of 600."""
    t = Tally()
    for i, (method, tokens) in enumerate(neurons):
        t.add(NeuronSummary(0, i, "ok", None, 1, None, None, None, method, tokens, 600))
    return t


def test_the_budget_reserves_the_single_pass_per_side(monkeypatch):
    """A neuron whose negative side the rule takes is two workflows: the single pass is reserved per
    side, so neurons to come with more negative sides than those finished are not under-reserved."""
    _true_priors(monkeypatch, 600, 3300)
    t = Tally()
    for i in range(4):  # 2 neurons with one side, 2 with both: 6 sides at 600 each
        neg = Side("triage/single-pass (budget)", 600, 600) if i % 2 else None
        cost = 1200 if i % 2 else 600
        t.add(NeuronSummary(0, i, "ok", None, 0, None, None, None, "triage/single-pass (budget)", cost, cost, neg))
    budget = t.tokens + _reserve(600, 0, 10) + 100
    assert full_fits(t, 0, 0, 10, budget)  # 10 sides to come at 600 each (900 a neuron would not fit)
    assert not full_fits(t, 0, 0, 11, budget)
    assert not full_fits(t, 1, 0, 10, budget)  # a side in flight counts too


def test_a_full_workflow_given_up_still_counts_as_a_full_workflow_s_spend():
    t = _tally(
        [("triage/neuronscope", 5000), ("triage/single-pass (full failed)", 3000), ("triage/single-pass (budget)", 600)]
    )
    assert t.full_extra == 4400 + 2400 and t.tokens == 8600 and t.baseline_tokens == 1800
