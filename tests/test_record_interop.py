"""Importing OpenAI NeuronRecord JSON into the RECORDS / STATS schemas."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest

from neuronscope.errors import CorpusError
from neuronscope.layout import records_key, stats_key
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
    "mean": 0.25,
    "variance": 0.04,
    "skewness": 1.0,
    "kurtosis": 3.0,
    "most_positive_activation_records": [_ar(["x", " y", " z"], [0.0, 9.0, 1.0]), _ar(["w"], [4.0])],
}


def test_neuron_record_to_tables():
    rec, st = neuron_record_tables(json.dumps(RECORD))
    assert rec.schema.equals(RECORDS) and st.schema.equals(STATS)
    rows = rec.to_pylist()
    assert [(r["kind"], r["rank"]) for r in rows] == [
        ("top", 0),
        ("top", 1),
        ("random", 0),
        ("quantile_0", 0),
        ("quantile_1", 0),
    ]
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
    bad.write_text(
        json.dumps(
            {
                "neuron_id": {"layer_index": 0, "neuron_index": 7},
                "most_positive_activation_records": [{"tokens": ["a"], "activations": [1, 2]}],
            }
        )
    )
    with pytest.raises(CorpusError, match=r"7\.json.*1 tokens but 2 activations"):
        import_openai(str(bad), None)
    bad.write_text("{}")
    with pytest.raises(CorpusError, match=r"7\.json.*not a NeuronRecord"):
        import_openai(str(tmp_path), None)


# --- neuron puzzles and NeuronRecord export -------------------------------------------------

PUZZLES = {  # their puzzles.json shape: plain strings have activation 0
    "colors": {
        "name": "colors",
        "explanation": "words related to colors",
        "sentences": [
            ["His", " shoes", " were", [" black", 9], "."],
            [["Red", 9], ",", [" yellow", 10]],
            ["No", " color", " here"],
        ],
        "false_explanations": ["adjectives", "clothes"],
    },
    "years": {
        "name": "years",
        "explanation": "wrong years",
        "sentences": [["In", " ", ["168", 9], ["7", 8.5]]],
        "false_explanations": [],
    },
}


def test_puzzles_import(tmp_path):
    from neuronscope.record.interop import import_puzzles
    from neuronscope.store import Store

    src = tmp_path / "puzzles.json"
    src.write_text(json.dumps(PUZZLES))
    store = Store.open(str(tmp_path / "run"))
    assert import_puzzles(str(src), store) == {"neurons": 2, "parts": 1}
    rec = pq.read_table(tmp_path / "run" / records_key(0, 0), partitioning=None)
    assert rec.schema.remove_metadata().equals(RECORDS)
    rows = [r for r in rec.to_pylist() if r["neuron"] == 0]
    # ranked by max activation; the all-zero sentence last
    assert [(r["kind"], r["rank"], r["window_id"], r["max_act"], r["max_pos"]) for r in rows] == [
        ("top", 0, 1, 10.0, 2),
        ("top", 1, 0, 9.0, 3),
        ("top", 2, 2, 0.0, 0),
    ]
    assert rows[0]["tokens"] == ["Red", ",", " yellow"] and rows[0]["activations"] == [9.0, 0.0, 10.0]
    st = pq.read_table(tmp_path / "run" / stats_key(0, 0), partitioning=None).to_pylist()
    assert [s["neuron"] for s in st] == [0, 1] and st[0]["n_tokens"] == 11 and st[0]["max"] == 10.0
    assert st[0]["mean"] == pytest.approx(28 / 11)
    assert store.read_json("puzzles.json")["1"] == {
        "name": "years",
        "explanation": "wrong years",
        "false_explanations": [],
    }


def test_puzzles_bad_input_names_the_puzzle(tmp_path):
    from neuronscope.record.interop import import_puzzles

    src = tmp_path / "p.json"
    src.write_text(json.dumps({"bad": {"sentences": [["a", ["b"]]]}}))
    with pytest.raises(CorpusError, match=r"p\.json: puzzle 'bad'.*\['b'\]"):
        import_puzzles(str(src), None)
    src.write_text("[1, 2]")
    with pytest.raises(CorpusError, match=r"p\.json.*not a JSON object of puzzles"):
        import_puzzles(str(src), None)
    with pytest.raises(CorpusError, match="cannot read puzzle file"):
        import_puzzles(str(tmp_path / "missing.json"), None)


def test_export_round_trips_through_the_importer():
    from neuronscope.record.interop import neuron_record_json

    rec, st = neuron_record_tables(json.dumps(RECORD))
    exported = neuron_record_json(rec, st)
    # what their FastDataclass loader needs: every object tagged, NeuronRecord's fields only
    assert set(exported) == set(RECORD) and exported["dataclass_name"] == "NeuronRecord"
    again = neuron_record_tables(json.dumps(exported))
    assert again[0].equals(rec)
    s0, s1 = st.to_pylist()[0], again[1].to_pylist()[0]
    assert math.isnan(s1.pop("min")) and math.isnan(s0.pop("min"))
    assert s1.pop("std") == pytest.approx(s0.pop("std")) and s1 == s0


def _recorded_stats(**columns):
    """One STATS row as the record stage writes it (levels and all), ``columns`` over defaults."""
    import pyarrow as pa

    from neuronscope.schema import conform

    row = dict(mean=0.5, std=1.0, n_tokens=100) | columns
    return conform(pa.Table.from_pylist([row]), STATS)


def test_export_of_recorded_rows_keeps_what_the_format_holds():
    import pyarrow as pa

    from neuronscope.record.interop import neuron_record_json
    from neuronscope.schema import conform

    rows = [
        dict(
            layer=2,
            neuron=9,
            kind=kind,
            rank=rank,
            window_id=wid,
            tokens=["a", "b"],
            token_ids=[5, 6],
            activations=acts,
            max_pos=1,
            max_act=acts[1],
        )
        for kind, rank, wid, acts in [
            ("top", 1, 40, [0.5, 2.0]),
            ("top", 0, 7, [1.0, 3.0]),
            ("random", 0, 3, [0.1, 0.2]),
        ]
    ]
    rec = conform(pa.Table.from_pylist(rows), RECORDS)
    stats = _recorded_stats(layer=2, neuron=9, std=2.0, min=-1.0, max=3.0, quantile_levels=[0.5], quantiles=[0.4])
    back, st = neuron_record_tables(json.dumps(neuron_record_json(rec, stats)))
    cols = ["layer", "neuron", "kind", "rank", "tokens", "activations", "max_pos", "max_act"]
    expected = rec.sort_by([("kind", "descending"), ("rank", "ascending")]).select(cols)
    assert back.select(cols).equals(expected)
    s = st.to_pylist()[0]
    assert s["mean"] == 0.5 and s["std"] == 2.0 and s["quantiles"] == [pytest.approx(0.4)]


def test_export_of_recorded_strata_keeps_their_order_and_octave_edges():
    """Recorded strata export as random_sample_by_quantile, lowest first, with the octave edges
    between them; the negative side has no place in the format and is left out."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from neuronscope.record.interop import neuron_record_json
    from neuronscope.schema import conform

    def row(kind, rank, acts):
        pos = int(np.argmin(acts) if kind.startswith(("bottom", "negative")) else np.argmax(acts))
        return dict(
            layer=1,
            neuron=4,
            kind=kind,
            rank=rank,
            window_id=10 * rank + len(kind),
            tokens=["a", "b"],
            token_ids=[1, 2],
            activations=acts,
            max_pos=pos,
            max_act=acts[pos],
        )

    # the neuron's max 5.0 is in octave 2 ([4, 8)): with 3 bins, strata [1, 2), [2, 4), [4, 8)
    rows = [
        row("top", 0, [0.5, 5.0]),
        row("random", 0, [0.1, 0.2]),
        row("quantile_2", 0, [5.0, 1.0]),
        row("quantile_0", 1, [1.5, 0.0]),
        row("quantile_0", 0, [1.0, 0.5]),
        row("quantile_1", 0, [3.0, -1.0]),
        row("bottom", 0, [-2.0, 0.0]),
        row("negative_quantile_1", 0, [-1.5, 0.0]),
    ]
    rec = conform(pa.Table.from_pylist(rows), RECORDS)
    stats = _recorded_stats(
        layer=1, neuron=4, min=-2.0, max=5.0, quantile_levels=[0.1, 0.5, 0.9], quantiles=[0, 0.3, 2]
    )
    exported = neuron_record_json(rec, stats)
    assert exported["quantile_boundaries"] == [2.0, 4.0]
    by_q = [[r["activations"] for r in q] for q in exported["random_sample_by_quantile"]]
    assert by_q == [[[1.0, 0.5], [1.5, 0.0]], [[3.0, -1.0]], [[5.0, 1.0]]]
    assert "-2.0" not in json.dumps(exported)  # no negative-side record
    back, _ = neuron_record_tables(json.dumps(exported))
    quantile = back.filter(pc.starts_with(back["kind"], "quantile_")).to_pylist()
    assert [(r["kind"], r["rank"], r["max_act"]) for r in quantile] == [
        ("quantile_0", 0, 1.0),
        ("quantile_0", 1, 1.5),
        ("quantile_1", 0, 3.0),
        ("quantile_2", 0, 5.0),
    ]


def test_cli_import_and_export(tmp_path, capsys):
    from neuronscope.cli import main

    src = tmp_path / "puzzles.json"
    src.write_text(json.dumps(PUZZLES))
    run = str(tmp_path / "run")
    assert main(["import", "--format", "puzzles", str(src), "--out", run]) == 0
    assert main(["export", run, "--layer", "0", "--neuron", "1"]) == 0
    exported = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert exported["neuron_id"]["neuron_index"] == 1
    assert exported["most_positive_activation_records"][0]["tokens"] == ["In", " ", "168", "7"]
    assert main(["export", run, "--layer", "0", "--neuron", "5"]) == 2
    assert "no records for layer 0 neuron 5" in capsys.readouterr().err
    assert main(["import", str(tmp_path / "nope"), "--out", run]) == 2
    assert "no NeuronRecord JSON files" in capsys.readouterr().err
