"""The explain stage's outputs at scale: per-neuron objects merged into per-layer parts, read
back per neuron and as one table, a merge cut short losing and duplicating nothing, the
response cache in one object per neuron."""

from __future__ import annotations

import pyarrow as pa
import pytest

from neuronscope.explain.compact import FOLDERS, compact
from neuronscope.explain.schedule import Outputs
from neuronscope.layout import explanation_key
from neuronscope.llm.base import GenParams, Ledger, Metered
from neuronscope.llm.cache import NeuronCache
from neuronscope.parts import FolderIndex, part_keys, ranges
from neuronscope.results import (
    iter_transcripts,
    neuron_explanations,
    neuron_rows,
    read_explanations,
    read_transcript,
    write_result,
)
from neuronscope.results.transcript import entries_from_json
from neuronscope.schema import EXPLANATIONS, explanation_row
from neuronscope.show import show_neuron
from neuronscope.store import Store


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return Store.open(str(tmp_path / "run"))
    return Store.open(f"s3://{request.getfixturevalue('s3_env')}/runs/big/")


def _ok(layer, neuron, modes=2):
    return [
        explanation_row(layer, neuron, mode=m, n_modes=modes, explanation=f"L{layer}N{neuron} mode {m}", score=0.5)
        for m in range(modes)
    ]


def _failed(layer, neuron):
    return [explanation_row(layer, neuron, status="failed", error="boom")]


def _write(store, layer, neurons, failed=()):
    for n in neurons:
        rows = _failed(layer, n) if n in failed else _ok(layer, n)
        write_result(store, layer, n, rows, entries_from_json([{"agent": "explain", "neuron": n}, {"agent": "ledger"}]))


def _pairs(table):
    return sorted(zip(table["layer"].to_pylist(), table["neuron"].to_pylist(), table["mode"].to_pylist()))


def test_part_names_list_their_neurons_and_split_when_long():
    assert ranges([5, 1, 2, 3, 7]) == [(1, 3), (5, 5), (7, 7)]
    [(key, ns)] = part_keys("explanations", ".parquet", 3, [0, 1, 2, 9])
    assert key == "explanations/layer_003/part-00000-00002_00009.parquet" and ns == [0, 1, 2, 9]
    scattered = part_keys("transcripts", ".jsonl", 0, range(0, 400, 2))
    assert len(scattered) > 1 and sorted(n for _, ns in scattered for n in ns) == list(range(0, 400, 2))
    index = FolderIndex(
        "transcripts", [k for k, _ in scattered] + ["transcripts/layer_000/neuron_00001.jsonl", "transcripts/notes.txt"]
    )
    assert index.in_part(0, 398) and not index.in_part(0, 399) and set(index.layers) == {0}  # notes.txt ignored
    assert index.ok(0, 1) and index.sources(0, 1) == ["transcripts/layer_000/neuron_00001.jsonl"]


def test_compaction_reads_the_same_and_leaves_few_objects(store):
    _write(store, 2, range(10), failed={4})
    before = store.read_parquet("explanations/")
    merged = compact(store, 2, [n for n in range(10) if n != 4])
    assert merged == {"explanations": 9, "transcripts": 9, "llm_cache": 0}
    assert store.list("explanations/") == [
        "explanations/layer_002/neuron_00004.failed.parquet",
        "explanations/layer_002/part-00000-00003_00005-00009.parquet",
    ]
    assert len(store.list("transcripts/")) == 2
    after = store.read_parquet("explanations/")
    assert after.schema == EXPLANATIONS and _pairs(after) == _pairs(before) and after.num_rows == 19
    few = read_explanations(store, ["neuron", "status"])
    assert list(few.columns) == ["neuron", "status"] and len(few) == 19 and (few["status"] == "failed").sum() == 1
    one = neuron_explanations(store, 2, 7)
    assert one.num_rows == 2 and set(one["neuron"].to_pylist()) == {7}
    assert neuron_explanations(store, 2, 4)["status"].to_pylist() == ["failed"]
    assert read_transcript(store, 2, 7) == [{"agent": "explain", "neuron": 7}, {"agent": "ledger"}]
    assert read_transcript(store, 2, 4)[0]["neuron"] == 4 and read_transcript(store, 2, 11) is None
    assert sorted((la, n) for la, n, _ in iter_transcripts(store)) == [(2, n) for n in range(10)]
    shown = show_neuron(store.uri, 2, 7, transcript=True)  # from the part
    assert "L2N7 mode 1" in shown and '{"agent": "explain", "neuron": 7}' in shown
    done = Outputs(store)
    assert all(done.done(2, n, retry_failed=True) for n in range(10) if n != 4) and not done.done(2, 4, True)
    assert done.done(2, 4, retry_failed=False) and not done.stale and not done.waiting


def test_a_transcript_with_unicode_line_separators_in_its_text_reads_back(tmp_path):
    store = Store.open(str(tmp_path))
    odd = "Mark\u2028my words\x85now\u2029and\x1cthen"  # line breaks to str.splitlines, not to JSONL
    for n in (1, 2):
        write_result(
            store, 0, n, _ok(0, n), entries_from_json([{"agent": "explain", "answer": odd}, {"agent": "ledger"}])
        )
    assert read_transcript(store, 0, 1)[0]["answer"] == odd
    compact(store, 0, [1, 2])
    assert read_transcript(store, 0, 2)[0]["answer"] == odd and read_transcript(store, 0, 1)[0]["answer"] == odd


def _compact_killed(store, monkeypatch, layer, neurons, when) -> None:
    """A compaction killed at the delete for which ``when(key, deletes so far)`` holds."""
    real_delete, calls = Store.delete, []

    def die(self, key):
        calls.append(key)
        if when(key, len(calls)):
            raise OSError("killed mid-compaction")
        real_delete(self, key)

    monkeypatch.setattr(Store, "delete", die)
    with pytest.raises(OSError):
        compact(store, layer, neurons)
    monkeypatch.setattr(Store, "delete", real_delete)


@pytest.mark.parametrize("folder", [f.name for f in FOLDERS if f.name != "llm_cache"])
def test_a_merge_cut_before_its_deletes_loses_and_duplicates_nothing(store, monkeypatch, folder):
    _write(store, 1, range(6), failed={5})
    expected = _pairs(store.read_parquet("explanations/"))
    _compact_killed(store, monkeypatch, 1, range(5), lambda key, n: key.startswith(folder + "/"))
    assert _pairs(store.read_parquet("explanations/")) == expected  # no row twice, none missing
    assert neuron_explanations(store, 1, 2).num_rows == 2 and read_transcript(store, 1, 2)[0]["neuron"] == 2
    outputs = Outputs(store)  # the next run: done neurons are still done; the leftovers go
    assert all(outputs.done(1, n, True) for n in range(5)) and not outputs.done(1, 5, True)
    assert outputs.stale and all("/neuron_" in k for k in outputs.stale)
    for key in outputs.stale:
        store.delete(key)
    if folder == "explanations":  # the transcripts were never merged: the next run merges them
        assert outputs.waiting == {1: set(range(5))}
        compact(store, 1, sorted(outputs.waiting[1]))
    assert _pairs(store.read_parquet("explanations/")) == expected
    assert len(store.list("transcripts/")) == 2 and len(store.list("explanations/")) == 2


def test_a_merge_retried_after_some_deletes_writes_no_second_part(tmp_path, monkeypatch):
    store = Store.open(str(tmp_path / "run"))
    _write(store, 1, range(4))
    _compact_killed(store, monkeypatch, 1, range(4), lambda key, n: n == 2)  # at its second delete
    compact(store, 1, range(4))  # the compaction task's retry
    assert store.list("explanations/") == ["explanations/layer_001/part-00000-00003.parquet"]
    assert store.read_parquet("explanations/").num_rows == 8


def test_a_run_without_explanations_reads_as_no_rows(tmp_path):
    from neuronscope.report import polysemanticity

    none = read_explanations(Store.open(str(tmp_path / "run")), ["layer", "neuron", "status", "n_modes"])
    assert none.empty and list(none.columns) == ["layer", "neuron", "status", "n_modes"]
    assert polysemanticity(none) == {"neurons": 0}


def test_a_retried_neuron_replaces_its_failure(tmp_path):
    store = Store.open(str(tmp_path / "run"))
    _write(store, 0, [3], failed={3})
    _write(store, 0, [3])
    assert store.list("explanations/") == [explanation_key(0, 3)]
    assert neuron_explanations(store, 0, 3)["status"].to_pylist() == ["ok", "ok"]


def test_records_and_explanations_are_read_one_neuron_at_a_time(tmp_path):
    store = Store.open(str(tmp_path / "run"))
    rows = [
        {
            "layer": 1,
            "neuron": n,
            "kind": "top",
            "rank": 0,
            "window_id": n,
            "tokens": ["a"],
            "token_ids": [1],
            "activations": [1.0],
            "max_pos": 0,
            "max_act": 1.0,
        }
        for n in range(50)
    ]
    from neuronscope.schema import RECORDS

    store.write_parquet(
        "records/layer_001/part-00000.parquet", pa.Table.from_pylist(rows, schema=RECORDS), row_group_size=10
    )
    got = neuron_rows(store, "records/", 1, 17)
    assert got["window_id"].tolist() == [17]
    assert neuron_rows(store, "records/", 2, 17).empty and neuron_rows(store, "stats/", 1, 17) is None


class _Counting:
    model_id = "counting@1"

    def __init__(self):
        self.requests = 0

    def chat(self, conversations, params):
        from neuronscope.llm.base import Completion

        self.requests += len(conversations)
        return [Completion(c[0]["content"].upper(), 3, 2) for c in conversations]


def _ask(cache, engine, words):
    ledger = Ledger()
    out = Metered(engine, ledger, cache).chat("explain", [[{"role": "user", "content": w}] for w in words], GenParams())
    return [c.text for c in out], ledger.total()


def test_the_response_cache_is_one_object_per_neuron_and_survives_compaction(tmp_path):
    store = Store.open(str(tmp_path / "run"))
    engine = _Counting()
    cache = NeuronCache(store, engine.model_id, 4, 9)
    assert _ask(cache, engine, ["a", "b", "c"])[0] == ["A", "B", "C"]
    cache.flush()
    assert store.list("llm_cache/") == ["llm_cache/layer_004/neuron_00009.parquet"] and engine.requests == 3
    index = lambda: FolderIndex.listing(store, "llm_cache")
    again = NeuronCache(store, engine.model_id, 4, 9, index().sources(4, 9))
    texts, used = _ask(again, engine, ["a", "b", "d"])
    assert texts == ["A", "B", "D"] and (used.calls, used.cached) == (1, 2)
    again.flush()  # its own object now holds a, b, c, d
    _write(store, 4, [9])
    compact(store, 4, [9])
    assert store.list("llm_cache/") == ["llm_cache/layer_004/part-00009.parquet"]
    third = NeuronCache(store, engine.model_id, 4, 9, index().sources(4, 9))
    texts, used = _ask(third, engine, ["d", "c"])
    assert texts == ["D", "C"] and used.calls == 0 and engine.requests == 4
    other = NeuronCache(store, engine.model_id, 4, 8, index().sources(4, 8))
    assert _ask(other, engine, ["a"])[1].calls == 1  # another neuron's answers are not its own


def test_a_bad_key_in_a_filtered_read_is_named(tmp_path):
    from neuronscope.errors import StoreError

    store = Store.open(str(tmp_path / "run"))
    with pytest.raises(StoreError, match="nothing/here.parquet"):
        store.read_parquet_where(["nothing/here.parquet"])
    with pytest.raises(StoreError, match="invalid store key"):
        store.read_parquet_where(["../x.parquet"])
