"""Explanations by meaning: MiniLM embeddings in a FAISS inner-product index (cosine: unit vectors)."""

from __future__ import annotations

import numpy as np
import pandas as pd

EMBEDDER = "bundled:all-minilm-l6-v2"
SIMILAR = 5  # similar neurons listed on each neuron's page


def _text(x) -> str | None:
    return x if isinstance(x, str) and x.strip() else None


def shown(neurons: pd.DataFrame) -> pd.Series:
    """The explanation each row of the atlas table shows: a mode's own; on the one row (mode -1)
    of a neuron explained by the single pass only, its single-pass explanation; else None."""
    single = ((neurons["mode"] < 0) & (neurons["status"] == "ok")).to_numpy()
    texts = [
        _text(e) or (_text(b) if s else None)
        for e, b, s in zip(neurons["explanation"], neurons["baseline_explanation"], single)
    ]
    return pd.Series(texts, index=neurons.index, dtype=object)


def searchable(neurons: pd.DataFrame) -> np.ndarray:
    """Row positions of the atlas table that show an explanation (``shown``): every mode, and
    every neuron explained by the single pass only."""
    ok = (neurons["status"] == "ok") & shown(neurons).notna()
    return np.flatnonzero(ok.to_numpy())


def embed_texts(texts: list[str]) -> np.ndarray:
    from ..models.embedder import embed, get_embedder

    return embed(get_embedder(EMBEDDER), texts)


def build_index(vectors: np.ndarray, ids: np.ndarray):
    """Vectors keyed by their row in the atlas table, so a hit names its row."""
    import faiss

    index = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1] if len(vectors) else 384))
    if len(vectors):
        index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids.astype(np.int64))
    return index


def index_bytes(index) -> bytes:
    import faiss

    return faiss.serialize_index(index).tobytes()


def index_from_bytes(data: bytes):
    import faiss

    return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))


def nearest(index, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, row ids), best first; rows of -1 pad where the index holds fewer than k."""
    k = min(k, index.ntotal)
    if k == 0:
        return np.zeros((len(vectors), 0), np.float32), np.zeros((len(vectors), 0), np.int64)
    return index.search(np.ascontiguousarray(vectors, dtype=np.float32), k)


def similar_neurons(neurons: pd.DataFrame, index, vectors: np.ndarray, ids: np.ndarray) -> dict:
    """(layer, neuron) -> up to SIMILAR other neurons nearest to any of its modes, as
    (layer, neuron, similarity), most similar first."""
    # enough neighbours that, after dropping the neuron's own modes, SIMILAR others remain
    sims, hits = nearest(index, vectors, SIMILAR + int(neurons["n_modes"].max() or 0) + 1)
    key = list(zip(neurons["layer"].astype(int), neurons["neuron"].astype(int)))
    out: dict = {}
    for row, row_sims, row_hits in zip(ids, sims, hits):
        best = out.setdefault(key[row], {})
        for s, h in zip(row_sims, row_hits):
            other = key[h] if h >= 0 else None
            if other is not None and other != key[row] and s > best.get(other, -2.0):
                best[other] = float(s)
    return {k: sorted(((*o, s) for o, s in v.items()), key=lambda t: -t[2])[:SIMILAR] for k, v in out.items()}
