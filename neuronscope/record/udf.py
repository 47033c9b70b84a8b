"""The Ray Data class UDF: holds the model, turns batches of windows into summary partials."""

from __future__ import annotations

import numpy as np
import torch

from .hooks import capture, load_model
from .topk import batch_partials


def _threads(requested: int | None) -> int:
    if requested:
        return requested
    try:
        import ray

        return max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
    except Exception:  # outside Ray (tests, second pass in the driver)
        return 1


class RecorderUDF:
    """map_batches UDF: {window_id, tokens} -> one row per recorded layer of batch partials."""

    def __init__(self, model_path: str, layers: list[int], neurons: list[int], top_k: int,
                 random_k: int, seed: int, torch_threads: int | None = None, keep_windows: bool = False):
        torch.set_num_threads(_threads(torch_threads))
        self.model, self.device = load_model(model_path)
        self.layers = layers
        self.neurons = torch.as_tensor(neurons, dtype=torch.int64, device=self.device)
        self.top_k, self.random_k, self.seed, self.keep_windows = top_k, random_k, seed, keep_windows
        self._capture = capture(self.model, layers, self.neurons)
        self.run = self._capture.__enter__()  # hooks live as long as the actor

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        order = np.argsort(batch["window_id"], kind="stable")
        wids = torch.as_tensor(batch["window_id"][order], device=self.device)
        ids = torch.as_tensor(np.asarray(batch["tokens"])[order], dtype=torch.int64, device=self.device)
        acts = self.run(ids)
        rows = [
            batch_partials(acts.pop(layer), wids, layer, self.neurons, self.top_k, self.random_k, self.seed,
                           self.keep_windows)
            for layer in self.layers
        ]
        out = {key: np.stack([r[key] for r in rows]) for key in rows[0]}
        out["layer"] = np.asarray(self.layers, dtype=np.int32)
        return out
