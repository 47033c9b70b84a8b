"""The recording actor: holds the model and folds its share of the windows into summaries."""

from __future__ import annotations

import os

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


class Recorder:
    """Folds batches {window_id, tokens} of windows into one :class:`Summary` per recorded layer.

    Statistics stay on this side (one Summary per layer, O(neurons x k x window)): only the
    final summaries travel to the driver, not a partial per batch.
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

    def _fold(self, layer: int, acts: torch.Tensor) -> None:
        self.folds[layer].add(acts, self._tokens)

    def __call__(self, batch: dict[str, np.ndarray]) -> None:
        order = np.argsort(batch["window_id"], kind="stable")
        wids = torch.as_tensor(batch["window_id"][order], device=self.device)
        ids = torch.as_tensor(np.asarray(batch["tokens"])[order], dtype=torch.int64, device=self.device)
        self._tokens = BatchTokens.of(token_codes(wids, ids.shape[1]), self.seed, self.hist_rate, ids.shape[1])
        self.run(ids)  # folds each layer from its hook
        self.windows += len(order)

    def summaries(self) -> dict[int, Summary]:
        """Each layer's Summary, once: a layer's running state is let go as its Summary is made, so
        that the pass's end holds its exemplar windows about once, not twice."""
        return {layer: self.folds.pop(layer).finish() for layer in list(self.folds)}

    def consume(self, shard, batch_size: int) -> dict[int, Summary]:
        """Fold every batch of ``shard`` (a Ray Data iterator); the summaries at its end."""
        torch.set_num_threads(self.threads)  # OpenMP settings are per thread; this may be another one
        for batch in shard.iter_batches(batch_size=batch_size, batch_format="numpy"):
            self(batch)
        return self.summaries()

    def progress(self) -> int:
        return self.windows
