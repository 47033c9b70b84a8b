"""What the causal check of one layer ablates, and where: each explained neuron's modes with
their windows and control neuron, and the neuron's random windows, read from the run's tables."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow.dataset as ds

from .. import layout, schema
from ..errors import NeuronScopeError
from ..results import read_explanations
from ..store import Store

# The records that place a mode's window: its top (or, for the negative side, bottom) exemplar;
# the neuron's random windows give the random-window figure.
SIDE_KIND = {1: "top", -1: "bottom"}
RANDOM = "random"


@dataclass(frozen=True)
class Window:
    """A window of the corpus and the position where the check starts: its activating token."""

    window_id: int
    token_ids: np.ndarray
    pos: int


@dataclass(frozen=True)
class Ablation:
    """A neuron and the value its activation is set to."""

    neuron: int
    value: float


@dataclass
class ModeCheck:
    polarity: int
    mode: int
    windows: list[Window]
    control: Ablation  # a random other neuron of the layer, ablated on the same windows


@dataclass
class NeuronCheck:
    """One neuron's causal check: its ablation, its modes, its random windows."""

    layer: int
    neuron: int
    ablation: Ablation
    modes: list[ModeCheck]
    random: list[Window]


def explained_modes(store: Store) -> pd.DataFrame:
    """The run's explained modes (rows with ``mode >= 0`` of ok neurons): layer, neuron,
    polarity (1 where the table has none), mode, exemplar_ids. An error naming the run where
    there are none."""
    df = schema.backfill(read_explanations(store, ["layer", "neuron", "polarity", "mode", "status", "exemplar_ids"]))
    df = df[(df["status"] == "ok") & (df["mode"] >= 0)].copy()
    if df.empty:
        raise NeuronScopeError(
            f"run {store.uri} has no explained modes to check causally; run `neuronscope explain` first "
            "(a neuron explained by the single-pass method alone has no modes)"
        )
    return df.astype({"layer": "int64", "neuron": "int64", "polarity": "int64", "mode": "int64"})


def _layer_records(src: Store, layer: int, neurons: list[int]) -> pd.DataFrame:
    where = (
        (ds.field("layer") == layer)
        & ds.field("neuron").isin(neurons)
        & ds.field("kind").isin([*SIDE_KIND.values(), RANDOM])
    )
    cols = ["neuron", "kind", "rank", "window_id", "token_ids", "max_pos"]
    df = src.read_parquet_where(layout.layer_dir(layout.RECORDS, layer), where, cols).to_pandas()
    if (df["token_ids"].map(len) == 0).any():
        raise NeuronScopeError(
            f"records of layer {layer} in {src.uri} hold no token ids (imported records?): the causal "
            "check needs the windows as the subject model reads them"
        )
    return df.sort_values(["neuron", "kind", "rank"])


def layer_means(src: Store, layer: int) -> dict[int, float]:
    """Each recorded neuron of the layer's mean activation (STATS)."""
    t = src.read_parquet_where(layout.layer_dir(layout.STATS, layer), ds.field("layer") == layer, ["neuron", "mean"])
    return dict(zip(t["neuron"].to_pylist(), t["mean"].to_pylist()))


def _window(r) -> Window:
    return Window(int(r.window_id), np.asarray(r.token_ids, dtype=np.int64), int(r.max_pos))


class LayerPlan:
    """The checks of one layer's explained neurons (``modes``: their rows of ``explained_modes``)."""

    def __init__(self, src: Store, layer: int, modes: pd.DataFrame, cfg, n_neurons: int):
        self.layer, self.cfg, self.n_neurons = layer, cfg, n_neurons
        self.means = layer_means(src, layer)
        records = _layer_records(src, layer, sorted(set(modes["neuron"])))
        self.records = {n: g for n, g in records.groupby("neuron")}
        self.checks = [self._check(n, g) for n, g in modes.groupby("neuron")]

    def value(self, neuron: int) -> float:
        """The ablated activation: zero, or the neuron's mean (zero where it has no STATS row)."""
        return 0.0 if self.cfg.ablation == "zero" else float(self.means.get(neuron, 0.0))

    def control(self, neuron: int, polarity: int, mode: int) -> Ablation:
        """A random other neuron of the layer, seeded by the mode: one with STATS (a mean of its
        own) where the layer has any besides ``neuron``, else any other."""
        pool = sorted(n for n in self.means if n != neuron) or [n for n in range(self.n_neurons) if n != neuron]
        rng = np.random.default_rng([self.cfg.seed, self.layer, neuron, polarity + 1, mode])
        pick = int(pool[rng.integers(len(pool))])
        return Ablation(pick, self.value(pick))

    def _check(self, neuron: int, rows: pd.DataFrame) -> NeuronCheck:
        recs = self.records.get(neuron, pd.DataFrame(columns=["kind", "rank", "window_id", "token_ids", "max_pos"]))
        modes = []
        for r in rows.sort_values(["polarity", "mode"]).itertuples(index=False):
            # a window of several top tokens is placed at its best one (rows are in rank order)
            side = recs[recs["kind"] == SIDE_KIND[r.polarity]].drop_duplicates("window_id")
            by_id = {int(x.window_id): _window(x) for x in side.itertuples(index=False)}
            wins = [by_id[w] for w in r.exemplar_ids if w in by_id]
            modes.append(ModeCheck(r.polarity, r.mode, wins, self.control(neuron, r.polarity, r.mode)))
        random = [
            _window(x) for x in recs[recs["kind"] == RANDOM].head(self.cfg.random_windows).itertuples(index=False)
        ]
        return NeuronCheck(self.layer, neuron, Ablation(neuron, self.value(neuron)), modes, random)
