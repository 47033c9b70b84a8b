"""Batched ablation: a window's next-token predictions from its activating position on, clean
and with a neuron ablated there, compared.

A batch of windows (sorted by activating position ``p``) runs its common prefix, the tokens
before the smallest ``p``, once per window with the KV cache on; the cache is repeated for each
window's rows (one clean, one per ablation) and only the rest of the window, up to ``horizon``
predictions past ``p``, runs again. Before ``p`` an ablated row equals the clean one (the model
is causal and the ablation starts at ``p``), so the prefix is never recomputed per ablation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..record.hooks import edit
from .windows import Ablation, Window


@dataclass(frozen=True)
class Item:
    """A window and the ablations measured on it, each in a row of its own."""

    window: Window
    ablations: tuple[Ablation, ...]


@dataclass(frozen=True)
class Effect:
    """Per ablation of an item: the mean over the measured positions of KL(clean || ablated) of
    the next-token distribution, and of the drop of the actual next token's log probability."""

    kl: np.ndarray
    logprob: np.ndarray


def measurable(w: Window) -> bool:
    """A window whose activating token is its last has no next token to predict in it."""
    return w.pos < len(w.token_ids) - 1


def _ablator(neurons: torch.Tensor, starts: torch.Tensor, values: torch.Tensor) -> Callable:
    """The hook's edit: row r's activation of ``neurons[r]`` set to ``values[r]`` from position
    ``starts[r]`` on; rows with neuron -1 (the clean ones) left alone."""
    rows = torch.nonzero(neurons >= 0).squeeze(1)
    cols, first, vals = neurons[rows], starts[rows], values[rows]

    def fn(x: torch.Tensor) -> torch.Tensor:
        after = torch.arange(x.shape[1], device=x.device) >= first[:, None].to(x.device)
        r, c = rows.to(x.device), cols.to(x.device)
        x = x.clone()
        x[r, :, c] = torch.where(after, vals[:, None].to(x.device, x.dtype), x[r, :, c])
        return x

    return fn


def _batch(model, layer: int, items: list[Item], horizon: int) -> list[Effect]:
    dev = model.device
    pos = [it.window.pos for it in items]
    ends = [min(p + horizon, len(it.window.token_ids) - 1) for p, it in zip(pos, items)]
    start = min(pos)
    cache = None
    if start > 0:
        prefix = torch.as_tensor(np.stack([it.window.token_ids[:start] for it in items]), device=dev)
        cache = model(input_ids=prefix, use_cache=True, logits_to_keep=1).past_key_values
    rows = [(i, a) for i, it in enumerate(items) for a in (None, *it.ablations)]
    if cache is not None:
        cache.reorder_cache(torch.as_tensor([i for i, _ in rows], device=dev))
    ids = torch.zeros((len(rows), max(ends) - start), dtype=torch.int64)
    for r, (i, _) in enumerate(rows):  # right-padded: a causal model's earlier positions never see it
        seg = items[i].window.token_ids[start : ends[i]]
        ids[r, : len(seg)] = torch.as_tensor(seg)
    hook = _ablator(
        torch.tensor([-1 if a is None else a.neuron for _, a in rows]),
        torch.tensor([pos[i] - start for i, _ in rows]),
        torch.tensor([0.0 if a is None else a.value for _, a in rows]),
    )
    with edit(model, layer, hook):
        logits = model(input_ids=ids.to(dev), past_key_values=cache, use_cache=cache is not None).logits
    logp = torch.log_softmax(logits.float(), -1).cpu()
    out, r = [], 0
    for i, it in enumerate(items):
        k, span = len(it.ablations), slice(pos[i] - start, ends[i] - start)
        clean, ablated = logp[r, span], logp[r + 1 : r + 1 + k, span]
        # never negative but for rounding, which would read as a negative effect
        kl = (clean.exp() * (clean - ablated)).sum(-1).clamp_min(0).mean(-1)
        nxt = torch.as_tensor(it.window.token_ids[pos[i] + 1 : ends[i] + 1])
        at = torch.arange(len(nxt))
        drop = (clean[at, nxt] - ablated[:, at, nxt]).mean(-1)
        out.append(Effect(kl.numpy().astype(np.float64), drop.numpy().astype(np.float64)))
        r += 1 + k
    return out


def measure(model, layer: int, items: list[Item], horizon: int, batch_size: int) -> Iterator[tuple[int, Effect]]:
    """(index into ``items``, its effect) for every measurable item, batch by batch (windows of
    close activating positions together, so that their common prefix is long)."""
    order = sorted((i for i, it in enumerate(items) if measurable(it.window)), key=lambda i: items[i].window.pos)
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            chunk = order[b : b + batch_size]
            yield from zip(chunk, _batch(model, layer, [items[i] for i in chunk], horizon))
