"""A two-node Ray cluster on this machine: record and explain spread over both nodes; a record
driver killed mid-stage and resubmitted, and a worker node lost mid-explain, end equal to an
uninterrupted run, with no neuron lost or done twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import explain_drivers as drivers
import pandas as pd
import pytest
from ray_cluster import finished, until
from record_helpers import sorted_table, tiny_dir

from neuronscope.store import Store

pytestmark = pytest.mark.slow

RECORD = textwrap.dedent(
    """
    import sys
    from neuronscope import cli
    from neuronscope.record import driver

    driver.SHARD_NEURONS = 10
    sys.exit(cli.main(sys.argv[1:]))
    """
)
SHARDS = 9  # 3 layers x 24 neurons in shards of 10


def _record(cluster, model: str, corpus: str, out: str) -> subprocess.Popen:
    """`neuronscope record` as a driver process joining the cluster (as a submitted job does)."""
    flags = [
        "--window",
        "16",
        "--top-k",
        "6",
        "--random-k",
        "5",
        "--batch-size",
        "4",
        "--num-actors",
        "2",
        "--seed",
        "3",
        "--pass-memory-gib",  # less than one layer of a shard holds: a pass per layer and shard, 9 passes
        "0.00001",
    ]
    return subprocess.Popen(
        [sys.executable, "-c", RECORD, "record", "--out", out, "--model", model, "--corpus", corpus, *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=cluster.env(),
        start_new_session=True,
    )


def test_record_spreads_over_both_nodes_and_a_killed_driver_resubmitted_resumes_equal(
    two_nodes, tmp_path, tokenizer_dir, corpus
):
    model = tiny_dir(tmp_path / "model", tokenizer_dir, "llama")
    reference, run = Store.open(str(tmp_path / "reference")), Store.open(str(tmp_path / "run"))
    proc, nodes = _record(two_nodes, model, corpus, reference.uri), set()
    until("recorders on both nodes", proc, lambda: nodes.update(two_nodes.nodes_running("Recorder")) or len(nodes) == 2)
    finished(proc)

    proc = _record(two_nodes, model, corpus, run.uri)
    until("two shards written", proc, lambda: len(run.list("stats/")) >= 2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = len(run.list("stats/"))
    assert kept < SHARDS, "the driver finished before it was killed"
    out = finished(_record(two_nodes, model, corpus, run.uri))
    assert f"{kept}/{SHARDS} shards already in the store, skipped" in out, out
    entry = run.read_json("manifest.json")["stages"]["record"]
    assert entry["status"] == "done" and entry["summary"]["shards_recorded"] == SHARDS - kept
    assert [a["status"] for a in entry["earlier"]] == ["interrupted"]
    for prefix in ("records/", "stats/"):
        got, want = sorted_table(run, prefix), sorted_table(reference, prefix)
        assert not got.duplicated([c for c in ("layer", "neuron", "kind", "rank") if c in got.columns]).any()
        pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-5, atol=1e-6)


def test_explain_spreads_over_both_nodes_and_finishes_on_the_head_when_the_worker_node_dies(
    two_nodes, tmp_path, ray_local
):
    reference = drivers.reference(tmp_path, ray_local)
    run = Store.open(str(tmp_path / "run"))
    drivers.month_records(run)
    cfg = {**drivers.CFG, "max_in_flight": 4, "workflows_per_worker": 1}
    proc = drivers.driver(two_nodes.address, run.uri, run.uri, cfg=cfg, proc_env=two_nodes.env())
    until("a workflow on the worker node", proc, lambda: "worker" in two_nodes.nodes_running("WorkflowWorker"))
    two_nodes.stop_worker()  # its workflows in flight die with it
    summary = drivers.summary(proc)
    assert summary.ok == drivers.NEURONS and summary.failed == 0, summary
    got = drivers.explanations(run)
    assert not got.duplicated(["layer", "neuron", "mode"]).any()
    pd.testing.assert_frame_equal(got, drivers.explanations(reference))
