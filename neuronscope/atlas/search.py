"""Search the atlas by meaning (explanation embeddings) or by token (top-token profiles, then
the tokens each neuron's output promotes).

One function serves the CLI and `atlas serve`'s /api/search, so both answer alike."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import pandas as pd

from ..report import score_vs_control
from . import semantic

NEURONS_KEY, TOKENS_KEY, INDEX_KEY = "neurons.parquet", "tokens.parquet", "explanations.faiss"


@dataclass(frozen=True)
class Hit:
    layer: int
    neuron: int
    mode: int
    # the mode's score for a meaning hit, the neuron's combined score for a token hit; a neuron
    # explained by the single pass only (mode -1): its single-pass score
    score: float
    control: float
    explanation: str | None  # what the neuron's page shows (``semantic.shown``)
    match: float  # cosine similarity to the query, the token's highest activation, or its output weight
    match_kind: str  # "similarity" | "activation" | "promotes"
    polarity: int = 1  # the side the explanation is of: -1, what drives the neuron most negative

    def line(self) -> str:
        text = self.explanation or "(not explained)"
        which = "single pass" if self.mode < 0 and self.explanation else f"mode {self.mode}"
        which = f"negative side {which}" if self.polarity < 0 else which
        return (
            f"L{self.layer} N{self.neuron} {which}  score {score_vs_control(self.score, self.control)}  "
            f"{self.match_kind} {self.match:.3f}  {text}"
        )

    def as_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def _num(x) -> float:
    return float(x) if x is not None and not pd.isna(x) else math.nan


class AtlasIndex:
    """The atlas table, its FAISS index over the explanations its pages show and its token profiles."""

    def __init__(self, neurons: pd.DataFrame, index, tokens: pd.DataFrame):
        self.neurons, self.index, self.tokens = neurons, index, tokens
        self._shown = semantic.shown(neurons).to_numpy()
        self._folded = tokens["token"].str.strip().str.casefold()
        # each neuron's first row (its first mode, or its only row): what a token hit shows
        self._first = neurons.reset_index().drop_duplicates(["layer", "neuron"]).set_index(["layer", "neuron"])["index"]
        self._promoted: pd.DataFrame | None = None  # built on the first token search

    @classmethod
    def load(cls, store) -> AtlasIndex:
        return cls(
            store.read_parquet(NEURONS_KEY).to_pandas(),
            semantic.index_from_bytes(store.read_bytes(INDEX_KEY)),
            store.read_parquet(TOKENS_KEY).to_pandas(),
        )

    def search(
        self, query: str, k: int = 10, layers=None, min_score: float | None = None, token: bool = False
    ) -> list[Hit]:
        """The k best hits that pass the filters (layers: a collection of layer numbers)."""
        filtered = bool(layers) or min_score is not None
        # with filters every vector is ranked, so that k hits survive them when they exist
        hits = self._by_token(query) if token else self._by_meaning(query, self.index.ntotal if filtered else k)
        keep = (
            h
            for h in hits
            if (not layers or h.layer in layers)
            and (min_score is None or (math.isfinite(h.score) and h.score >= min_score))
        )
        return [h for _, h in zip(range(k), keep)] if k > 0 else []

    def _hit(self, row: int, match: float, kind: str, score_col: str) -> Hit:
        r = self.neurons.iloc[row]
        return Hit(
            int(r["layer"]),
            int(r["neuron"]),
            int(r["mode"]),
            _num(r[score_col if r["mode"] >= 0 else "baseline_score"]),
            _num(r["control_score"]),
            self._shown[row],
            float(match),
            kind,
            int(r.get("polarity", 1)),  # an atlas built before polarities: all positive
        )

    def _by_meaning(self, query: str, k: int):
        sims, rows = semantic.nearest(self.index, semantic.embed_texts([query]), k)
        return (self._hit(int(r), s, "similarity", "mode_score") for s, r in zip(sims[0], rows[0]) if r >= 0)

    def _by_token(self, token: str):
        """Neurons whose top-exemplar tokens include ``token`` (ignoring case and surrounding
        spaces), strongest activation first; then those whose output promotes it, highest weight
        first."""
        folded = token.strip().casefold()
        match = self.tokens[self._folded == folded]
        best = match.sort_values(["max_act", "count"], ascending=False).drop_duplicates(["layer", "neuron"])
        for r in best.itertuples(index=False):
            yield self._hit(int(self._first[(r.layer, r.neuron)]), r.max_act, "activation", "score")
        promoted = self.promoted()
        hits = promoted[promoted["token"] == folded].sort_values("weight", ascending=False, kind="stable")
        for r in hits.drop_duplicates("row").itertuples(index=False):  # " King" and "king": once
            yield self._hit(int(r.row), r.weight, "promotes", "score")

    def promoted(self) -> pd.DataFrame:
        """(row, token, weight): each neuron's first table row beside every token its output
        promotes, case-folded and stripped (none for an atlas built without output tokens)."""
        if self._promoted is None:
            cols = ["promoted_tokens", "promoted_weights"]
            if not set(cols) <= set(self.neurons.columns):
                self._promoted = pd.DataFrame({"row": [], "token": [], "weight": []})
            else:
                rows = self._first.to_numpy()
                firsts = self.neurons.iloc[rows][cols].set_axis(["token", "weight"], axis=1).assign(row=rows)
                flat = firsts[firsts["token"].map(len) > 0].explode(["token", "weight"], ignore_index=True)
                flat["token"] = flat["token"].astype(str).str.strip().str.casefold()
                self._promoted = flat.astype({"weight": float})[["row", "token", "weight"]]
        return self._promoted
