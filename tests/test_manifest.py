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
