"""One process per stage of a run: the lease refuses a second holder, on a folder and on S3, and
a stage left behind by a dead process is taken over."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pyarrow as pa
import pytest
from explain_helpers import MONTHS, records

from neuronscope.cli import main
from neuronscope.layout import lease_key, records_key
from neuronscope.lease import RunLockedError, StageLease
from neuronscope.schema import RECORDS, conform
from neuronscope.store import Store


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return Store.open(str(tmp_path / "run"))
    return Store.open(f"s3://{request.getfixturevalue('s3_env')}/runs/r1")


def test_a_second_holder_is_refused_until_the_first_releases(store):
    with StageLease(store, "explain"):
        with pytest.raises(RunLockedError, match=rf"explain stage of .* is already running in process {os.getpid()}"):
            StageLease(store, "explain").acquire()
        StageLease(store, "record").__enter__().release()  # another stage is independent
    with StageLease(store, "explain"):
        assert store.exists(lease_key("explain"))
    assert not store.exists(lease_key("explain"))


def test_racing_acquirers_exactly_one_wins(store):
    leases = [StageLease(store, "explain") for _ in range(6)]
    won, barrier = [], threading.Barrier(len(leases))

    def take(lease):
        barrier.wait()
        try:
            lease.acquire()
            won.append(lease)
        except RunLockedError:
            pass

    threads = [threading.Thread(target=take, args=(x,)) for x in leases]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    won[0].release()


def _plant(store: Store, **holder) -> None:
    body = {"host": "elsewhere", "pid": 1, "id": "old", "since": time.time() - 999, "beat": time.time()} | holder
    store.write_bytes(lease_key("explain"), json.dumps(body).encode())


def test_a_stale_lease_is_taken_over(store):
    _plant(store, beat=time.time() - 3600)
    with StageLease(store, "explain") as lease:
        assert json.loads(store.read_bytes(lease_key("explain")))["id"] == lease.owner["id"]


def test_a_live_lease_elsewhere_is_respected(store):
    _plant(store)
    with pytest.raises(RunLockedError, match=r"process 1 on elsewhere .* rerun in 1\d\ds"):
        StageLease(store, "explain").acquire()
    assert json.loads(store.read_bytes(lease_key("explain")))["id"] == "old"


def test_a_dead_process_on_this_host_frees_its_lease_at_once(tmp_path):
    store = Store.open(str(tmp_path / "run"))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lease = StageLease(store, "explain")
    _plant(store, host=lease.owner["host"], pid=int(gone.stdout))
    with lease:
        assert json.loads(store.read_bytes(lease_key("explain")))["id"] == lease.owner["id"]


def test_a_holder_that_was_taken_over_never_overwrites_the_new_one(tmp_path):
    store = Store.open(str(tmp_path / "run"))
    first = StageLease(store, "explain", beat_s=0.05)
    first.acquire()
    _plant(store, id="new")  # as if another process took over while this one stalled
    first._thread.join(timeout=30)  # its next beat sees the new holder and stops
    assert not first._thread.is_alive()
    first.release()
    assert json.loads(store.read_bytes(lease_key("explain")))["id"] == "new"


def test_heartbeats_keep_a_long_stage_alive(tmp_path):
    store = Store.open(str(tmp_path / "run"))
    with StageLease(store, "explain", beat_s=0.05):
        first = json.loads(store.read_bytes(lease_key("explain")))["beat"]
        deadline = time.monotonic() + 30
        while json.loads(store.read_bytes(lease_key("explain")))["beat"] == first:
            assert time.monotonic() < deadline, "no heartbeat"
            time.sleep(0.01)


def test_a_second_explain_on_a_run_refuses_and_touches_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    store = Store.open(str(run))
    df = records([f"The report was filed in {m} by the clerk." for m in sorted(MONTHS)[:8]], MONTHS)
    store.write_parquet(records_key(0), conform(pa.Table.from_pandas(df, preserve_index=False), RECORDS))
    files = lambda: sorted(p.relative_to(run) for p in run.rglob("*") if p.is_file())
    before = files()
    with StageLease(store, "explain"):
        code = main(
            ["explain", "--records", str(run), "--llm-backend", "openai", "--llm-base-url", "http://127.0.0.1:9/v1"]
        )
        lease = store.read_bytes(lease_key("explain"))
    out = capsys.readouterr()
    err = [ln for ln in (out.out + out.err).splitlines() if ln.startswith("error:")]
    assert code == 2 and len(err) == 1 and "is already running in process" in err[0], err
    assert files() == before  # the holder's lease gone too
    assert json.loads(lease)["pid"] == os.getpid()
