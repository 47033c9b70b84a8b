"""Importing OpenAI NeuronRecord JSON into the RECORDS / STATS schemas."""

from __future__ import annotations

import json
import math

import pyarrow.parquet as pq
import pytest

from neuronscope.errors import CorpusError
from neuronscope.record import records_key, stats_key
from neuronscope.record.interop import import_openai, neuron_record_tables
from neuronscope.schema import RECORDS, STATS


def _ar(tokens, acts):
    return {"dataclass_name": "ActivationRecord", "tokens": tokens, "activations": acts}


RECORD = {
    "dataclass_name": "NeuronRecord",
    "neuron_id": {"dataclass_name": "NeuronId", "layer_index": 3, "neuron_index": 300},
    "random_sample": [_ar(["a", " b"], [0.1, -0.2])],
    "random_sample_by_quantile": [[_ar(["c"], [0.5])], [_ar(["d", "e"], [1.0, 2.0])]],
    "quantile_boundaries": [0.0, 0.5, 1.5],
    "mean": 0.25, "variance": 0.04, "skewness": 1.0, "kurtosis": 3.0,
    "most_positive_activation_records": [_ar(["x", " y", " z"], [0.0, 9.0, 1.0]), _ar(["w"], [4.0])],
}


def test_neuron_record_to_tables():
    rec, st = neuron_record_tables(json.dumps(RECORD))
    assert rec.schema.equals(RECORDS) and st.schema.equals(STATS)
    rows = rec.to_pylist()
    assert [(r["kind"], r["rank"]) for r in rows] == [("top", 0), ("top", 1), ("random", 0), ("quantile_0", 0), ("quantile_1", 0)]
    assert rows[0]["tokens"] == ["x", " y", " z"] and rows[0]["max_pos"] == 1 and rows[0]["max_act"] == 9.0
    assert {r["layer"] for r in rows} == {3} and {r["neuron"] for r in rows} == {300}
    assert len({r["window_id"] for r in rows}) == len(rows)
    s = st.to_pylist()[0]
    assert s["mean"] == 0.25 and s["std"] == pytest.approx(0.2) and s["max"] == 9.0 and math.isnan(s["min"])
    assert s["quantiles"] == [0.0, 0.5, 1.5] and s["n_tokens"] == -1


def test_import_folder_into_store(tmp_path):
    from neuronscope.store import Store

    src = tmp_path / "neurons" / "3"
    src.mkdir(parents=True)
    for n in (300, 2):
        r = json.loads(json.dumps(RECORD))
        r["neuron_id"]["neuron_index"] = n
        (src / f"{n}.json").write_text(json.dumps(r))
    out = tmp_path / "run"
    summary = import_openai(str(tmp_path / "neurons"), Store.open(str(out)))
    assert summary == {"neurons": 2, "parts": 2}
    t0 = pq.read_table(out / records_key(3, 0), partitioning=None)
    t1 = pq.read_table(out / records_key(3, 1), partitioning=None)
    assert set(t0["neuron"].to_pylist()) == {2} and set(t1["neuron"].to_pylist()) == {300}
    assert pq.read_table(out / stats_key(3, 1), partitioning=None).schema.remove_metadata().equals(STATS)


def test_bad_input_names_the_file(tmp_path):
    bad = tmp_path / "7.json"
    bad.write_text(json.dumps({"neuron_id": {"layer_index": 0, "neuron_index": 7},
                               "most_positive_activation_records": [{"tokens": ["a"], "activations": [1, 2]}]}))
    with pytest.raises(CorpusError, match=r"7\.json.*1 tokens but 2 activations"):
        import_openai(str(bad), None)
    bad.write_text("{}")
    with pytest.raises(CorpusError, match=r"7\.json.*not a NeuronRecord"):
        import_openai(str(tmp_path), None)
