"""The atlas: its table, token and meaning search, escaped data shards, S3 runs, the CLI and the
serve endpoint, on a small planted run made without any model."""

from __future__ import annotations

import base64
import json
import math
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from atlas_helpers import (
    HOSTILE_EXPLANATION,
    IMG_TOKEN,
    JUDGE_COLUMNS,
    MONTHS_TEXT,
    SCRIPT_TOKEN,
    SINGLE_PASS_TEXT,
    SOURCES,
    WORDS_BASELINE,
    as_old_schema,
    explanation_rows,
    make_run,
    single_pass_row,
)
from explain_helpers import MONTHS

from neuronscope import schema, stages
from neuronscope.atlas import build_atlas
from neuronscope.atlas.search import AtlasIndex, Hit
from neuronscope.atlas.semantic import searchable, shown
from neuronscope.atlas.serve import start
from neuronscope.atlas.site import js_shard, shard_name
from neuronscope.atlas.table import density
from neuronscope.cli import main
from neuronscope.results import write_result
from neuronscope.store import Store


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("atlas") / "run")
    make_run(Store.open(path))
    build_atlas(path)
    return path


@pytest.fixture
def cli(capsys):
    def call(*argv: str) -> tuple[int, list[str], list[str]]:
        """exit status, stdout lines, stderr lines"""
        code = main(list(argv))
        out = capsys.readouterr()
        return code, out.out.splitlines(), out.err.splitlines()

    return call


def shard(path: Path):
    """A data shard's object, read back as JSON (what the page's script would hold)."""
    text = path.read_text(encoding="utf-8")
    name, _, body = text.partition("]=")
    assert name.startswith("window.NS_DATA[") and body.endswith(";\n")
    return json.loads(body[:-2])


def neuron_data(atlas: Path, layer: int, neuron: int) -> dict:
    """The neuron's page data as the page's script puts it together: its entry in its shard, each
    exemplar with its tokens (from the text shards) and activations (decoded)."""
    d = shard(atlas / "data" / f"{shard_name(layer, neuron)}.js")[f"L{layer}_N{neuron}"]
    cols, per = d["exemplars"], shard(atlas / "data" / "index.js")["texts_per_shard"]
    acts = np.frombuffer(base64.b64decode(cols["acts"]), "<f4")
    ends = np.cumsum(cols["n"]).tolist()
    d["exemplars"] = [
        {
            **{c: cols[c][i] for c in ("kind", "rank", "window_id", "max_act", "max_pos")},
            "tokens": shard(atlas / "data" / f"texts_{t // per}.js")[t % per],
            "acts": acts[end - n : end].tolist(),
        }
        for i, (t, n, end) in enumerate(zip(cols["text"], cols["n"], ends))
    ]
    return d


def test_neurons_table(run):
    t = pd.read_parquet(Path(run) / "atlas" / "neurons.parquet")
    assert list(t.columns) == schema.ATLAS_NEURONS.names
    keys = list(zip(t["layer"], t["neuron"], t["mode"], t["status"]))
    assert keys == [
        (3, 0, 0, "ok"),
        (3, 1, 0, "ok"),
        (3, 1, 1, "ok"),
        (3, 2, 0, "ok"),
        (3, 3, -1, "unexplained"),
        (5, 7, -1, "failed"),
    ]
    expl = pd.read_parquet(Path(run) / "explanations").sort_values(["layer", "neuron", "mode"]).reset_index(drop=True)
    explained = t[t["status"] != "unexplained"].reset_index(drop=True)
    for col in schema.SCORE_COLUMNS:  # every score and its control, as the explain stage wrote them
        pd.testing.assert_series_equal(explained[col], expl[col], check_names=False)
    n1 = t[(t["neuron"] == 1)]
    assert list(n1["n_modes"]) == [2, 2] and n1["mode_share"].tolist() == [0.6, 0.4]
    assert list(n1["explanation"]) == ["animals such as dogs, horses and cats", "colour words like red and green"]
    n0 = t.iloc[0]
    assert n0["link"] == "index.html#/L3/N0" and n0["explanation"] == MONTHS_TEXT
    assert all(tok.strip(" ,.") in MONTHS for tok in n0["top_tokens"])
    assert list(n0["top_token_acts"]) == sorted(n0["top_token_acts"], reverse=True)  # all counts 1: strongest first
    stats = pd.read_parquet(Path(run) / "stats").set_index(["layer", "neuron"])
    assert n0["max"] == stats.loc[(3, 0), "max"] and n0["mean"] == pytest.approx(stats.loc[(3, 0), "mean"])
    assert 0 < n0["density"] < 1
    unexplained = t[t["status"] == "unexplained"].iloc[0]
    assert unexplained["n_modes"] == 0 and pd.isna(unexplained["explanation"]) and len(unexplained["top_tokens"]) > 0
    # the output side, on every row of the neuron; empty where the run has none for it
    assert [list(x) for x in n1["promoted_tokens"]] == [[" fetch", "Fetch", " bark"]] * 2
    assert list(n0["promoted_weights"]) == [2.5, 1.0] and list(n0["suppressed_tokens"]) == [" quiet"]
    assert list(unexplained["promoted_tokens"]) == [] and list(unexplained["suppressed_weights"]) == []


def test_neurons_table_carries_the_judge(run):
    t = pd.read_parquet(Path(run) / "atlas" / "neurons.parquet")
    assert set(JUDGE_COLUMNS) <= set(t.columns)  # the words baselines, every interval, the source
    ok = t[t["status"] == "ok"]
    assert list(ok["source"]) == [SOURCES[0], *SOURCES, SOURCES[0]]
    assert list(ok["lexical_explanation"]) == [WORDS_BASELINE] * 4 and list(ok["lexical_score"]) == [0.64] * 4
    assert [list(ci) for ci in ok["score_ci"]] == [[0.85, 0.95]] * 4
    assert [list(ci) for ci in ok["control_score_ci"]] == [[0.38, 0.52]] * 4
    assert [list(ci) for ci in ok["mode_score_ci"]] == [[0.85, 0.95], [0.85, 0.95], [0.75, 0.85], [0.85, 0.95]]
    assert list(ok["mode_lexical_explanation"])[1:3] == [f"{WORDS_BASELINE} (0)", f"{WORDS_BASELINE} (1)"]
    unexplained = t[t["status"] == "unexplained"].iloc[0]
    assert unexplained["score_ci"] is None and pd.isna(unexplained["source"]) and pd.isna(unexplained["lexical_score"])
    n1 = neuron_data(Path(run) / "atlas", 3, 1)["rows"]  # the page's data carry them too
    assert [r["source"] for r in n1] == SOURCES and n1[1]["mode_score_ci"] == [0.75, 0.85]
    assert n1[0]["lexical_score_ci"] == [0.55, 0.72] and n1[0]["baseline_score_ci"] == [0.7, 0.88]
    cols = shard(Path(run) / "atlas" / "data" / "index.js")["columns"]  # and the index, for its table
    assert cols["score_ci"][:3] == [[0.85, 0.95]] * 3 and cols["lexical_score"][:3] == [0.64] * 3


@pytest.mark.parametrize("old", ["every neuron", "one neuron"])
def test_runs_written_before_the_judge_columns(tmp_path, old):
    path = tmp_path / "run"
    store = Store.open(str(path))
    make_run(store)
    as_old_schema(store, None if old == "every neuron" else [(3, 1)])
    build_atlas(str(path))
    t = pd.read_parquet(path / "atlas" / "neurons.parquet")
    assert list(t.columns) == schema.ATLAS_NEURONS.names and len(t) == 6
    n1 = t[t["neuron"] == 1]
    assert list(n1["score"]) == [0.9, 0.9] and n1["explanation"].iloc[0].startswith("animals")  # kept
    assert n1["source"].isna().all() and n1["lexical_score"].isna().all() and n1["lexical_explanation"].isna().all()
    assert all(ci is None for c in ("score_ci", "mode_score_ci", "control_score_ci") for ci in n1[c])
    n0 = t[t["neuron"] == 0].iloc[0]
    assert (n0["source"] == SOURCES[0] and list(n0["score_ci"]) == [0.85, 0.95]) == (old == "one neuron")
    rows = neuron_data(path / "atlas", 3, 1)["rows"]
    assert rows[0]["score"] == 0.9 and rows[0]["score_ci"] is None and rows[0]["source"] is None


def test_searchable_rows_show_an_explanation():
    t = pd.DataFrame(
        [
            (3, 0, 0, "ok", "a mode's explanation", "its single pass"),
            (3, 0, 1, "ok", "  ", "its single pass"),  # a mode without text: nothing to embed
            (3, 1, -1, "ok", None, "a single pass only"),  # triaged: the single pass only
            (3, 2, -1, "ok", None, " "),
            (3, 3, -1, "failed", None, None),
            (3, 4, -1, "unexplained", None, None),
        ],
        columns=["layer", "neuron", "mode", "status", "explanation", "baseline_explanation"],
    )
    assert list(searchable(t)) == [0, 2]
    assert list(shown(t)) == ["a mode's explanation", None, "a single pass only", None, None, None]
    assert list(searchable(t.iloc[:0])) == []


def test_single_pass_neurons_are_found_by_meaning(run, cli, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    write_result(Store.open(str(copy)), 3, 3, [single_pass_row(3, 3)], [])
    build_atlas(str(copy))
    index = AtlasIndex.load(Store.open(str(copy / "atlas")))
    query = "weather: rain and snow"
    hit = index.search(query, k=1, min_score=0.7)[0]  # scored by its single-pass score
    assert (hit.layer, hit.neuron, hit.mode, hit.explanation, hit.score) == (3, 3, -1, SINGLE_PASS_TEXT, 0.77)
    code, lines, _err = cli("search", str(copy), query, "-k", "1")
    assert code == 0 and lines[0].startswith("L3 N3 single pass  score  0.77 vs  0.45  similarity ")
    assert lines[0].endswith(SINGLE_PASS_TEXT)
    fired = index.tokens[(index.tokens["layer"] == 3) & (index.tokens["neuron"] == 3)]["token"].iloc[0]
    by_token = {(h.layer, h.neuron): h for h in index.search(fired, k=10, token=True)}
    assert by_token[(3, 3)].explanation == SINGLE_PASS_TEXT and by_token[(3, 3)].score == 0.77
    similar = neuron_data(copy / "atlas", 3, 0)["similar"]
    assert {"id": "L3_N3", "explanation": SINGLE_PASS_TEXT}.items() <= next(
        s for s in similar if s["id"] == "L3_N3"
    ).items()
    assert neuron_data(copy / "atlas", 3, 3)["similar"]  # its own neighbours, by its single pass


def test_density_reads_the_quantile_curve():
    # tokens above a quarter of max 2.0 (0.5): halfway between the 0.5 (at 0) and 0.9 (at 1) levels
    assert density([0.5, 0.9], [0.0, 1.0], -1.0, 2.0) == pytest.approx(1 - 0.7)
    assert density([], [], -1.0, 2.0) != density([], [], -1.0, 2.0)  # no curve: NaN
    assert density([0.5], [-0.2], -1.0, -0.1) == 0.0  # never positive: never fires


def test_token_search(run):
    index = AtlasIndex.load(Store.open(run + "/atlas"))
    hits = index.search(" dog", k=10, token=True)
    assert {(h.layer, h.neuron) for h in hits} == {(3, 1), (5, 7)}
    assert [h.match for h in hits] == sorted((h.match for h in hits), reverse=True)
    assert [(h.layer, h.neuron) for h in index.search("DOG", token=True)] == [(h.layer, h.neuron) for h in hits]
    assert [(h.layer, h.neuron) for h in index.search(" dog", token=True, layers={5})] == [(5, 7)]
    assert [(h.layer, h.neuron) for h in index.search(" dog", token=True, min_score=0.5)] == [(3, 1)]
    assert [(h.layer, h.neuron, h.match) for h in index.search(SCRIPT_TOKEN, token=True)] == [(3, 2, 4.0)]
    assert index.search("zebra", token=True) == []
    # then the neurons whose output promotes it: highest weight first, a neuron once
    fetch = index.search(" Fetch", token=True)
    assert [(h.layer, h.neuron, h.match, h.match_kind) for h in fetch] == [
        (3, 1, 2.0, "promotes"),
        (3, 0, 1.0, "promotes"),
    ]
    assert fetch[0].explanation == "animals such as dogs, horses and cats" and fetch[0].score == 0.9
    assert [h.match_kind for h in index.search("january", token=True)][-1] == "promotes"
    assert index.search(" quiet", token=True) == []  # suppressed, not promoted


def test_semantic_search(run):
    index = AtlasIndex.load(Store.open(run + "/atlas"))
    first = lambda q, **kw: next((h.layer, h.neuron, h.mode) for h in index.search(q, k=3, **kw))
    assert first("calendar months of the year") == (3, 0, 0)
    assert first("pets and farm animals") == (3, 1, 0)
    assert first("colours") == (3, 1, 1)
    assert (3, 1, 1) not in [(h.layer, h.neuron, h.mode) for h in index.search("colours", k=10, min_score=0.85)]
    assert index.search("months", k=10, layers={5}) == []  # its only neuron failed: nothing to find
    hits = index.search("months", k=2)
    assert len(hits) == 2 and hits[0].match >= hits[1].match and hits[0].control == 0.45


def test_shards_escape_hostile_strings(run):
    for data in (Path(run) / "atlas" / "data").glob("*.js"):
        raw = data.read_bytes()
        for bad in (b"<", b">", b"&", "\u2028".encode(), "\u2029".encode()):
            assert bad not in raw
    obj = neuron_data(Path(run) / "atlas", 3, 2)
    assert (
        obj["exemplars"][0]["tokens"][2] == " " + SCRIPT_TOKEN and obj["exemplars"][0]["tokens"][4] == " " + IMG_TOKEN
    )
    assert obj["rows"][0]["explanation"] == HOSTILE_EXPLANATION
    tricky = {"t": "</script><!-- \u2028\u2029 & <b>"}
    out = js_shard('a"</script>', tricky)
    assert b"<" not in out and "\u2028".encode() not in out
    assert json.loads(out.decode().partition("]=")[2][:-2]) == tricky


def test_neuron_shards(run):
    atlas = Path(run) / "atlas"
    n1 = neuron_data(atlas, 3, 1)
    assert [r["mode"] for r in n1["rows"]] == [0, 1]
    top = [e["window_id"] for e in n1["exemplars"] if e["kind"] == "top"]
    assert sorted(top) == sorted(w for r in n1["rows"] for w in r["exemplar_ids"]) and len(top) == 10
    kinds = [e["kind"] for e in n1["exemplars"]]
    assert kinds == sorted(kinds, key=lambda k: (k != "top", k)) and "quantile_1" in kinds
    recs = pd.read_parquet(Path(run) / "records").query("layer == 3 and neuron == 1")
    for e in n1["exemplars"]:  # tokens and activations as recorded (float32)
        rec = recs[(recs["kind"] == e["kind"]) & (recs["rank"] == e["rank"])].iloc[0]
        assert e["tokens"] == list(rec["tokens"]) and e["acts"] == list(np.float32(rec["activations"]))
    assert n1["transcript"] == "../transcripts/layer_003/neuron_00001.jsonl"
    assert (Path(run) / "atlas" / n1["transcript"]).is_file()
    assert [s["id"] for s in n1["similar"]] and all(s["id"] != "L3_N1" for s in n1["similar"])
    index = shard(atlas / "data" / "index.js")
    cols = index["columns"]
    assert [f"L{a}_N{b}" for a, b in zip(cols["layer"], cols["neuron"])] == [
        "L3_N0",
        "L3_N1",
        "L3_N2",
        "L3_N3",
        "L5_N7",
    ]
    assert index["model"] == "planted"
    unexplained = neuron_data(atlas, 3, 3)
    assert (
        unexplained["rows"][0]["status"] == "unexplained"
        and unexplained["exemplars"]
        and unexplained["transcript"] is None
    )


def test_transcript_links_follow_compaction(tmp_path):
    from neuronscope.explain.compact import compact

    path = str(tmp_path / "run")
    make_run(Store.open(path))
    compact(Store.open(path), 3, [0, 1, 2])
    build_atlas(path)
    link = neuron_data(Path(path) / "atlas", 3, 1)["transcript"]
    assert link.startswith("../transcripts/layer_003/part-") and (Path(path) / "atlas" / link).is_file()
    assert '"neuron": 1' in (Path(path) / "atlas" / link).read_text()


def test_cli_atlas_elsewhere(run, cli, tmp_path):
    out = tmp_path / "site"
    (out / "data").mkdir(parents=True)
    (out / "data" / "L9_N9.js").write_text("stale")
    code, lines, _err = cli("atlas", run, "--out", str(out))
    assert code == 0 and lines[-1] == f"atlas: {out}/index.html"
    assert (out / "index.html").is_file() and not (out / "data" / "L9_N9.js").exists()
    link = neuron_data(out, 3, 0)["transcript"]
    assert not link.startswith("/") and (out / link).resolve() == (
        Path(run) / "transcripts/layer_003/neuron_00000.jsonl"
    )


def test_cli_search(run, cli):
    code, lines, err = cli("search", run, "calendar months", "-k", "2")
    assert code == 0 and len(lines) == 2
    assert lines[0].startswith("L3 N0 mode 0  score  0.90 vs  0.45  similarity ") and lines[0].endswith(MONTHS_TEXT)
    code, lines, err = cli("search", run, " dog", "--token", "--layers", "5")
    assert code == 0 and lines == [lines[0]] and lines[0].startswith("L5 N7 mode -1") and "(not explained)" in lines[0]
    code, lines, err = cli("search", run, " dog", "--token", "--min-score", "0.95")
    assert code == 0 and lines == [] and err == ["no neuron matches"]
    code, lines, err = cli("search", run, "bark", "--token")
    assert code == 0 and len(lines) == 1 and lines[0].startswith("L3 N1 mode 0") and "promotes 1.200" in lines[0]


def test_search_rebuilds_a_stale_index(run, cli, tmp_path):
    copy = str(tmp_path / "run")
    shutil.copytree(run, copy)
    shutil.rmtree(Path(copy) / "atlas")
    code, lines, err = cli("search", copy, "weather: rain and snow", "-k", "1")
    assert code == 0 and len(lines) == 1 and not lines[0].startswith("L3 N3")
    assert (Path(copy) / "atlas" / "explanations.faiss").is_file() and not (
        Path(copy) / "atlas" / "index.html"
    ).exists()
    store = Store.open(copy)
    recs = pd.read_parquet(Path(copy) / "records")
    write_result(store, 3, 3, explanation_rows(3, 3, ["weather words such as rain and snow"], recs), [])
    code, lines, err = cli("search", copy, "weather: rain and snow", "-k", "1")
    assert code == 0 and lines[0].startswith("L3 N3 mode 0") and any("atlas:" in e for e in err)  # rebuilt


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (("atlas", "{empty}"), "has no activation records or explanations"),
        (("search", "{empty}", "months"), "has no activation records or explanations"),
        (("atlas", "{run}", "extra"), "unexpected argument 'extra'"),
        (("search", "{run}", "months", "-k", "0"), "-k 0: ask for at least 1 hit"),
        (("search", "{run}", "months", "--layers", "x"), "layer selection 'x' is not an index"),
        (("search", "{run}", "  "), "the search query is empty"),
    ],
)
def test_cli_errors(run, cli, tmp_path, argv, fragment):
    (tmp_path / "empty").mkdir()
    code, lines, err = cli(*(a.format(run=run, empty=tmp_path / "empty") for a in argv))
    assert code == 2 and lines == [] and len(err) == 1 and err[0].startswith("error: ") and fragment in err[0]


def test_cli_serve_on_a_taken_port(run, cli):
    server = start(run, port=0)
    try:
        code, _lines, err = cli("atlas", "serve", run, "--port", str(server.server_address[1]))
        assert code == 2 and err[-1].startswith("error: cannot serve on 127.0.0.1:")
    finally:
        server.shutdown()


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_serve_endpoint_matches_cli(run, cli):
    server = start(run, port=0)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        query = "calendar months of the year"
        status, body = _get(f"{base}/api/search?q={urllib.parse.quote(query)}&k=4")
        assert status == 200
        hits = [Hit(**h) for h in json.loads(body)["hits"]]
        code, lines, _err = cli("search", run, query, "-k", "4")
        assert code == 0 and [h.line() for h in hits] == lines  # the same search behind both
        assert (hits[0].layer, hits[0].neuron, hits[0].mode) == (3, 0, 0) and len(hits) == 4
        assert _get(f"{base}/")[0] == 200 and b"atlas.js" in _get(f"{base}/index.html")[1]
        status, body = _get(f"{base}/transcripts/layer_003/neuron_00000.jsonl")
        assert status == 200 and SCRIPT_TOKEN.encode() in body
        assert _get(f"{base}/../manifest.json")[0] == 404 and _get(f"{base}/data/nope.js")[0] == 404
        assert _get(f"{base}/api/search?q=x&k=many")[0] == 400
    finally:
        server.shutdown()


def test_s3_run(s3_env, cli):
    uri = f"s3://{s3_env}/runs/r1"
    make_run(Store.open(uri))
    code, lines, _err = cli("atlas", uri)
    assert code == 0 and lines[-1] == f"atlas: {uri}/atlas/index.html"
    store = Store.open(uri)
    assert {"atlas/index.html", "atlas/atlas.js", "atlas/data/L3_S0.js", "atlas/explanations.faiss"} <= set(
        store.list("atlas/")
    )
    link = json.loads(store.read_bytes("atlas/data/L3_S0.js").decode().partition("]=")[2][:-2])["L3_N0"]["transcript"]
    assert link == "../transcripts/layer_003/neuron_00000.jsonl"
    code, lines, _err = cli("search", uri, "calendar months")
    assert code == 0 and lines[0].startswith("L3 N0 mode 0")


def test_demo_ends_with_the_atlas(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(stages, "run_record", lambda cfg, out, progress: make_run(Store.open(out)))
    monkeypatch.setattr(stages, "run_explain", lambda cfg, records, out, progress: None)
    monkeypatch.setattr(stages, "run_causal", lambda cfg, records, out, progress: None)
    out = tmp_path / "demo"
    code, lines, _err = cli("demo", "--out", str(out))
    assert code == 0 and lines[-2] == f"run: {out}" and lines[-1] == f"atlas: {out}/atlas/index.html"
    assert (out / "atlas" / "index.html").is_file()
    assert not math.isnan(pd.read_parquet(out / "atlas" / "neurons.parquet")["score"].iloc[0])


def test_exemplar_texts_are_stored_once_per_distinct_token_list():
    from neuronscope.atlas.exemplars import _text_codes, large_lists

    lists = [["a", "b"], ["a\x00b"], ["a", "b"], [], [""], ["a\\", "0b"], ["a\\0b"]]
    column = pa.chunked_array([pa.array(lists[:3], pa.list_(pa.string())), pa.array(lists[3:], pa.list_(pa.string()))])
    large = large_lists(column)  # 64-bit offsets: a whole model's texts pass 2 GiB
    assert large.type == pa.large_list(pa.large_string()) and large.to_pylist() == lists
    codes = _text_codes(large).indices.to_pylist()
    assert codes[0] == codes[2] and len(set(codes)) == len(lists) - 1


def test_texts_are_indexed_across_layers():
    from neuronscope.atlas.exemplars import Texts

    texts, large = Texts(), pa.large_list(pa.large_string())
    assert texts.codes(pa.array([["b"], ["a"], ["b"]], large)).tolist() == [0, 1, 0]
    assert texts.codes(pa.array([["c"], ["a"], []], large)).tolist() == [2, 1, 3]
    assert texts.codes(pa.array([], large)).tolist() == []
    assert texts.lists().to_pylist() == [["b"], ["a"], ["c"], []]


def test_records_are_read_a_layer_at_a_time(tmp_path, monkeypatch):
    """A whole-model run's records pass memory: no read of them spans two layers."""
    path = str(tmp_path / "run")
    store = Store.open(path)
    make_run(store)
    write_result(store, 7, 0, [single_pass_row(7, 0)], [])  # a neuron of a layer without records
    read, layers = Store.read_parquet_where, []

    def spy(self, keys, *args, **kwargs):
        t = read(self, keys, *args, **kwargs)
        if any(k.startswith("records/") for k in ([keys] if isinstance(keys, str) else keys)):
            layers.append(set(t["layer"].to_pylist()))
        return t

    monkeypatch.setattr(Store, "read_parquet_where", spy)
    build_atlas(path)
    assert {3, 5} <= set().union(*layers) and all(len(seen) == 1 for seen in layers)
    assert neuron_data(Path(path) / "atlas", 7, 0)["exemplars"] == []
