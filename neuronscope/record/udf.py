"""The Ray Data class UDF: holds the model, turns batches of windows into summary partials."""

from __future__ import annotations

import numpy as np
import torch

from .hooks import capture, load_model
from .topk import Floor, batch_partials, merge_top


def _threads(requested: int | None) -> int:
    if requested:
        return requested
    try:
        import ray

        return max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
    except Exception:  # outside Ray (tests, second pass in the driver)
        return 1


class RecorderUDF:
    """map_batches UDF: {window_id, tokens} -> one row per recorded layer of batch partials.

    The actor keeps, per layer, the k best activations it has seen; they are the floor below
    which later batches skip top-k candidates (see :func:`batch_partials`).
    """

    def __init__(self, model_path: str, layers: list[int], neurons: list[int], top_k: int,
                 random_k: int, seed: int, torch_threads: int | None = None, keep_windows: bool = False,
                 hist_rate: float = 1.0):
        torch.set_num_threads(_threads(torch_threads))
        self.model, self.device = load_model(model_path)
        self.layers = layers
        self.neurons = torch.as_tensor(neurons, dtype=torch.int64, device=self.device)
        self.top_k, self.random_k, self.seed, self.keep_windows = top_k, random_k, seed, keep_windows
        self.hist_rate = hist_rate
        empty = (np.zeros((len(neurons), 0), np.float32), np.zeros((len(neurons), 0), np.int64))
        self.best = {layer: empty for layer in layers}
        self._capture = capture(self.model, layers, self.neurons)
        self.run = self._capture.__enter__()  # hooks live as long as the actor

    def _floor(self, layer: int) -> Floor | None:
        val, code = self.best[layer]
        if val.shape[1] < self.top_k:
            return None
        return torch.as_tensor(val[:, -1], device=self.device), torch.as_tensor(code[:, -1], device=self.device)

    def _keep_best(self, layer: int, p: dict[str, np.ndarray]) -> None:
        self.best[layer] = merge_top(*self.best[layer], p["top_val"], p["top_code"], self.top_k)[:2]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        order = np.argsort(batch["window_id"], kind="stable")
        wids = torch.as_tensor(batch["window_id"][order], device=self.device)
        ids = torch.as_tensor(np.asarray(batch["tokens"])[order], dtype=torch.int64, device=self.device)
        acts = self.run(ids)
        rows = []
        for layer in self.layers:
            rows.append(batch_partials(acts.pop(layer), wids, layer, self.neurons, self.top_k, self.random_k,
                                       self.seed, self.keep_windows, self._floor(layer), self.hist_rate))
            self._keep_best(layer, rows[-1])
        out = {key: np.stack([r[key] for r in rows]) for key in rows[0]}
        out["layer"] = np.asarray(self.layers, dtype=np.int32)
        return out
