"""One behaviour suite for the run store, on local disk and on a real SeaweedFS S3 server."""

from __future__ import annotations

import json
import os
import pickle
import socket
import threading
import time

import pyarrow as pa
import pytest

from neuronscope import schema
from neuronscope import store as store_mod
from neuronscope.errors import StoreError
from neuronscope.store import Store


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return Store.open(str(tmp_path / "run"))
    bucket = request.getfixturevalue("s3_env")
    return Store.open(f"s3://{bucket}/runs/r1/")


def _records(neurons: range, layer: int = 1) -> pa.Table:
    rows = [
        {
            "layer": layer,
            "neuron": n,
            "kind": "top",
            "rank": 0,
            "window_id": 10 + n,
            "tokens": ["a", " b", "\n"],
            "token_ids": [1, 2, 3],
            "activations": [0.5, float(n), -1.0],
            "max_pos": 1,
            "max_act": float(n),
        }
        for n in neurons
    ]
    return pa.Table.from_pylist(rows, schema=schema.RECORDS)


def _plant_crashed_write(store: Store, folder: str) -> None:
    """What a writer killed mid-write leaves behind: a partial temp object next to the real ones."""
    if store.local_root is not None:
        (store.local_root / folder).mkdir(parents=True, exist_ok=True)
        (store.local_root / folder / ".tmp-deadbeef").write_bytes(b"PAR1 half a file")
    else:  # S3: an unfinished multipart upload, which S3 never shows as an object
        s3, key = store.client, f"{store.prefix}/{folder}/part-99999.parquet"
        upload = s3.create_multipart_upload(Bucket=store.bucket, Key=key)["UploadId"]
        s3.upload_part(Bucket=store.bucket, Key=key, UploadId=upload, PartNumber=1, Body=b"PAR1 half a file")


# -- the shared behaviour ------------------------------------------------------------------------
def test_round_trips(store):
    store.write_bytes("a/b.bin", b"\x00\x01")
    assert store.read_bytes("a/b.bin") == b"\x00\x01"
    assert store.exists("a/b.bin") and not store.exists("a/c.bin") and not store.exists("a")
    store.write_json("manifest.json", {"b": [1, 2], "a": "é"})
    assert store.read_json("manifest.json") == {"a": "é", "b": [1, 2]}
    assert (
        store.read_bytes("manifest.json").decode()
        == json.dumps({"a": "é", "b": [1, 2]}, indent=2, sort_keys=True) + "\n"
    )
    t = _records(range(3))
    store.write_parquet("records/layer=1/part-00000.parquet", t)
    back = store.read_parquet("records/layer=1/part-00000.parquet")
    assert back.schema.equals(schema.RECORDS) and back.equals(t)
    store.write_bytes("a/b.bin", b"v2")  # overwrite replaces the whole object
    assert store.read_bytes("a/b.bin") == b"v2"


def test_parquet_statistics_on_scalar_columns_only(tmp_path):
    import pyarrow.parquet as pq

    store = Store.open(str(tmp_path / "run"))
    store.write_parquet("records/part-00000.parquet", _records(range(3)))
    meta = pq.ParquetFile(str(tmp_path / "run" / "records" / "part-00000.parquet")).metadata.row_group(0)
    stats = {meta.column(i).path_in_schema: meta.column(i).statistics for i in range(meta.num_columns)}
    assert stats["neuron"] is not None and (stats["neuron"].min, stats["neuron"].max) == (0, 2)
    assert stats["tokens.list.element"] is None and stats["activations.list.element"] is None


def test_list_prefix_read_and_delete(store):
    store.write_parquet("records/layer=2/part-00000.parquet", _records(range(4, 6), layer=2))
    store.write_parquet("records/layer=1/part-00001.parquet", _records(range(2, 4)))
    store.write_parquet("records/layer=1/part-00000.parquet", _records(range(0, 2)))
    store.write_bytes("records/README.txt", b"not parquet")
    store.write_json("manifest.json", {})
    _plant_crashed_write(store, "records/layer=1")
    expected = [
        "records/README.txt",
        "records/layer=1/part-00000.parquet",
        "records/layer=1/part-00001.parquet",
        "records/layer=2/part-00000.parquet",
    ]
    assert store.list("records/") == store.list("records") == expected
    assert store.list() == ["manifest.json"] + expected
    assert store.list("nothing/") == [] and store.list("manifest.json") == []
    both = store.read_parquet("records/")  # sorted by key, non-Parquet and partial objects skipped
    assert both.column("neuron").to_pylist() == [0, 1, 2, 3, 4, 5]
    assert both.column("layer").to_pylist() == [1, 1, 1, 1, 2, 2]
    with pytest.raises(StoreError, match="cannot read .*/empty/: no Parquet object"):
        store.read_parquet("empty/")
    store.delete("manifest.json")
    store.delete("manifest.json")  # idempotent, as on S3
    assert not store.exists("manifest.json") and "manifest.json" not in store.list()


def test_object_metadata_without_reading(store):
    """Sizes and versions (S3 ETags, local mtimes) of a folder's objects, and of one object."""
    store.write_bytes("corpus/a.jsonl", b"12345")
    store.write_bytes("corpus/sub/b.txt", b"12")
    store.write_bytes("other/c.txt", b"1")
    listed = store.list_info("corpus/")
    assert [(k, n) for k, n, _ in listed] == [("corpus/a.jsonl", 5), ("corpus/sub/b.txt", 2)]
    assert all(v for _, _, v in listed)
    assert store.object_info("corpus/a.jsonl") == listed[0][1:]
    assert store.object_info("corpus/none.txt") is None and store.list_info("nothing/") == []
    version = listed[1][2]
    store.write_bytes("corpus/sub/b.txt", b"21")  # same size, new content: a new version
    if store.local_root is not None:
        os.utime(store.local_root / "corpus/sub/b.txt", ns=(1, 1))
    assert store.object_info("corpus/sub/b.txt") != (2, version)


def test_missing_key_is_named(store):
    for read in (store.read_bytes, store.read_json, store.read_parquet):
        with pytest.raises(StoreError, match=r"cannot read .*/nope/missing\.json: (does not exist|no Parquet)"):
            read("nope/missing.json")


def test_create_only_write(store):
    assert store.write_bytes_if_absent("claims/n1", b"me")
    assert not store.write_bytes_if_absent("claims/n1", b"you")
    assert store.read_bytes("claims/n1") == b"me"
    wins = []  # racing claimers: exactly one gets it
    threads = [
        threading.Thread(target=lambda i=i: wins.append(store.write_bytes_if_absent("claims/n2", b"%d" % i)))
        for i in range(6)
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(wins) == [False] * 5 + [True]
    assert store.list("claims/") == ["claims/n1", "claims/n2"]


def test_bad_keys_are_refused(store):
    for key in ("../escape", "/abs", "a/../../b", "a//b", "", "a/.tmp-x"):
        with pytest.raises(StoreError, match="invalid store key"):
            store.write_bytes(key, b"x")
    with pytest.raises(StoreError, match="invalid store key '../up'"):
        store.read_bytes("../up")
    with pytest.raises(StoreError, match="invalid store key"):
        store.list("../")


def test_pickles_for_ray_tasks(store):
    store.write_bytes("p", b"1")  # the S3 client now exists; it must not travel
    blob = pickle.dumps(store)
    assert len(blob) < 300
    twin = pickle.loads(blob)
    assert twin == store and twin.uri == store.uri and twin.read_bytes("p") == b"1"


def test_check_writable_leaves_nothing(store):
    store.check_writable()
    assert store.list() == []


# -- local ---------------------------------------------------------------------------------------
def test_open_normalises_locations(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Store.open("run").uri == str(tmp_path / "run")
    assert Store.open(f"file://{tmp_path}/run/").uri == str(tmp_path / "run")
    assert Store.open("run").url("a/b.json") == f"{tmp_path}/run/a/b.json"
    s3 = Store.open("s3://bkt/a/b/")
    assert (s3.uri, s3.url("k.json")) == ("s3://bkt/a/b", "s3://bkt/a/b/k.json")
    assert Store.open("s3://bkt").url("k") == "s3://bkt/k"
    for bad, why in (("s3:///run", "names no bucket"), ("gs://b/run", "unsupported"), ("", "must be a path")):
        with pytest.raises(StoreError, match=why):
            Store.open(bad)


def test_local_crash_mid_write_keeps_old_object(tmp_path, monkeypatch):
    store = Store.open(str(tmp_path / "run"))
    store.write_bytes("x.json", b"old")

    def die(fd):  # the new bytes are all in the temp file; the writer dies before publishing
        assert os.fstat(fd).st_size == len(b"new and longer")
        raise KeyboardInterrupt

    monkeypatch.setattr(store_mod.os, "fsync", die)
    for write in (store.write_bytes, store.write_bytes_if_absent):
        with pytest.raises(KeyboardInterrupt):
            write("x.json", b"new and longer")
    with pytest.raises(KeyboardInterrupt):
        store.write_bytes_if_absent("fresh", b"new and longer")
    monkeypatch.undo()
    assert store.read_bytes("x.json") == b"old" and not store.exists("fresh")
    assert sorted(p.name for p in store.local_root.iterdir()) == ["x.json"]


def test_local_files_are_shared_readable(tmp_path):
    store = Store.open(str(tmp_path))
    store.write_bytes("a", b"1")
    store.write_bytes_if_absent("b", b"1")
    umask = os.umask(0)
    os.umask(umask)
    assert {(tmp_path / k).stat().st_mode & 0o777 for k in "ab"} == {0o666 & ~umask}


def test_local_unwritable_location_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a regular file: nothing can be created under it (chmod would not stop root)")
    under = Store.open(str(blocker / "run"))
    with pytest.raises(StoreError, match=rf"{blocker}/run: not a directory"):
        under.check_writable()
    with pytest.raises(StoreError, match=rf"cannot write {blocker}/run/x\.json: not a directory"):
        under.write_json("x.json", {})
    with pytest.raises(StoreError, match=rf"{blocker}: not a directory"):
        Store.open(str(blocker)).check_writable()


# -- S3 ------------------------------------------------------------------------------------------
def test_s3_large_object_goes_multipart(s3_env, monkeypatch):
    monkeypatch.setattr(store_mod, "MULTIPART_THRESHOLD", 5 << 20)
    monkeypatch.setattr(store_mod, "PART_SIZE", 5 << 20)
    store = Store.open(f"s3://{s3_env}/big")
    data = os.urandom(11 << 20)  # three parts
    store.write_bytes("blob", data)
    assert store.read_bytes("blob") == data
    assert store.client.head_object(Bucket=s3_env, Key="big/blob")["ETag"].endswith('-3"')


def test_s3_failed_multipart_leaves_nothing(s3_env, monkeypatch):
    from botocore.exceptions import EndpointConnectionError

    monkeypatch.setattr(store_mod, "MULTIPART_THRESHOLD", 5 << 20)
    monkeypatch.setattr(store_mod, "PART_SIZE", 5 << 20)
    store = Store.open(f"s3://{s3_env}/big")
    store.write_bytes("blob", b"old")
    real_upload_part, calls = store.client.upload_part, []

    def flaky_upload_part(**kw):  # the first part lands, then the link drops
        calls.append(kw["PartNumber"])
        if len(calls) > 1:
            raise EndpointConnectionError(endpoint_url=store.endpoint)
        return real_upload_part(**kw)

    monkeypatch.setattr(store.client, "upload_part", flaky_upload_part)
    with pytest.raises(StoreError, match="cannot reach S3 endpoint .* to write s3://.*/big/blob"):
        store.write_bytes("blob", os.urandom(11 << 20))
    assert store.read_bytes("blob") == b"old" and store.list() == ["blob"]
    assert store.client.list_multipart_uploads(Bucket=s3_env).get("Uploads", []) == []  # aborted


def test_s3_missing_bucket_is_named(s3_env):
    gone = Store.open("s3://no-such-bucket-ns/run")
    for call in (
        gone.check_writable,
        lambda: gone.write_bytes("k", b"1"),
        lambda: gone.read_bytes("k"),
        gone.list,
        lambda: gone.read_parquet("records/"),
    ):
        with pytest.raises(StoreError, match=r"bucket 'no-such-bucket-ns' does not exist \(s3://no-such-bucket-ns/run"):
            call()


@pytest.mark.parametrize("var", ["AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"])
def test_s3_bad_credentials_are_named(s3_env, seaweedfs, monkeypatch, var):
    monkeypatch.setenv(var, "wrong")
    store = Store.open(f"s3://{s3_env}/run")
    for call in (store.check_writable, lambda: store.exists("k"), lambda: store.read_bytes("k")):
        with pytest.raises(StoreError, match=rf"credentials rejected by {seaweedfs.endpoint} for s3://{s3_env}/run"):
            call()


def test_s3_unreachable_endpoint_fails_fast(monkeypatch):
    with socket.socket() as s:  # bound, never listening: connections are refused
        s.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{s.getsockname()[1]}"
        for k, v in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"}.items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
        t0 = time.monotonic()
        with pytest.raises(StoreError, match=rf"cannot reach S3 endpoint {endpoint} .*s3://bucket/run"):
            Store.open("s3://bucket/run").check_writable()
        assert time.monotonic() - t0 < 15


def test_replaced_objects_are_skipped_and_filtered_reads_fetch_one_neuron(store):
    store.write_parquet("t/a.parquet", _records(range(0, 3)))
    store.write_parquet("t/b.parquet", _records(range(3, 5)))
    merged = pa.concat_tables([_records(range(0, 3)), _records(range(3, 5))])
    store.write_parquet("t/part.parquet", merged, replaces=["t/a.parquet", "t/b.parquet"], row_group_size=2)
    whole = store.read_parquet("t/")  # a merge whose deletes never ran: no row twice
    assert whole.num_rows == 5 and whole.schema.metadata is None
    import pyarrow.dataset as ds

    one = store.read_parquet_where("t/", (ds.field("layer") == 1) & (ds.field("neuron") == 4), ["neuron", "max_act"])
    assert one.to_pylist() == [{"neuron": 4, "max_act": 4.0}]
    assert store.read_parquet_where(["t/a.parquet"], ds.field("neuron") == 2).num_rows == 1
