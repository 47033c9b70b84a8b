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
import pyarrow as pa
import pytest
import test_explain_fanout as tf
import test_explain_workflow as tw
from explain_helpers import MONTHS, records

from neuronscope.config import ExplainConfig
from neuronscope.explain import fanout
from neuronscope.schema import RECORDS
from neuronscope.store import Store

NEURONS = 10
CFG = {"n_explain": 6, "n_heldout_top": 3, "n_heldout_random": 2, "max_in_flight": 2, "compact_every": 4}

DRIVER = textwrap.dedent(
    """
    import json, sys, time
    sys.path.insert(0, sys.argv[3])
    import ray
    import explain_helpers, test_explain_fanout as tf, test_explain_workflow as tw
    from neuronscope.config import ExplainConfig
    from neuronscope.explain import fanout
    from neuronscope.store import Store

    class Slow(tw.ScriptedLLM):
        def chat(self, conversations, params):
            time.sleep(0.2)  # slow enough that the test can stop it part way
            return super().chat(conversations, params)

    ray.init(address=sys.argv[1], log_to_driver=False)
    for m in (tw, tf, explain_helpers):
        ray.cloudpickle.register_pickle_by_value(m)
    store = Store.open(sys.argv[2])
    fanout.explain_run(store, store, Slow(), ExplainConfig(**json.loads(sys.argv[4])), None, print, embedder=tf.EMB)
    """
)


def _records(store: Store) -> None:
    frames = [records(tw.SENTENCES, MONTHS, layer=1, neuron=n, randoms=tw.RANDOMS) for n in range(NEURONS)]
    df = pd.concat(frames, ignore_index=True)
    df["window_id"] = df["window_id"] + 100 * df["neuron"]
    store.write_parquet("records/layer_001/part-00000.parquet", pa.Table.from_pandas(df, schema=RECORDS))


def _explanations(store: Store) -> pd.DataFrame:
    rows = store.read_parquet("explanations/").to_pandas()
    return rows.sort_values(["layer", "neuron", "mode"]).reset_index(drop=True)


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
    for m in (tw, tf, sys.modules["explain_helpers"]):
        ray_local.cloudpickle.register_pickle_by_value(m)
    run, reference = Store.open(str(tmp_path / "run")), Store.open(str(tmp_path / "reference"))
    _records(run)
    _records(reference)
    cfg = ExplainConfig(**CFG)
    whole = fanout.explain_run(reference, reference, tw.ScriptedLLM(), cfg, None, embedder=tf.EMB)
    assert whole["ok"] == NEURONS
    address = ray_local.get_runtime_context().gcs_address
    tests_dir = str(Path(__file__).parent)
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, address, run.uri, tests_dir, json.dumps(CFG)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    _kill_when(proc, run, done=3)
    resumed = fanout.explain_run(run, run, tw.ScriptedLLM(), cfg, None, embedder=tf.EMB)
    assert resumed["skipped"] >= 3 and resumed["skipped"] + resumed["explained"] == NEURONS, resumed
    assert resumed["failed"] == 0
    got, want = _explanations(run), _explanations(reference)
    assert not got.duplicated(["layer", "neuron", "mode"]).any()
    pd.testing.assert_frame_equal(got, want)
    for n in range(NEURONS):
        assert fanout.read_transcript(run, 1, n)
