"""Content-addressed LLM response cache in the run's store: reruns are reproducible and free."""

from __future__ import annotations

import hashlib
import json

from ..store import Store

# The prompt text is in the key, so a changed prompt template (whose version is recorded with the
# explanations) gets new keys by itself. What the text cannot show is how a backend turns it into
# model input (chat template flags, answer prefill): bump this when that changes.
KEY_FORMAT = 1


class ResponseCache:
    """JSON responses keyed by the sha256 of everything that determines them."""

    def __init__(self, store: Store, model_id: str, prefix: str = "llm_cache"):
        self.store = store
        self.model_id = model_id
        self.prefix = prefix.rstrip("/")

    def key(self, kind: str, payload, params: dict) -> str:
        blob = json.dumps([KEY_FORMAT, self.model_id, kind, payload, params], sort_keys=True, separators=(",", ":"))
        h = hashlib.sha256(blob.encode()).hexdigest()
        return f"{self.prefix}/{h[:2]}/{h}.json"

    def get(self, key: str):
        return self.store.read_json(key) if self.store.exists(key) else None

    def put(self, key: str, value) -> None:
        self.store.write_json(key, value)
