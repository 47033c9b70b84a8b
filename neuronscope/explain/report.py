"""How polysemantic a run's neurons are: the distribution of semantic modes per neuron."""

from __future__ import annotations

import pandas as pd


def polysemanticity(df: pd.DataFrame) -> dict:
    """From EXPLANATIONS rows: neurons with k modes, the share with one mode, and both per layer
    (neurons explained by the NeuronScope method only; failed ones are left out)."""
    per = df[(df["status"] == "ok") & (df["n_modes"] > 0)].drop_duplicates(["layer", "neuron"])
    if per.empty:
        return {"neurons": 0}

    def of(g: pd.DataFrame) -> dict:
        counts = g["n_modes"].value_counts().sort_index()
        return {
            "neurons": len(g),
            "modes": {int(k): int(v) for k, v in counts.items()},
            "mean_modes": round(float(g["n_modes"].mean()), 3),
            "single_mode_share": round(float((g["n_modes"] == 1).mean()), 3),
        }

    return {**of(per), "per_layer": {int(layer): of(g) for layer, g in per.groupby("layer")}}


def polysemanticity_line(report: dict) -> str:
    if not report.get("neurons"):
        return "modes per neuron: no neuron explained by the NeuronScope method"
    n = report["neurons"]
    dist = ", ".join(f"{k} mode{'s' if k > 1 else ''}: {v} ({v / n:.0%})" for k, v in report["modes"].items())
    layers = ", ".join(f"{layer}: {r['single_mode_share']:.0%}" for layer, r in report["per_layer"].items())
    return (
        f"modes per neuron ({n} neurons, mean {report['mean_modes']:.2f}): {dist}; single-mode share by layer: {layers}"
    )
