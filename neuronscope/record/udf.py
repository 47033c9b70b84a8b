"""The recording actor: holds the model and folds its share of the windows into summaries."""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from ..config import RecordConfig
from ..models import arch
from .fold import BatchTokens, LayerFold, token_codes
from .hooks import capture, load_model
from .topk import Counts, Summary


def exemplar_counts(cfg: RecordConfig, signed: bool) -> Counts:
    """The exemplars each neuron keeps under ``cfg``; ``signed``: whether the model's neuron
    activations are signed, which ``negative: auto`` follows."""
    negative = cfg.negative == "on" or (cfg.negative == "auto" and signed)
    bottom_k = cfg.bottom_k if cfg.bottom_k is not None else cfg.top_k
    return Counts(cfg.top_k, cfg.random_k, cfg.quantile_bins, cfg.quantile_k, negative, bottom_k)


def cpu_threads(requested: int | None, actors: int = 1) -> int:
    """Torch threads: as requested, else this machine's cores shared among the actors on it.

    The actor reserves one CPU in Ray (leaving the rest to the tasks feeding it) but its
    forward pass is the work of the node: the feeding tasks are light.
    """
    if requested:
        return requested
    return max(1, len(os.sched_getaffinity(0)) // actors)


# windows whose tokens a recorder keeps before it drops those no exemplar holds any more
MIN_KEPT_WINDOWS = 1 << 16


class Recorder:
    """Folds batches {window_id, tokens} of windows into one :class:`Summary` per recorded layer.

    Statistics stay on this side (one Summary per layer, O(neurons x k x window)): only the
    final summaries travel to the driver, not a partial per batch, with the token ids of the
    windows their exemplars hold (the driver never sees the corpus): the recorder keeps the
    tokens of every window that entered an exemplar set, and now and then drops those that all
    sets have pushed out again (a window is seen once, so it cannot come back).
    """

    def __init__(self, cfg: RecordConfig, layers: list[int], neurons: list[int], actors: int = 1):
        """``cfg``: the model, exemplar counts, seed, threads and histogram sample; ``actors``: the
        recorders sharing this node's cores."""
        from ..models.bundled import resolve_model

        self.threads = cpu_threads(cfg.torch_threads, actors)
        torch.set_num_threads(self.threads)
        # resolved here, on the actor's node: a path resolved on the driver need not exist there
        self.model, self.device = load_model(resolve_model(cfg.model).path)
        idx = torch.as_tensor(neurons, dtype=torch.int64, device=self.device)
        self.seed, self.hist_rate = cfg.seed, cfg.quantile_sample
        counts = exemplar_counts(cfg, arch.signed(self.model.config))
        self.folds = {layer: LayerFold(layer, idx, counts, self.seed, self.hist_rate) for layer in layers}
        self._tokens: BatchTokens | None = None  # the current batch's, for the sink
        self._capture = capture(self.model, layers, idx, self._fold)
        self.run = self._capture.__enter__()  # hooks live as long as the recorder
        self.windows = 0
        self.first_batch_at: float | None = None  # time.time() of the first batch folded
        self._kept: dict[int, np.ndarray] = {}  # window id -> token ids, of windows an exemplar may hold
        self._prune_at = MIN_KEPT_WINDOWS

    def _fold(self, layer: int, acts: torch.Tensor) -> None:
        self.folds[layer].add(acts, self._tokens)

    def __call__(self, batch: dict[str, np.ndarray]) -> None:
        order = np.argsort(batch["window_id"], kind="stable")
        wids = torch.as_tensor(batch["window_id"][order], device=self.device)
        ids = torch.as_tensor(np.asarray(batch["tokens"])[order], dtype=torch.int64, device=self.device)
        self._tokens = BatchTokens.of(token_codes(wids, ids.shape[1]), self.seed, self.hist_rate, ids.shape[1])
        self.run(ids)  # folds each layer from its hook
        self.windows += len(order)
        if self.first_batch_at is None:
            self.first_batch_at = time.time()
        self._keep(batch["window_id"][order], np.asarray(batch["tokens"])[order])

    def _keep(self, wids: np.ndarray, tokens: np.ndarray) -> None:
        """Keep the tokens of the batch windows that entered an exemplar set."""
        entered = [w for fold in self.folds.values() for w in fold.take_entered()]
        if entered:
            for i in torch.unique(torch.cat(entered)).tolist():
                self._kept[int(wids[i])] = tokens[i]
        if len(self._kept) > self._prune_at:
            held = set(torch.unique(torch.cat([f.held_windows() for f in self.folds.values()])).tolist())
            self._kept = {w: t for w, t in self._kept.items() if w in held}
            self._prune_at = max(MIN_KEPT_WINDOWS, 2 * len(self._kept))

    def exemplar_windows(self, summaries: dict[int, Summary]) -> tuple[np.ndarray, np.ndarray]:
        """(sorted ids, (n, window) int32 token ids) of every window the summaries' exemplars hold."""
        held = [s.window_ids() for s in summaries.values()]
        ids = np.unique(np.concatenate(held)) if held else np.zeros(0, np.int64)
        width = next(iter(self._kept.values())).shape[0] if self._kept else 0
        tokens = np.stack([self._kept[int(w)] for w in ids]) if len(ids) else np.zeros((0, width), np.int32)
        return ids.astype(np.int64), tokens.astype(np.int32)

    def summaries(self) -> dict[int, Summary]:
        """Each layer's Summary, once: a layer's running state is let go as its Summary is made, so
        that the pass's end holds its exemplar windows about once, not twice."""
        return {layer: self.folds.pop(layer).finish() for layer in list(self.folds)}

    def consume(self, shard, batch_size: int) -> tuple[dict[int, Summary], np.ndarray, np.ndarray]:
        """Fold every batch of ``shard`` (a Ray Data iterator); at its end the summaries and the
        (ids, tokens) of the windows their exemplars hold."""
        torch.set_num_threads(self.threads)  # OpenMP settings are per thread; this may be another one
        for batch in shard.iter_batches(batch_size=batch_size, batch_format="numpy"):
            self(batch)
        summaries = self.summaries()
        ids, tokens = self.exemplar_windows(summaries)
        self._kept = {}
        return summaries, ids, tokens

    def ready(self) -> bool:
        """Answers once the recorder is up (its model loaded)."""
        return True

    def first_batch(self) -> float | None:
        return self.first_batch_at

    def progress(self) -> int:
        return self.windows
