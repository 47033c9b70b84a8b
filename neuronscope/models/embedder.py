"""The sentence embedder behind clustering, the embedding scorer, controls and the atlas search."""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict

import numpy as np

_EMBEDDERS: dict[str, object] = {}
_LOCK = threading.Lock()


def get_embedder(spec: str):
    """The sentence-transformers model for ``spec``, loaded once per worker process."""
    with _LOCK:
        if spec not in _EMBEDDERS:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer

            from .bundled import resolve_embedder

            _EMBEDDERS[spec] = SentenceTransformer(resolve_embedder(spec), device="cpu")
        return _EMBEDDERS[spec]


def embed(embedder, texts: list[str]) -> np.ndarray:
    """Unit-length float32 embeddings (cosine geometry for k-means and the silhouette)."""
    x = np.asarray(embedder.encode(list(texts), normalize_embeddings=True, show_progress_bar=False), dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


# Texts embedded once per process and embedder: words, windows and contexts recur across the
# neurons of a run (a whole-model run's neurons share the corpus windows) and across the many
# explanations of one neuron.
CACHE_SIZE = 50_000
_CACHES: weakref.WeakKeyDictionary[object, OrderedDict[str, np.ndarray]] = weakref.WeakKeyDictionary()


def embed_cached(embedder, texts: list[str]) -> np.ndarray:
    """``embed`` through a per-process cache of the last CACHE_SIZE texts: (len(texts), dim)."""
    with _LOCK:
        cache = _CACHES.setdefault(embedder, OrderedDict())
        todo = [t for t in dict.fromkeys(texts) if t not in cache]
    fresh = embed(embedder, todo) if todo else np.zeros((0, 0), np.float32)
    with _LOCK:
        cache.update(zip(todo, fresh))
        found = [cache[t] for t in texts]
        for t in texts:
            cache.move_to_end(t)
        while len(cache) > CACHE_SIZE:
            cache.popitem(last=False)
    return np.stack(found) if found else np.zeros((0, 0), np.float32)
