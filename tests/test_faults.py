"""Fault injection: a run killed part way and resumed ends equal to an uninterrupted one, with no
neuron lost and none done twice (the scripted test double of the LLM, a real 2-CPU Ray)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import explain_helpers
import fakes
import pandas as pd
import pytest
from explain_drivers import CFG, EMB, NEURONS, driver, explanations, month_records, reference, summary
from s3_server import Outage

from neuronscope.config import ExplainConfig
from neuronscope.explain import RunContext, explain_run
from neuronscope.results import read_transcript
from neuronscope.store import Store


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
    ref = reference(tmp_path, ray_local)
    run = Store.open(str(tmp_path / "run"))
    month_records(run)
    _kill_when(driver(ray_local, run.uri, run.uri), run, done=3)
    resumed = explain_run(RunContext(run, run, fakes.ScriptedLLM(), ExplainConfig(**CFG), embedder=EMB))
    assert resumed.skipped >= 3 and resumed.skipped + resumed.explained == NEURONS, resumed
    assert resumed.failed == 0
    got, want = explanations(run), explanations(ref)
    assert not got.duplicated(["layer", "neuron", "mode"]).any()
    pd.testing.assert_frame_equal(got, want)
    for n in range(NEURONS):
        assert read_transcript(run, 1, n)


@pytest.mark.slow
def test_s3_lost_mid_explain_fails_neurons_with_the_reason_and_a_rerun_completes(
    tmp_path, ray_local, s3_env, seaweedfs, monkeypatch
):
    ref = reference(tmp_path, ray_local)
    records = Store.open(str(tmp_path / "records"))
    month_records(records)
    outage = Outage(seaweedfs.endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL", outage.endpoint)
    env = {k: os.environ[k] for k in os.environ if k.startswith("AWS_")}
    out, direct = f"s3://{s3_env}/run", seaweedfs.client()
    listed = lambda: [o["Key"] for o in direct.list_objects_v2(Bucket=s3_env).get("Contents", [])]
    proc = driver(ray_local, records.uri, out, env)
    deadline = time.monotonic() + 300
    while sum("explanations/" in k for k in listed()) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.stdout else ""
        time.sleep(0.05)
    outage.down()  # mid-run: connections in flight are cut, new ones refused
    first = summary(proc)
    assert first.failed > 0 and first.ok + first.failed == NEURONS, first
    assert all("cannot reach S3 endpoint" in why for why in first.failures.values()), first.failures
    outage.up()
    store = Store.open(out)
    kept = store.read_parquet("explanations/").to_pandas()  # every object whole: a write is all or nothing
    assert set(kept.neuron) <= set(range(NEURONS)) and (kept.status == "ok").all()
    second = summary(driver(ray_local, records.uri, out, env))
    # a neuron whose last write landed but whose answer the outage cut failed in the first run
    # and is done now: skipped, as are those done then
    assert second.failed == 0 and second.skipped >= first.ok, second
    assert second.skipped + second.explained == NEURONS and second.skipped == len(set(kept.neuron)), second
    got = explanations(store)
    assert not got.duplicated(["layer", "neuron", "mode"]).any()
    pd.testing.assert_frame_equal(got, explanations(ref))


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

    for m in (fakes, explain_helpers):
        ray_local.cloudpickle.register_pickle_by_value(m)
    store = Store.open(str(tmp_path / "run"))
    month_records(store)
    url = "http://127.0.0.1:9/v1" if mode == "down" else f"{bad_llm_server}/{mode}/v1"
    llm = OpenAIClient(LLMConfig(backend="openai", base_url=url, max_retries=1, timeout_s=1))
    cfg, some = ExplainConfig(**CFG), [(1, n) for n in range(4)]
    t0 = time.monotonic()
    first = explain_run(RunContext(store, store, llm, cfg, embedder=EMB), some)
    # each neuron stops at its first call: two tries of at most timeout_s, two neurons at a time
    assert first.failed == 4 and time.monotonic() - t0 < 120, first
    assert all(reason in why for why in first.failures.values()), first.failures
    rows = store.read_parquet("explanations/").to_pandas()
    assert (rows.status == "failed").all() and rows.error.str.contains(reason, regex=False).all()
    second = explain_run(RunContext(store, store, fakes.ScriptedLLM(), cfg, embedder=EMB), some)
    assert second.ok == 4 and second.failed == 0, second
