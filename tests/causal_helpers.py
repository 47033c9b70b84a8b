"""Shared by the causal-check tests and benchmarks/causal.py: a run made by hand around a tiny
model with a neuron built to be known. Its write direction is a token's unembedding and each of
its mode's windows has that token next after the neuron's peak there."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch
from record_helpers import aim_at_token, save_tiny, tiny_model

from neuronscope import layout, manifest
from neuronscope.models import arch
from neuronscope.record.hooks import capture
from neuronscope.schema import EXPLANATIONS, RECORDS, STATS, conform, explanation_row
from neuronscope.store import Store

LAYER, KNOWN, OTHER, LATER = 1, 7, 3, 5
RECORDED = range(8)  # neurons with STATS: the controls are drawn among them
N_MODE, N_RANDOM, T = 8, 8, 16


def _acts(model, ids: np.ndarray) -> np.ndarray:
    """(windows, T, neurons): the layer's activations at the recorder's site."""
    with capture(model, [LAYER], torch.arange(arch.n_neurons(model.config))) as run:
        return run(torch.as_tensor(ids))[LAYER].numpy()


def _windows(model, king: int) -> tuple[np.ndarray, np.ndarray]:
    """N_MODE windows whose token after the known neuron's peak is ``king`` (the model is causal:
    the peak stays where it was), then N_RANDOM others; and their activations."""
    ids = np.random.default_rng(0).integers(100, 5000, size=(N_MODE + N_RANDOM, T))
    peaks = _acts(model, ids)[:N_MODE, : T - 1, KNOWN].argmax(1)
    ids[np.arange(N_MODE), peaks + 1] = king
    return ids, _acts(model, ids)


def _records(tok, ids: np.ndarray, acts: np.ndarray, neuron: int) -> list[dict]:
    def row(kind: str, rank: int, w: int, pos: int) -> dict:
        return {
            "layer": LAYER,
            "neuron": neuron,
            "kind": kind,
            "rank": rank,
            "window_id": w,
            "tokens": tok.convert_ids_to_tokens(ids[w].tolist()),
            "token_ids": ids[w].tolist(),
            "activations": acts[w, :, neuron].tolist(),
            "max_pos": pos,
            "max_act": float(acts[w, pos, neuron]),
        }

    top = [row("top", r, w, int(acts[w, : T - 1, neuron].argmax())) for r, w in enumerate(range(N_MODE))]
    rand = [row("random", r, w, int(acts[w, :, neuron].argmax())) for r, w in enumerate(range(N_MODE, len(ids)))]
    return top + rand


def explain(store: Store, neuron: int) -> None:
    row = explanation_row(LAYER, neuron, mode=0, n_modes=1, mode_size=N_MODE, exemplar_ids=list(range(N_MODE)))
    row.update(explanation="the word before king", method="neuronscope")
    store.write_parquet(layout.explanation_key(LAYER, neuron), conform(pa.Table.from_pylist([row]), EXPLANATIONS))


def known_neuron_run(tmp_path, tok, model_type: str, explained=(KNOWN, OTHER)) -> Store:
    """A run as record and explain leave it, made by hand: records, stats and one mode per
    explained neuron, its windows the first N_MODE."""
    model = tiny_model(model_type, len(tok))
    (king,) = tok.encode(" king")
    aim_at_token(model, LAYER, KNOWN, king)
    folder = save_tiny(model, tok, tmp_path / "model")
    ids, acts = _windows(model, king)
    store = Store.open(str(tmp_path / "run"))
    recs = [r for n in RECORDED for r in _records(tok, ids, acts, n)]
    store.write_parquet(layout.records_key(LAYER), conform(pa.Table.from_pylist(recs), RECORDS))
    stats = [
        {"layer": LAYER, "neuron": n, "mean": float(acts[..., n].mean()), "std": 1.0, "min": 0.0, "max": 1.0}
        | {"quantile_levels": [], "quantiles": [], "n_tokens": acts[..., n].size}
        for n in RECORDED
    ]
    store.write_parquet(layout.stats_key(LAYER), conform(pa.Table.from_pylist(stats), STATS))
    for n in explained:
        explain(store, n)
    manifest.begin_stage(store, "record", {"model": folder}, {})
    manifest.end_stage(store, "record", "done")
    return store
