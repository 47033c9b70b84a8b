"""Second pass: each exemplar's neuron activations over its whole window.

Only the windows that hold a top or random exemplar are run again, in batches; memory is
bounded by one batch of activations plus the exemplar rows themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .hooks import capture, load_model
from .udf import _threads


@dataclass
class Wanted:
    """The exemplars of one layer: parallel arrays, one entry per (neuron column, kind, rank)."""

    layer: int
    col: np.ndarray  # index into the recorded neurons
    window_id: np.ndarray


def window_activations(model_path: str, windows: dict[int, np.ndarray], wanted: list[Wanted],
                       neurons: list[int], batch_size: int, torch_threads: int | None = None) -> list[np.ndarray]:
    """For each Wanted, an (entries, window) float32 array of that neuron's activations."""
    torch.set_num_threads(_threads(torch_threads))
    model, device = load_model(model_path)
    layers = sorted({w.layer for w in wanted})
    wids = np.unique(np.concatenate([w.window_id for w in wanted]))
    length = len(next(iter(windows.values())))
    out = [np.zeros((len(w.col), length), np.float32) for w in wanted]
    idx = torch.as_tensor(neurons, dtype=torch.int64, device=device)
    with capture(model, layers, idx) as run:
        for start in range(0, len(wids), batch_size):
            chunk = wids[start : start + batch_size]
            ids = torch.as_tensor(np.stack([windows[int(w)] for w in chunk]), dtype=torch.int64, device=device)
            acts = {layer: a.cpu().numpy() for layer, a in run(ids).items()}
            for w, dest in zip(wanted, out):
                hit = np.isin(w.window_id, chunk)
                if hit.any():
                    local = np.searchsorted(chunk, w.window_id[hit])
                    dest[hit] = acts[w.layer][local, :, w.col[hit]]
    return out
