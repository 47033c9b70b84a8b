"""The sentence embedder behind clustering, the embedding scorer, controls and the atlas search."""

from __future__ import annotations

import os
import threading

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
