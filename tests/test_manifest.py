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


def test_a_stage_stopped_on_purpose_is_interrupted_and_a_crashed_one_failed(tmp_path):
    from neuronscope.stages import _staged

    store = Store.open(str(tmp_path / "run"))

    def stopped():
        raise KeyboardInterrupt

    def crashed():
        raise RuntimeError("disk on fire")

    for work in (stopped, crashed):
        with pytest.raises((KeyboardInterrupt, RuntimeError)):
            _staged(store, "explain", {"model": "m"}, {}, work)
    manifest.begin_stage(store, "explain", {"model": "m"}, {})
    earlier = store.read_json("manifest.json")["stages"]["explain"]["earlier"]
    assert [(a["status"], a.get("error")) for a in earlier] == [
        ("interrupted", None),
        ("failed", "RuntimeError: disk on fire"),
    ]
