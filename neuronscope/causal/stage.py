"""The causal stage: per layer, every explained mode's windows ablated in batched forwards of the
subject model (loaded once), written as one CAUSAL part per layer; a rerun checks only the
neurons a layer's part lacks."""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np
import pandas as pd
import pyarrow as pa

from .. import layout
from ..config import CausalConfig
from ..logs import Progress
from ..models import arch
from ..results import read_stage
from ..schema import CAUSAL, conform
from ..scoring.metrics import bootstrap_weights, interval, mean_weighted
from ..store import Store
from .ablate import Effect, Item, measure
from .windows import RANDOM, LayerPlan, NeuronCheck, explained_modes

BOOTSTRAP = 200  # resamples of the windows behind each interval, as the explain stage's scores


def _mean_ci(values: np.ndarray, groups: list[int], seed: int) -> tuple[float, list[float]]:
    """The mean of per-window values and its 95 % bootstrap interval over the windows (NaN, []
    where there are none); the same ``seed`` and windows give the same resamples, so an effect and
    its control are resampled in pairs."""
    if not len(values):
        return float("nan"), []
    draws = mean_weighted(values, bootstrap_weights(groups, BOOTSTRAP, seed))
    return float(np.mean(values)), list(interval(draws))


def _items(checks: list[NeuronCheck]) -> tuple[list[Item], list[tuple]]:
    """Every (window, ablations) of the layer, and beside each its (neuron, polarity, mode) or
    (neuron, RANDOM)."""
    items: list[Item] = []
    tags: list[tuple] = []
    for c in checks:
        for m in c.modes:
            for w in m.windows:
                items.append(Item(w, (c.ablation, m.control)))
                tags.append((c.neuron, m.polarity, m.mode))
        for w in c.random:
            items.append(Item(w, (c.ablation,)))
            tags.append((c.neuron, RANDOM))
    return items, tags


def _rows(checks: list[NeuronCheck], got: dict[tuple, list[tuple[int, Effect]]], cfg: CausalConfig) -> list[dict]:
    out = []
    for c in checks:
        rand = got.get((c.neuron, RANDOM), [])
        rand_ids = [w for w, _ in rand]
        rand_kl, rand_ci = _mean_ci(np.array([e.kl[0] for _, e in rand]), rand_ids, cfg.seed)
        rand_lp = float(np.mean([e.logprob[0] for _, e in rand])) if rand else float("nan")
        for m in c.modes:
            seen = got.get((c.neuron, m.polarity, m.mode), [])
            ids = [w for w, _ in seen]
            kl, lp = (
                np.array([e.kl for _, e in seen]).reshape(-1, 2),
                np.array([e.logprob for _, e in seen]).reshape(-1, 2),
            )
            effect, effect_ci = _mean_ci(kl[:, 0], ids, cfg.seed)
            control, control_ci = _mean_ci(kl[:, 1], ids, cfg.seed)
            logprob, logprob_ci = _mean_ci(lp[:, 0], ids, cfg.seed)
            out.append(
                {
                    "layer": c.layer,
                    "neuron": c.neuron,
                    "polarity": m.polarity,
                    "mode": m.mode,
                    "ablation": cfg.ablation,
                    "ablation_value": c.ablation.value,
                    "n_windows": len(seen),
                    "causal_effect": effect,
                    "causal_effect_ci": effect_ci,
                    "causal_control": control,
                    "causal_control_ci": control_ci,
                    "control_neuron": m.control.neuron,
                    "causal_random": rand_kl,
                    "causal_random_ci": rand_ci,
                    "n_random": len(rand),
                    "causal_logprob": logprob,
                    "causal_logprob_ci": logprob_ci,
                    "causal_logprob_control": float(np.mean(lp[:, 1])) if len(lp) else float("nan"),
                    "causal_logprob_random": rand_lp,
                }
            )
    return out


PROGRESS_EVERY_S = 30.0  # a long layer's progress line at most this often


def check_layer(model, plan: LayerPlan, cfg: CausalConfig, progress: Progress | None = None) -> pa.Table:
    """The CAUSAL rows of the plan's neurons."""
    items, tags = _items(plan.checks)
    got: dict[tuple, list[tuple[int, Effect]]] = defaultdict(list)
    last = time.time()
    for n, (i, effect) in enumerate(measure(model, plan.layer, items, cfg.horizon, cfg.batch_size), start=1):
        got[tags[i]].append((items[i].window.window_id, effect))
        if progress is not None and time.time() - last > PROGRESS_EVERY_S:
            progress(f"causal: layer {plan.layer}: {n} of {len(items)} windows measured")
            last = time.time()
    rows = _rows(plan.checks, got, cfg)
    return conform(pa.Table.from_pylist(rows, schema=CAUSAL), CAUSAL)


def _done(out: Store, layer: int) -> pa.Table | None:
    key = layout.causal_key(layer)
    return out.read_parquet(key) if out.exists(key) else None


def _todo(out: Store, modes: pd.DataFrame) -> dict[int, tuple[pd.DataFrame, pa.Table | None]]:
    """layer -> (its modes of neurons not yet in its part, that part)."""
    todo = {}
    for layer, rows in modes.groupby("layer"):
        part = _done(out, int(layer))
        have = set(part["neuron"].to_pylist()) if part is not None else set()
        left = rows[~rows["neuron"].isin(have)]
        if not left.empty:
            todo[int(layer)] = (left, part)
    return todo


def verdict(table: pd.DataFrame) -> dict:
    """Per neuron its top mode (the most windows; ties the lowest mode): how many neurons have
    one measured, the share whose effect's interval lies above its control, and the mean effect
    and control of those top modes."""
    rows = table[table["n_windows"] > 0].sort_values(["n_windows", "mode"], ascending=[False, True])
    top = rows.drop_duplicates(["layer", "neuron", "polarity"])
    if top.empty:
        return {"neurons": 0, "top_mode_above_control": None}
    above = [len(ci) == 2 and ci[0] > c for ci, c in zip(top["causal_effect_ci"], top["causal_control"])]
    return {
        "neurons": len(top),
        "top_mode_above_control": round(float(np.mean(above)), 3),
        "top_mode_effect": float(top["causal_effect"].mean()),
        "top_mode_control": float(top["causal_control"].mean()),
    }


def run_causal(src: Store, out: Store, cfg: CausalConfig, model_path: str, progress: Progress) -> dict:
    """Check every explained mode of ``out`` whose neuron's layer part lacks it, with the records
    of ``src`` and the model at ``model_path``; returns the stage's summary."""
    from ..record.hooks import load_model

    modes = explained_modes(out)
    todo = _todo(out, modes)
    summary = {"layers": len(todo), "layers_skipped": modes["layer"].nunique() - len(todo), "checked": 0}
    if not todo:
        return {**summary, **verdict(_all(out))}
    t0 = time.time()
    model, _ = load_model(model_path)
    summary["load_seconds"] = round(time.time() - t0, 2)
    t1 = time.time()
    for layer, (rows, part) in todo.items():
        t = time.time()
        plan = LayerPlan(src, layer, rows, cfg, arch.n_neurons(model.config))
        table = check_layer(model, plan, cfg, progress)
        merged = table if part is None else pa.concat_tables([part, table])
        order = [("neuron", "ascending"), ("polarity", "descending"), ("mode", "ascending")]
        out.write_parquet(layout.causal_key(layer), merged.sort_by(order))
        summary["checked"] += len(plan.checks)
        progress(
            f"causal: layer {layer}: {len(plan.checks)} neurons, {table.num_rows} modes, "
            f"{sum(table['n_windows'].to_pylist())} mode windows in {time.time() - t:.1f} s"
        )
    seconds = time.time() - t1
    summary.update(seconds=round(seconds, 2), seconds_per_neuron=round(seconds / max(summary["checked"], 1), 3))
    return {**summary, **verdict(_all(out))}


def _all(out: Store) -> pd.DataFrame:
    return read_stage(out, layout.prefix(layout.CAUSAL)).to_pandas()
