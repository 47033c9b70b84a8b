"""How a run's numbers read in a terminal: every score beside its control, in one place, and
how polysemantic the run's neurons are.

The atlas page formats its scores in JavaScript (``atlas/static/atlas.js``: ``fmt``, ``pair``,
``interval``, ``halfWidth`` and ``judged``): its counterpart, to be kept alike.
"""

from __future__ import annotations

import math

import pandas as pd

# A missing score (None, or NaN: a neuron without that explanation, a set that cannot be
# scored) in the terminal tables; the neuron views print NaN as it is ("nan").
MISSING = "  -  "


def number(x, spec: str = "5.2f", missing: str | None = MISSING) -> str:
    """A score as text: ``format(x, spec)``, or ``missing`` where there is none (None or NaN).
    ``missing=None``: NaN formats as what it is."""
    if missing is not None and (x is None or (isinstance(x, float) and math.isnan(x))):
        return missing
    return format(x, spec)


def score_vs_control(score, control, spec: str = "5.2f", between: str = "vs", missing: str | None = MISSING) -> str:
    """'0.91 vs 0.48': a score beside its control, never alone. The tables and search hits use
    the defaults; a neuron's own view (``show``, ``score``) writes 3 decimals "vs control"."""
    return f"{number(score, spec, missing)} {between} {number(control, spec, missing)}"


def interval(ci, spec: str = ".2f") -> str:
    """'[0.85, 0.96]': a score's 95 % interval; empty where there is none."""
    if ci is None or len(ci) != 2 or any(x is None or (isinstance(x, float) and math.isnan(x)) for x in ci):
        return ""
    return f"[{format(ci[0], spec)}, {format(ci[1], spec)}]"


def half_width(score, ci, spec: str = "4.2f", missing: str | None = MISSING) -> str:
    """'0.91±.05': a score and half its interval's width, for tables (no interval: the score alone)."""
    text = number(score, spec, missing)
    if not interval(ci) or text == missing:
        return text + "    "
    return f"{text}±{format((ci[1] - ci[0]) / 2, '.2f').lstrip('0')}"


def judged(score, ci, control, control_ci, lexical=None, lexical_ci=None) -> str:
    """'0.912 [0.85, 0.96] vs words 0.801 [0.72, 0.88] vs control 0.512 [0.43, 0.60]': a score with
    its interval beside the words baseline (where given) and the control, each with theirs."""
    out = f"{number(score, '.3f', None)} {interval(ci)}".rstrip()
    if lexical is not None:
        out += f" vs words {number(lexical, '.3f', None)} {interval(lexical_ci)}".rstrip()
    return out + f" vs control {number(control, '.3f', None)} {interval(control_ci)}".rstrip()


def causal_vs_control(r) -> str:
    """'KL 1.2e-02 [8.0e-03, 1.7e-02] vs control 4.1e-04 [1.0e-04, 9.0e-04] (neuron 17) vs random
    windows 2.0e-03 [1.1e-03, 3.1e-03]; next-token log p -0.210 vs control -0.002': a mode's causal
    check (a CAUSAL row, or an atlas row holding its columns), its control beside it. KL in
    scientific notation: a control's is often orders of magnitude below the effect."""
    kl = lambda x, ci: f"{number(x, '.1e', None)} {interval(ci, '.1e')}".rstrip()
    return (
        f"KL {kl(r['causal_effect'], r['causal_effect_ci'])} vs control {kl(r['causal_control'], r['causal_control_ci'])} "
        f"(neuron {int(r['control_neuron'])}) vs random windows {kl(r['causal_random'], r['causal_random_ci'])}; "
        f"next-token log p {number(-r['causal_logprob'], '+.3f', None)} vs control "
        f"{number(-r['causal_logprob_control'], '+.3f', None)}"
    )


def detail_vs_control(score, control, width: str = "") -> str:
    """'0.912 vs control 0.480': a neuron's view; ``width`` pads both numbers ("6")."""
    return score_vs_control(score, control, f"{width}.3f", "vs control", None)


def progress_note(scorer: str, s) -> str:
    """A finished neuron's progress line: its scores under ``scorer``, or why it failed (``s``:
    its summary, with status, error, score, baseline_score, control_score and n_modes)."""
    if s.status != "ok":
        return f"FAILED: {s.error}"
    score, baseline, control = (number(x, ".3f", "-") for x in (s.score, s.baseline_score, s.control_score))
    negative = ", and its negative side" if getattr(s, "negative", None) else ""
    return f"{scorer} {score} baseline {baseline} control {control}, {s.n_modes} mode(s){negative}"


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
