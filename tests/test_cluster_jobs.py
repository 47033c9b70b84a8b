"""Ray jobs submitted with `--working-dir .` to a two-node cluster, as README's cluster walk does:
the record job reads a corpus of Parquet and JSONL shards from S3 (SeaweedFS), writes its run to
S3, survives the worker node lost mid-stage and ends equal to the same shards recorded from local
files on one machine; the explain and atlas jobs then explain from that run and build its atlas in
the bucket. Every job imports the uploaded copy of the package, not the one installed beside the
cluster."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ray_cluster import finished, until
from record_helpers import sorted_table, tiny_dir

from neuronscope.config import RecordConfig
from neuronscope.record import record
from neuronscope.store import Store

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
# passes of one layer each (less memory than a layer holds), so the stage outlasts its first shard
RECORD = ["--window", "16", "--top-k", "6", "--random-k", "5", "--batch-size", "4", "--seed", "3"]
RECORD_SMALL = ["--pass-memory-gib", "0.00001", "--num-actors", "2"]
EXPLAIN = ["--layers", "1", "--neurons", "0", "--method", "single-pass", "--n-explain", "6"]
EXPLAIN += ["--n-heldout-top", "2", "--n-heldout-random", "2", "--causal-enabled", "false"]


def _shards(corpus: str) -> dict[str, bytes]:
    """The test corpus's lines as a Parquet shard and a JSONL shard."""
    lines = Path(corpus).read_text().splitlines()
    half = len(lines) // 2
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"text": lines[:half]}), sink)
    jsonl = "".join(json.dumps({"text": t}) + "\n" for t in lines[half:])
    return {"a.parquet": sink.getvalue().to_pybytes(), "b.jsonl": jsonl.encode()}


def _job(script: str, *args: str) -> str:
    """The job's shell command: where its package comes from, then the stage."""
    where = "import neuronscope; print('neuronscope from', neuronscope.__file__)"
    stage = [sys.executable, f"ray_jobs/{script}", *args]
    return shlex.join([sys.executable, "-c", where]) + " && " + shlex.join(stage)


def _ran_uploaded_copy(out: str) -> None:
    (line,) = [x for x in out.splitlines() if x.startswith("neuronscope from ")]
    assert not line.removeprefix("neuronscope from ").startswith(str(REPO)), line
    assert "working_dir_files" in line, line  # Ray's copy of the uploaded working dir
    assert "succeeded" in out, out[-3000:]


def test_record_and_explain_jobs_from_an_s3_corpus_survive_the_worker_node_lost(
    s3_env, seaweedfs, two_nodes_with_jobs, ray_local, tmp_path, tokenizer_dir, corpus
):
    cluster = two_nodes_with_jobs
    model = tiny_dir(tmp_path / "model", tokenizer_dir, "llama")
    shards, local = _shards(corpus), tmp_path / "shards"
    local.mkdir()
    client = seaweedfs.client()
    for name, data in shards.items():
        (local / name).write_bytes(data)
        client.put_object(Bucket=s3_env, Key=f"corpus/{name}", Body=data)
    reference = Store.open(str(tmp_path / "reference"))
    cfg = RecordConfig(model=model, corpus=f"{local}/*.*", window=16, top_k=6, random_k=5, batch_size=4, seed=3)
    record(cfg, reference)

    uri, env = f"s3://{s3_env}/run", seaweedfs.env()
    flags = ["--out", uri, "--model", model, "--corpus", f"s3://{s3_env}/corpus/*", *RECORD, *RECORD_SMALL]
    proc, run, nodes = cluster.submit(_job("record.py", *flags), env, REPO), Store.open(uri), set()
    until(
        "recorders on the worker node",
        proc,
        lambda: nodes.update(cluster.nodes_running("Recorder")) or "worker" in nodes,
    )
    until("a shard written", proc, lambda: len(run.list("stats/")) >= 1)
    cluster.stop_worker()
    out = finished(proc)
    _ran_uploaded_copy(out)
    assert run.read_json("manifest.json")["stages"]["record"]["status"] == "done"
    for prefix in ("records/", "stats/"):
        got, want = sorted_table(run, prefix), sorted_table(reference, prefix)
        assert not got.duplicated([c for c in ("layer", "neuron", "kind", "rank") if c in got.columns]).any()
        pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-5, atol=1e-6)

    out = finished(cluster.submit(_job("explain.py", "--records", uri, *EXPLAIN), env, REPO))
    _ran_uploaded_copy(out)
    expl = run.read_parquet("explanations/").to_pandas()
    assert set(zip(expl.layer, expl.neuron, expl.status)) == {(1, 0, "ok")}, expl.get("error")
    # the single pass's explanation is the baseline column's (its rows: mode -1); a negative side too, if due
    assert 1 in set(expl.polarity) and all(e.strip() for e in expl.baseline_explanation), expl.to_string()

    out = finished(cluster.submit(_job("atlas.py", uri), env, REPO))
    _ran_uploaded_copy(out)
    assert any(k.endswith("atlas/index.html") for k in run.list("atlas/")), run.list("atlas/")[:5]
