"""The output side of every neuron: the tokens its write direction promotes and suppresses.

A neuron adds its activation times its down-projection column ``v`` to the residual stream. Read
straight through the final norm's scale ``s`` and the unembedding ``U`` (the logit lens of the
column, "VocabProj"), that is ``(v * s) @ U.T`` per unit of activation on the next-token logits.
Per layer this is one matrix product, (neurons, d_model) x (d_model, vocab), cut into chunks of
neurons so that the logits held at once stay under ``CHUNK_BYTES``; each chunk keeps its top and
bottom ``TOP_K`` tokens with ``torch.topk``. The norm's division by the residual's RMS (a positive
factor) and its bias (the same shift for every neuron) change no ranking and are left out; a
LayerNorm's centering is kept (``v`` minus its mean). Only the tokenizer's ids are ranked: rows of
a padded unembedding beyond them are never produced.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import torch

from ..layout import OUTPUT_TOKENS, output_tokens_key, prefix
from ..models import arch
from ..schema import OUTPUT_TOKENS as SCHEMA
from ..schema import conform
from ..store import Store

TOP_K = 10  # promoted and suppressed tokens kept per neuron
CHUNK_BYTES = 256 << 20  # float32 logits of one chunk of neurons, at most


class OutputLens:
    """A model's final-norm-scaled unembedding and its token texts, ready to rank the vocabulary
    for any neuron's write direction."""

    def __init__(self, model, tokenizer, k: int = TOP_K, chunk_bytes: int = CHUNK_BYTES):
        self.model, self.k = model, k
        u = arch.unembedding(model)
        n_vocab = min(len(tokenizer), u.shape[0])
        with torch.inference_mode():
            # (v * s) @ U.T == v @ (U * s).T: the scale is folded into the unembedding once
            self.unembed = (u[:n_vocab].float() * arch.final_norm_scale(model).float()).contiguous()
        self.center = arch.final_norm_centers(model.config)
        self.rows = max(1, chunk_bytes // (4 * n_vocab))  # neurons per chunk
        self.texts = pa.array(tokenizer.batch_decode([[i] for i in range(n_vocab)]), pa.string())

    def rank(self, layer: int, neurons: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(promoted ids, their weights, suppressed ids, their weights), each (len(neurons), k),
        strongest first."""
        w = arch.write_directions(self.model, layer)
        idx = torch.as_tensor(neurons, dtype=torch.int64, device=w.device)
        k = min(self.k, self.unembed.shape[0])
        parts: list[list[torch.Tensor]] = [[], [], [], []]
        with torch.inference_mode():
            for start in range(0, len(neurons), self.rows):
                v = w.index_select(0, idx[start : start + self.rows]).to(self.unembed.device, torch.float32)
                if self.center:
                    v = v - v.mean(dim=1, keepdim=True)
                logits = v @ self.unembed.T
                hi, lo = logits.topk(k, dim=1), logits.topk(k, dim=1, largest=False)
                for out, t in zip(parts, (hi.indices, hi.values, lo.indices, lo.values)):
                    out.append(t.cpu())
        ids_hi, w_hi, ids_lo, w_lo = (
            torch.cat(p).numpy() if p else np.zeros((0, k), np.float32 if i % 2 else np.int64)
            for i, p in enumerate(parts)
        )
        return ids_hi, w_hi, ids_lo, w_lo

    def table(self, layer: int, neurons: list[int]) -> pa.Table:
        """The OUTPUT_TOKENS rows of ``neurons`` of ``layer``, in their order."""
        ids_hi, w_hi, ids_lo, w_lo = self.rank(layer, neurons)
        n = len(neurons)

        def lists(values: np.ndarray, texts: bool = False) -> pa.ListArray:
            flat = values.reshape(-1)
            arr = self.texts.take(pa.array(flat)) if texts else pa.array(flat)
            return pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * values.shape[1]), arr)

        return conform(
            pa.table(
                {
                    "layer": np.full(n, layer, np.int32),
                    "neuron": np.asarray(neurons, np.int32),
                    "promoted_tokens": lists(ids_hi, texts=True),
                    "promoted_ids": lists(ids_hi.astype(np.int32)),
                    "promoted_weights": lists(w_hi.astype(np.float32)),
                    "suppressed_tokens": lists(ids_lo, texts=True),
                    "suppressed_ids": lists(ids_lo.astype(np.int32)),
                    "suppressed_weights": lists(w_lo.astype(np.float32)),
                }
            ),
            SCHEMA,
        )


def pending(store: Store, layers: list[int], neurons: list[int], shard_size: int) -> dict[int, dict[int, list[int]]]:
    """layer -> shard -> neurons of the selection whose OUTPUT_TOKENS part is not in the store (one
    listing)."""
    have = set(store.list(prefix(OUTPUT_TOKENS)))
    shards: dict[int, list[int]] = {}
    for n in neurons:
        shards.setdefault(n // shard_size, []).append(n)
    out: dict[int, dict[int, list[int]]] = {}
    for layer in layers:
        todo = {s: ns for s, ns in shards.items() if output_tokens_key(layer, s) not in have}
        if todo:
            out[layer] = todo
    return out


def write_output_tokens(
    store: Store,
    model_path: str,
    layers: list[int],
    neurons: list[int],
    shard_size: int,
) -> dict:
    """The OUTPUT_TOKENS parts of the selection, one per layer and shard of ``shard_size`` neurons
    (the records' shards), skipping those already in the store: the model is loaded only when
    one is missing. Returns the parts written and the seconds it took."""
    t0 = time.time()
    todo = pending(store, layers, neurons, shard_size)
    if not todo:
        return {"parts": 0, "seconds": 0.0}
    from transformers import AutoTokenizer

    from .hooks import load_model

    model, _ = load_model(model_path)
    lens = OutputLens(model, AutoTokenizer.from_pretrained(model_path))
    written = 0
    for layer, shards in todo.items():
        ns = [n for s in sorted(shards) for n in shards[s]]
        table = lens.table(layer, ns)
        start = 0
        for s in sorted(shards):
            store.write_parquet(output_tokens_key(layer, s), table.slice(start, len(shards[s])))
            start += len(shards[s])
            written += 1
    return {"parts": written, "seconds": round(time.time() - t0, 2)}
