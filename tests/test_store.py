"""One behaviour suite for the store, on local disk and on a real SeaweedFS S3 server."""

from __future__ import annotations

import pickle
import socket

import pyarrow as pa
import pytest

from neuronscope import schema
from neuronscope.errors import StoreError
from neuronscope.store import Store


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return Store.open(str(tmp_path / "run"))
    bucket = request.getfixturevalue("s3_env")
    return Store.open(f"s3://{bucket}/runs/r1")


def _records(n: int) -> pa.Table:
    rows = [{"layer": 1, "neuron": i, "kind": "top", "rank": 0, "window_id": 10 + i, "tokens": ["a", " b"],
             "token_ids": [1, 2], "activations": [0.5, float(i)], "max_pos": 1, "max_act": float(i)} for i in range(n)]
    return pa.Table.from_pylist(rows, schema=schema.RECORDS)


def test_bytes_json_parquet_round_trip(store):
    store.write_bytes("a/b.bin", b"\x00\x01")
    assert store.read_bytes("a/b.bin") == b"\x00\x01" and store.exists("a/b.bin") and not store.exists("a/c.bin")
    store.write_json("m.json", {"b": [1, 2], "a": "x"})
    assert store.read_json("m.json") == {"a": "x", "b": [1, 2]}
    t = _records(3)
    store.write_parquet("records/layer=1/part-00000.parquet", t)
    back = store.read_parquet("records/layer=1/part-00000.parquet")
    assert back.schema.equals(schema.RECORDS) and back.equals(t)


def test_overwrite_replaces_whole_object(store):
    store.write_bytes("k", b"first version, longer")
    store.write_bytes("k", b"second")
    assert store.read_bytes("k") == b"second"


def test_list_and_prefix_read(store):
    store.write_parquet("records/layer=2/part-00001.parquet", _records(2))
    store.write_parquet("records/layer=1/part-00000.parquet", _records(1))
    store.write_bytes("stats/x.json", b"{}")
    assert store.list("records/") == ["records/layer=1/part-00000.parquet", "records/layer=2/part-00001.parquet"]
    assert store.list("nothing/") == []
    both = store.read_parquet("records/")
    assert both.num_rows == 3 and both.column("neuron").to_pylist() == [0, 0, 1]
    with pytest.raises(StoreError, match="no Parquet files under .*empty/"):
        store.read_parquet("empty/")
    store.delete("stats/x.json")
    assert not store.exists("stats/x.json")


def test_missing_key_is_named(store):
    with pytest.raises(StoreError, match="nope/missing.json"):
        store.read_bytes("nope/missing.json")


def test_create_only_write(store):
    assert store.write_bytes_if_absent("claims/n1", b"me")
    assert not store.write_bytes_if_absent("claims/n1", b"you")
    assert store.read_bytes("claims/n1") == b"me"


def test_bad_keys_are_refused(store):
    for key in ("../escape", "/abs", "a/../../b"):
        with pytest.raises(StoreError, match="invalid store key"):
            store.write_bytes(key, b"x")


def test_pickles_for_ray_tasks(store):
    store.write_bytes("p", b"1")
    twin = pickle.loads(pickle.dumps(store))
    assert twin.uri == store.uri and twin.read_bytes("p") == b"1"


def test_check_writable_leaves_nothing(store):
    store.check_writable()
    assert store.list() == []


def test_local_crash_mid_write_keeps_old_object(tmp_path, monkeypatch):
    store = Store.open(str(tmp_path / "run"))
    store.write_bytes("x.json", b"old")

    class Boom(Exception):
        pass

    import os as _os

    real_fsync = _os.fsync

    def crash(fd):  # the bytes are in the temp file, then the writer dies
        raise Boom()

    monkeypatch.setattr("neuronscope.store.os.fsync", crash)
    with pytest.raises(Boom):
        store.write_bytes("x.json", b"new and longer")
    monkeypatch.setattr("neuronscope.store.os.fsync", real_fsync)
    assert store.read_bytes("x.json") == b"old"
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["x.json"]


def test_local_unwritable_location_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a regular file, so nothing can be created under it")
    with pytest.raises(StoreError, match=r"cannot write .*file/run"):
        Store.open(str(blocker / "run")).check_writable()


def test_s3_missing_bucket_is_named(s3_env):
    with pytest.raises(StoreError, match="bucket 'no-such-bucket-ns' does not exist"):
        Store.open("s3://no-such-bucket-ns/run").check_writable()
    with pytest.raises(StoreError, match="bucket 'no-such-bucket-ns' does not exist"):
        Store.open("s3://no-such-bucket-ns/run").exists("manifest.json")


def test_s3_bad_credentials_are_named(s3_env, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    with pytest.raises(StoreError, match=rf"credentials rejected by .* for s3://{s3_env}/run"):
        Store.open(f"s3://{s3_env}/run").check_writable()


def test_s3_unreachable_endpoint_fails_fast(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    with pytest.raises(StoreError, match=rf"cannot reach S3 endpoint http://127.0.0.1:{port}"):
        Store.open("s3://bucket/run").check_writable()


def test_s3_uri_without_bucket():
    with pytest.raises(StoreError, match="names no bucket"):
        Store.open("s3:///run")


def test_s3_large_object_goes_multipart(s3_env, monkeypatch):
    monkeypatch.setattr("neuronscope.store._MULTIPART_BYTES", 5 * 1024 * 1024)
    store = Store.open(f"s3://{s3_env}/big")
    data = bytes(range(256)) * (12 * 1024 * 1024 // 256)
    store.write_bytes("blob", data)
    assert store.read_bytes("blob") == data
