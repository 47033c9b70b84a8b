"""The vLLM pool's failure handling and the response cache, end to end.

Fast tests drive the pool's fail-over logic with stand-in Ray actors; slow ones kill parts of the
real vLLM-CPU engine (the session's shared pool, which Ray restarts, so later tests still have it)
and rerun the explain workflow from the response cache.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time

import pandas as pd
import pyarrow as pa
import pytest

from neuronscope.config import ExplainConfig, LLMConfig
from neuronscope.errors import LLMError
from neuronscope.llm.base import Completion, GenParams
from neuronscope.llm.vllm_backend import VLLMEngineActor, VLLMPool


def _stand_in(ray, delay: float = 0.0, restart_delay: float = 0.0):
    """A Ray actor with the engine actor's chat method: answers after ``delay`` seconds; once
    restarted, it comes up only after ``restart_delay`` (like an engine starting again)."""

    @ray.remote(max_restarts=1, max_task_retries=1)
    class StandIn:
        def __init__(self, marker: str):
            if os.path.exists(marker):
                time.sleep(restart_delay)
            open(marker, "w").close()
            self.marker = marker

        def chat(self, conversations, params):
            open(self.marker + ".busy", "w").close()  # the call is in progress: the test may strike now
            time.sleep(delay)
            return [Completion(f"{os.getpid()}", 1, 1) for _ in conversations]

    return StandIn


def _pool(actors, **cfg) -> VLLMPool:
    pool = VLLMPool(actors, "", LLMConfig(**{"max_retries": 1, "timeout_s": 30, **cfg}), "test")
    pool._next = 0  # first call to actors[0]
    return pool


CONV = [[{"role": "user", "content": "hi"}]]


def test_pool_skips_a_dead_replica_and_fails_clearly_when_none_is_left(ray_local, tmp_path):
    cls = _stand_in(ray_local)
    dead, live = cls.remote(str(tmp_path / "a")), cls.remote(str(tmp_path / "b"))
    ray_local.kill(dead, no_restart=True)
    (ans,) = _pool([dead, live]).chat(CONV, GenParams())
    assert ans.text == str(ray_local.get(live.chat.remote(CONV, GenParams()))[0].text)
    t0 = time.time()
    with pytest.raises(
        LLMError, match=r"all 1 vLLM replica\(s\) are dead and cannot restart \(replica 0: ActorDiedError"
    ):
        _pool([dead]).chat(CONV, GenParams())
    assert time.time() - t0 < 10


def test_batch_in_flight_on_a_dying_replica_moves_to_another(ray_local, tmp_path):
    victim = _stand_in(ray_local, delay=60.0, restart_delay=60.0).remote(str(tmp_path / "a"))
    other = _stand_in(ray_local).remote(str(tmp_path / "b"))
    other_pid = ray_local.get(other.chat.remote(CONV, GenParams()), timeout=120)[0].text
    busy = tmp_path / "a.busy"

    def kill_once_busy():
        deadline = time.monotonic() + 120
        while not busy.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        ray_local.kill(victim, no_restart=False)

    killer = threading.Thread(target=kill_once_busy)
    killer.start()
    t0 = time.time()
    (ans,) = _pool([victim, other], timeout_s=300).chat(CONV, GenParams())
    killer.join()
    assert busy.exists()  # the victim had the batch when it died
    # the other replica answered, long before the victim's 60 s restart or its 60 s answer
    assert ans.text == other_pid and time.time() - t0 < 50
    ray_local.kill(victim, no_restart=True)


def test_a_replica_that_never_answers_is_a_timeout_error_not_a_hang(ray_local, tmp_path):
    slow = _stand_in(ray_local, delay=300.0).remote(str(tmp_path / "a"))
    t0 = time.time()
    with pytest.raises(LLMError, match=r"failed after 2 attempt\(s\) \(replica 0: no answer within 1s\)"):
        _pool([slow], timeout_s=1).chat(CONV, GenParams())
    assert time.time() - t0 < 20
    ray_local.kill(slow, no_restart=True)


# --- the real engine -------------------------------------------------------------------------

CONVS = [[{"role": "user", "content": f"Write a short poem about the letter {c}."}] for c in "ABCDEF"]
# ignore_eos: no request can end early, so the batch is surely in flight for its whole length
# (128 decoding steps: seconds on any machine) once the engine holds all of it.
LONG = GenParams(max_tokens=128, ignore_eos=True)


def _engine_pid(pool: VLLMPool) -> int:
    return pool.stats()[0]["pid"]


def _wait_until_running(pool: VLLMPool, n: int, timeout: float = 120.0) -> dict:
    """The engine's stats once it is working on ``n`` requests (polled, not guessed by a sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        stats = pool.stats()[0]
        if stats["running"] >= n:
            return stats
        assert time.monotonic() < deadline, f"the engine never held {n} requests at once: {stats}"
        time.sleep(0.01)


def _shared(a: str, b: str) -> int:
    """The length of the characters ``a`` and ``b`` start with alike."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def _same_answers(got: list[Completion], expected: list[Completion], chars: int = 24) -> None:
    """The same greedy answers, each to its own conversation, allowing a split: a bf16 engine's
    logits differ in their last bits with the batch's makeup and a cold prefix cache, which can flip
    a near-tie a few tokens in. Each answer shares its first ``chars`` characters with its own
    expected answer or, split earlier, more of them than with any other expected answer."""
    assert [c.tokens_out for c in got] == [c.tokens_out for c in expected]
    for i, c in enumerate(got):
        own = _shared(c.text, expected[i].text)
        others = [_shared(c.text, e.text) for j, e in enumerate(expected) if j != i]
        assert own >= chars or own > max(others, default=-1), (i, c.text[:60], expected[i].text[:60])


def _answer_while(pool: VLLMPool, kill) -> list[Completion]:
    """The pool's answer to CONVS when ``kill()`` strikes the engine while the batch is in flight."""
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(out=pool.chat(CONVS, LONG)))
    served = pool.stats()[0]["requests"]
    worker.start()
    stats = _wait_until_running(pool, len(CONVS))
    assert worker.is_alive() and stats["requests"] == served  # the whole batch is still generating
    kill()
    worker.join(timeout=600)
    assert not worker.is_alive(), "the pool hung after its engine died"
    return result["out"]


@pytest.mark.slow
def test_killed_engine_actor_is_restarted_and_its_batch_answered(vllm_pool, ray_local):
    expected = vllm_pool.chat(CONVS, LONG)
    before = _engine_pid(vllm_pool)
    got = _answer_while(vllm_pool, lambda: ray_local.kill(vllm_pool.actors[0], no_restart=False))
    _same_answers(got, expected)  # the same greedy answers from a fresh engine
    assert _engine_pid(vllm_pool) != before


@pytest.mark.slow
def test_killed_engine_core_process_restarts_the_replica(vllm_pool):
    import psutil

    expected = vllm_pool.chat(CONVS, LONG)
    actor_pid = _engine_pid(vllm_pool)
    (core,) = [p for p in psutil.Process(actor_pid).children() if "EngineCore" in " ".join(p.cmdline()) + p.name()]
    got = _answer_while(vllm_pool, lambda: os.kill(core.pid, signal.SIGKILL))
    _same_answers(got, expected)
    assert _engine_pid(vllm_pool) != actor_pid  # the actor exited and Ray started a new one


@pytest.mark.slow
def test_replica_whose_engine_cannot_start_is_skipped_then_a_clear_error(vllm_pool, tmp_path):
    broken = VLLMEngineActor.options(num_cpus=0).remote(str(tmp_path / "no-such-model"), {})
    pool = VLLMPool([broken, *vllm_pool.actors], vllm_pool.tokenizer_path, vllm_pool.cfg, vllm_pool.model_id)
    for start in (0, 1):
        pool._next = start
        assert [c.text for c in pool.chat(CONVS[:2], GenParams(max_tokens=8))] == [
            c.text for c in vllm_pool.chat(CONVS[:2], GenParams(max_tokens=8))
        ]
    alone = VLLMPool([broken], vllm_pool.tokenizer_path, vllm_pool.cfg, vllm_pool.model_id)
    t0 = time.time()
    with pytest.raises(
        LLMError,
        match=r"dead and cannot restart \(replica 0: ActorDiedError: its engine could not "
        r"start: .*no-such-model",
    ):
        alone.chat(CONVS[:1], GenParams(max_tokens=8))
    assert time.time() - t0 < 60


# --- the response cache on the real engine ---------------------------------------------------

CFG = ExplainConfig(n_explain=6, n_heldout_top=2, n_heldout_random=2, max_modes=2, refine_rounds=1, max_in_flight=2)


def _month_records(llm) -> pd.DataFrame:
    from explain_helpers import MONTH_SENTENCES, MONTHS, PLAIN_SENTENCES, token_records

    return token_records(llm, MONTH_SENTENCES, PLAIN_SENTENCES, MONTHS, 4, 2)


def _served(pool: VLLMPool) -> int:
    return sum(s["requests"] for s in pool.stats())


def _without_calls(rows: list[dict]) -> list[dict]:
    """Rows minus ``llm_calls``, which counts engine requests and is 0 on a cached rerun by design."""
    return [{k: v for k, v in r.items() if k != "llm_calls"} for r in rows]


@pytest.mark.slow
def test_explain_neuron_rerun_from_the_cache_makes_no_llm_call(vllm_pool, tmp_path):
    from neuronscope.explain import NeuronOptions, explain_neuron
    from neuronscope.llm.cache import NeuronCache
    from neuronscope.schema import RECORDS
    from neuronscope.store import Store

    records = pa.Table.from_pandas(_month_records(vllm_pool), schema=RECORDS, preserve_index=False)
    cache = NeuronCache(Store.open(str(tmp_path / "run")), vllm_pool.model_id, 4, 2)
    first = explain_neuron(4, 2, records, vllm_pool, CFG, NeuronOptions(cache=cache))
    assert first.rows[0]["status"] == "ok" and first.rows[0]["llm_calls"] > 0, first.rows[0]["error"]
    served = _served(vllm_pool)
    second = explain_neuron(4, 2, records, vllm_pool, CFG, NeuronOptions(cache=cache))
    assert _served(vllm_pool) == served and second.ledger.total().calls == 0
    assert second.rows[0]["llm_calls"] == 0
    pd.testing.assert_frame_equal(pd.DataFrame(_without_calls(second.rows)), pd.DataFrame(_without_calls(first.rows)))
    assert second.ledger.total().cached == first.ledger.total().calls + first.ledger.total().cached


@pytest.mark.slow
def test_explain_run_into_a_fresh_store_with_the_cache_is_free_and_identical(vllm_pool, tmp_path):
    from neuronscope.explain import RunContext, explain_run
    from neuronscope.schema import RECORDS
    from neuronscope.store import Store

    first, second = Store.open(str(tmp_path / "first")), Store.open(str(tmp_path / "second"))
    first.write_parquet(
        "records/layer_004/part-00000.parquet",
        pa.Table.from_pandas(_month_records(vllm_pool), schema=RECORDS, preserve_index=False),
    )
    assert explain_run(RunContext(first, first, vllm_pool, CFG)).ok == 1
    shutil.copytree(tmp_path / "first" / "llm_cache", tmp_path / "second" / "llm_cache")
    served = _served(vllm_pool)
    assert explain_run(RunContext(first, second, vllm_pool, CFG)).ok == 1
    assert _served(vllm_pool) == served
    a, b = (s.read_parquet("explanations/").to_pandas() for s in (first, second))
    assert (b["llm_calls"] == 0).all() and (a["llm_calls"] > 0).all()
    measured = ["llm_calls", "timings"]  # engine requests (0 from the cache) and where the time went
    pd.testing.assert_frame_equal(a.drop(columns=measured), b.drop(columns=measured))
