"""Fault injection: a run killed part way and resumed ends equal to an uninterrupted one, with no
neuron lost and none done twice (the scripted test double of the LLM, a real 2-CPU Ray)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import test_explain_fanout as tf
import test_explain_workflow as tw
from s3_server import Outage

from neuronscope.config import ExplainConfig
from neuronscope.explain import RunContext, RunSummary, explain_run
from neuronscope.results import read_transcript
from neuronscope.store import Store

NEURONS = 10
CFG = {"n_explain": 6, "n_heldout_top": 3, "n_heldout_random": 2, "max_in_flight": 2, "compact_every": 4}

DRIVER = textwrap.dedent(
    """
    import json, sys, time
    sys.path.insert(0, sys.argv[4])
    import ray
    import explain_helpers, test_explain_fanout as tf, test_explain_workflow as tw
    from neuronscope.config import ExplainConfig
    from neuronscope.explain import RunContext, explain_run
    from neuronscope.store import Store

    class Slow(tw.ScriptedLLM):
        def chat(self, conversations, params):
            time.sleep(0.2)  # slow enough that the test can stop it part way
            return super().chat(conversations, params)

    records, out, tests, cfg, env = sys.argv[2:]
    ray.init(address=sys.argv[1], log_to_driver=False, runtime_env={"env_vars": json.loads(env)})
    for m in (tw, tf, explain_helpers):
        ray.cloudpickle.register_pickle_by_value(m)
    cfg = ExplainConfig(**json.loads(cfg))
    run = RunContext(Store.open(records), Store.open(out), Slow(), cfg, embedder=tf.EMB)
    print(json.dumps(explain_run(run, None, print).as_dict(), default=str))
    """
)


def _records(store: Store) -> None:
    tf.month_neurons(store, NEURONS)


def _explanations(store: Store) -> pd.DataFrame:
    rows = store.read_parquet("explanations/").to_pandas()
    return rows.sort_values(["layer", "neuron", "mode"]).reset_index(drop=True)


def _driver(
    ray_or_address,
    records: str,
    out: str,
    env: dict | None = None,
    cfg: dict | None = None,
    proc_env: dict | None = None,
) -> subprocess.Popen:
    """An explain driver process on the test's Ray (or the cluster at an address), its workers
    given ``env``, itself ``proc_env`` (default: this process's)."""
    address = ray_or_address if isinstance(ray_or_address, str) else ray_or_address.get_runtime_context().gcs_address
    args = [address, records, out, str(Path(__file__).parent), json.dumps(cfg or CFG), json.dumps(env or {})]
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=proc_env,
        start_new_session=True,
    )


def _summary(proc: subprocess.Popen) -> RunSummary:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    return RunSummary(**json.loads(out.strip().splitlines()[-1]))


def _reference(tmp_path, ray_local) -> Store:
    for m in (tw, tf, sys.modules["explain_helpers"]):
        ray_local.cloudpickle.register_pickle_by_value(m)
    reference = Store.open(str(tmp_path / "reference"))
    _records(reference)
    whole = explain_run(RunContext(reference, reference, tw.ScriptedLLM(), ExplainConfig(**CFG), embedder=tf.EMB))
    assert whole.ok == NEURONS
    return reference


def _kill_when(proc: subprocess.Popen, store: Store, done: int, timeout_s: float = 300) -> None:
    """SIGKILL the driver once ``done`` neurons have their outputs (never before, never after all)."""
    deadline = time.monotonic() + timeout_s
    while len(store.list("explanations/")) < done:
        assert proc.poll() is None, f"driver ended before it was killed: {proc.stdout.read()}"
        assert time.monotonic() < deadline, "the driver wrote nothing"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_an_explain_driver_killed_mid_run_resumes_with_nothing_lost_or_doubled(tmp_path, ray_local):
    reference = _reference(tmp_path, ray_local)
    run = Store.open(str(tmp_path / "run"))
    _records(run)
    _kill_when(_driver(ray_local, run.uri, run.uri), run, done=3)
    resumed = explain_run(RunContext(run, run, tw.ScriptedLLM(), ExplainConfig(**CFG), embedder=tf.EMB))
    assert resumed.skipped >= 3 and resumed.skipped + resumed.explained == NEURONS, resumed
    assert resumed.failed == 0
    got, want = _explanations(run), _explanations(reference)
    assert not got.duplicated(["layer", "neuron", "mode"]).any()
    pd.testing.assert_frame_equal(got, want)
    for n in range(NEURONS):
        assert read_transcript(run, 1, n)


@pytest.mark.slow
def test_s3_lost_mid_explain_fails_neurons_with_the_reason_and_a_rerun_completes(
    tmp_path, ray_local, s3_env, seaweedfs, monkeypatch
):
    reference = _reference(tmp_path, ray_local)
    records = Store.open(str(tmp_path / "records"))
    _records(records)
    outage = Outage(seaweedfs.endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL", outage.endpoint)
    env = {k: os.environ[k] for k in os.environ if k.startswith("AWS_")}
    out, direct = f"s3://{s3_env}/run", seaweedfs.client()
    listed = lambda: [o["Key"] for o in direct.list_objects_v2(Bucket=s3_env).get("Contents", [])]
    proc = _driver(ray_local, records.uri, out, env)
    deadline = time.monotonic() + 300
    while sum("explanations/" in k for k in listed()) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.stdout else ""
        time.sleep(0.05)
    outage.down()  # mid-run: connections in flight are cut, new ones refused
    first = _summary(proc)
    assert first.failed > 0 and first.ok + first.failed == NEURONS, first
    assert all("cannot reach S3 endpoint" in why for why in first.failures.values()), first.failures
    outage.up()
    store = Store.open(out)
    kept = store.read_parquet("explanations/").to_pandas()  # every object whole: a write is all or nothing
    assert set(kept.neuron) <= set(range(NEURONS)) and (kept.status == "ok").all()
    second = _summary(_driver(ray_local, records.uri, out, env))
    assert second.failed == 0 and second.skipped == first.ok, second
    got = _explanations(store)
    assert not got.duplicated(["layer", "neuron", "mode"]).any()
    pd.testing.assert_frame_equal(got, _explanations(reference))


@pytest.mark.slow
@pytest.mark.parametrize(
    "mode,reason",
    [
        ("down", "unreachable after 2 attempts"),
        ("error500", "HTTP 500"),
        ("garbage", "not JSON"),
        ("hang", "unreachable after 2 attempts"),
    ],
)
def test_a_failing_llm_fails_each_neuron_with_its_reason_in_bounded_time_and_a_rerun_completes(
    mode, reason, tmp_path, ray_local, bad_llm_server
):
    from neuronscope.config import LLMConfig
    from neuronscope.llm.openai_backend import OpenAIClient

    for m in (tw, tf, sys.modules["explain_helpers"]):
        ray_local.cloudpickle.register_pickle_by_value(m)
    store = Store.open(str(tmp_path / "run"))
    _records(store)
    url = "http://127.0.0.1:9/v1" if mode == "down" else f"{bad_llm_server}/{mode}/v1"
    llm = OpenAIClient(LLMConfig(backend="openai", base_url=url, max_retries=1, timeout_s=1))
    cfg, some = ExplainConfig(**CFG), [(1, n) for n in range(4)]
    t0 = time.monotonic()
    first = explain_run(RunContext(store, store, llm, cfg, embedder=tf.EMB), some)
    # each neuron stops at its first call: two tries of at most timeout_s, two neurons at a time
    assert first.failed == 4 and time.monotonic() - t0 < 120, first
    assert all(reason in why for why in first.failures.values()), first.failures
    rows = store.read_parquet("explanations/").to_pandas()
    assert (rows.status == "failed").all() and rows.error.str.contains(reason, regex=False).all()
    second = explain_run(RunContext(store, store, tw.ScriptedLLM(), cfg, embedder=tf.EMB), some)
    assert second.ok == 4 and second.failed == 0, second
