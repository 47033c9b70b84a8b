"""The corpus as a Ray Dataset: Parquet, JSONL and text shards recorded from a real S3 server
(SeaweedFS) through s3:// give the records, stats and counts of the same shards recorded from
local files; window ids are (shard, window in shard); --max-tokens takes the first windows in
shard order; bad shards stop the stage with one line naming the object."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from record_helpers import sorted_table, tiny_dir

from neuronscope.config import RecordConfig
from neuronscope.corpus import SHARD_WINDOW_BITS
from neuronscope.record import list_corpus, record
from neuronscope.record.source import local_windows
from neuronscope.store import Store

WORDS = ["the", "a", "king", "queen", "night", "day", "love", "death", "sword", "crown", "rose", "thou", "art", "fair"]


@pytest.fixture(scope="module")
def model(tmp_path_factory, tokenizer_dir):
    return tiny_dir(tmp_path_factory.mktemp("llama"), tokenizer_dir, "llama")


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> dict[str, bytes]:
    """Three shards of different kinds, each with rows the reader skips (and counts)."""
    rng = np.random.default_rng(1)

    def lines(n):
        return [" ".join(rng.choice(WORDS, size=rng.integers(3, 12))) for _ in range(n)]

    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"text": [*lines(20), "", None], "id": list(range(22))}), sink)
    jsonl = "\n".join(json.dumps({"text": t}) for t in [*lines(15), "   ", *lines(5)]) + "\n"
    txt = "\n".join([*lines(12), "nul\x00here", *lines(3)]) + "\n"
    return {"a.parquet": sink.getvalue().to_pybytes(), "b.jsonl": jsonl.encode(), "c.txt": txt.encode()}


@pytest.fixture(scope="module")
def local_corpus(tmp_path_factory, shards) -> str:
    folder = tmp_path_factory.mktemp("corpus")
    for name, data in shards.items():
        (folder / name).write_bytes(data)
    (folder / "README.md").write_text("not a shard\n")
    return str(folder)


def _upload(seaweedfs, bucket: str, shards: dict[str, bytes], prefix: str = "corpus/") -> None:
    client = seaweedfs.client()
    for name, data in shards.items():
        client.put_object(Bucket=bucket, Key=prefix + name, Body=data)


def _cfg(model: str, corpus: str, **kw) -> RecordConfig:
    base = dict(model=model, corpus=corpus, window=16, top_k=6, random_k=5, quantile_k=3, batch_size=4, seed=3)
    return RecordConfig(**{**base, **kw})


def test_s3_shards_record_exactly_as_the_same_local_shards(
    ray_local, tmp_path, model, shards, local_corpus, s3_env, seaweedfs
):
    _upload(seaweedfs, s3_env, shards)
    local = _cfg(model, f"{local_corpus}/*.*", num_actors=2)
    remote = _cfg(model, f"s3://{s3_env}/corpus/*", num_actors=1)
    source = list_corpus(remote.corpus)
    assert [s.name for s in source.shards] == [f"s3://{s3_env}/corpus/{n}" for n in sorted(shards)]
    assert all(s.version for s in source.shards) and source.fingerprint.startswith("shards-sha256:")
    a_store, b_store = Store.open(str(tmp_path / "local")), Store.open(f"s3://{s3_env}/run")
    a = record(local, a_store)
    b = record(remote, b_store, source=source)
    assert a["corpus_shards"] == b["corpus_shards"] == 3
    assert a["skipped"] == b["skipped"] == {"binary": 1, "empty": 3}
    assert a["n_windows"] == b["n_windows"] > 0 and a["n_tokens"] == b["n_tokens"]
    for prefix in ("records/", "stats/"):
        pd.testing.assert_frame_equal(
            sorted_table(a_store, prefix), sorted_table(b_store, prefix), check_exact=False, rtol=1e-5
        )
    # ids are (shard, window in shard): every shard contributed windows of its own
    ids, windows, _ = local_windows(local, _tokenizer(model))
    rec = sorted_table(a_store, "records/")
    assert set(rec.window_id) <= set(ids.tolist())
    assert sorted({int(i) >> SHARD_WINDOW_BITS for i in ids}) == [0, 1, 2]
    by_id = dict(zip(ids.tolist(), windows))
    for wid, token_ids in zip(rec.window_id, rec.token_ids):
        assert list(by_id[wid]) == token_ids  # exemplar tokens came with the recorders' candidates


def _tokenizer(model: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model)


def test_max_tokens_takes_the_first_windows_in_shard_order_wherever_they_are_read(
    ray_local, tmp_path, model, shards, local_corpus, s3_env, seaweedfs
):
    _upload(seaweedfs, s3_env, shards)
    ids, _, _ = local_windows(_cfg(model, f"{local_corpus}/*.*"), _tokenizer(model))
    first_shard = int((ids >> SHARD_WINDOW_BITS == 0).sum())
    budget = first_shard + 3  # all of shard 0 and the first 3 windows of shard 1
    stores = []
    for corpus, actors in ((f"{local_corpus}/*.*", 2), (f"s3://{s3_env}/corpus/*", 2)):
        store = Store.open(str(tmp_path / str(len(stores))))
        summary = record(_cfg(model, corpus, max_tokens=budget * 16, num_actors=actors), store)
        assert summary["n_windows"] == budget
        stores.append(store)
    want = set(ids[:budget].tolist())
    got = set(sorted_table(stores[0], "records/").window_id)
    assert got <= want and (1 << SHARD_WINDOW_BITS) + 2 in want
    for prefix in ("records/", "stats/"):
        pd.testing.assert_frame_equal(
            sorted_table(stores[0], prefix), sorted_table(stores[1], prefix), check_exact=False, rtol=1e-5
        )
    assert int(sorted_table(stores[0], "stats/").n_tokens[0]) == budget * 16
