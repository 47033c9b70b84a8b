"""The causal check of each explained mode (``neuronscope/causal/``), issue 26 item 3.

On a kept run's explained neurons (``--run RUN``, copied into a scratch folder: the run itself is
never written): the causal stage end to end, as `neuronscope causal` runs it, with the run's
recorded subject model. Reported: the share of neurons whose top mode's effect (mean KL of the
next-token distribution, the neuron mean-ablated from the activating token on) has its 95 %
interval above its control (a random other neuron of the layer ablated on the same windows), the
mean effect, control and random-window figure of those top modes, and the seconds per neuron
(the model's load apart). Then the same stage on a tiny model with a neuron built to be known
(``tests/causal_helpers.py``): its effect beside its control.

Appends a section to benchmarks/RESULTS.md; the last printed line is
``above_control=... s_per_neuron=... known_effect=... known_control=...``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import append_results, header

from neuronscope import layout, stages
from neuronscope.causal import verdict
from neuronscope.config import load_config
from neuronscope.logs import printer
from neuronscope.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def _real(run: str, settings: dict) -> tuple[dict, dict, object]:
    with tempfile.TemporaryDirectory() as tmp:
        copy = os.path.join(tmp, "run")
        shutil.copytree(run, copy, ignore=shutil.ignore_patterns(layout.CAUSAL, layout.LOCKS, layout.ATLAS))
        cfg = load_config(None, {"causal": settings})
        t0, c0 = time.perf_counter(), time.process_time()
        summary = stages.run_causal(cfg, copy, copy, printer())
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        table = Store.open(copy).read_parquet(layout.prefix(layout.CAUSAL)).to_pandas()
    return {**summary, "wall": wall, "cpu": cpu}, verdict(table), table


def _known() -> dict:
    """The tiny known neuron's row (llama and GPT-2)."""
    from causal_helpers import KNOWN, known_neuron_run
    from transformers import AutoTokenizer

    from neuronscope.models.bundled import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("bundled:smollm2-135m").path)
    out = {}
    for model_type in ("llama", "gpt2"):
        with tempfile.TemporaryDirectory() as tmp:
            store = known_neuron_run(Path(tmp), tok, model_type)
            stages.run_causal(load_config(None), store.uri, store.uri, lambda _: None)
            rows = store.read_parquet(layout.prefix(layout.CAUSAL)).to_pandas()
            out[model_type] = rows[rows["neuron"] == KNOWN].iloc[0]
    return out


def _ci(ci) -> str:
    return f"[{ci[0]:.2e}, {ci[1]:.2e}]" if len(ci) == 2 else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a run with records and explanations (not written)")
    ap.add_argument("--ablation", default="mean", help="mean or zero")
    ap.add_argument("--results", default=None, help="the RESULTS.md to append to")
    args = ap.parse_args()

    summary, v, table = _real(args.run, {"ablation": args.ablation})
    known = _known()
    top = table.sort_values(["n_windows", "mode"], ascending=[False, True]).drop_duplicates(["layer", "neuron"])
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    cfg = load_config(None).causal
    lines = [
        f"{v['neurons']} neurons ({len(table)} modes) of the run; {args.ablation} ablation from the activating "
        f"token of each of the mode's windows (its explain exemplars) on, {cfg.horizon} next-token predictions "
        f"measured per window, {cfg.random_windows} random windows per neuron; the top mode is the one with the "
        "most windows.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| **share of neurons whose top mode's effect interval lies above its control** | "
        f"**{v['top_mode_above_control']:.0%}** |",
        f"| top modes: mean KL effect vs control vs random windows | {v['top_mode_effect']:.2e} vs "
        f"{v['top_mode_control']:.2e} vs {top['causal_random'].mean():.2e} |",
        f"| top modes: median effect / control ratio | {np.median(top['causal_effect'] / top['causal_control']):.1f} |",
        f"| top modes: mean change of the next tokens' log p, vs control | {-top['causal_logprob'].mean():+.4f} vs "
        f"{-top['causal_logprob_control'].mean():+.4f} |",
        f"| windows per mode, median (min-max) | {table['n_windows'].median():.0f} ({table['n_windows'].min()}-"
        f"{table['n_windows'].max()}) |",
        f"| **seconds per neuron** (model load apart) | **{summary['seconds_per_neuron']:.2f}** |",
        f"| stage end to end / model load; CPU seconds of the process (all its threads) per neuron | "
        f"{summary['wall']:.1f} s / {summary['load_seconds']:.1f} s; {summary['cpu'] / summary['checked']:.2f} |",
        f"| load average (1 / 5 / 15 min) at the end | {load} |",
    ]
    for model_type, r in known.items():
        lines.append(
            f"| tiny {model_type}, the known neuron: effect vs control (KL); next-token log p change vs control | "
            f"{r['causal_effect']:.2e} {_ci(r['causal_effect_ci'])} vs {r['causal_control']:.2e} "
            f"{_ci(r['causal_control_ci'])}; {-r['causal_logprob']:+.3f} vs {-r['causal_logprob_control']:+.4f} |"
        )
    text = "\n".join(header("Causal check per mode (causal.py)", __file__) + lines)
    print(text)
    append_results(text, args.results) if args.results else append_results(text)
    k = known["llama"]
    print(
        f"above_control={v['top_mode_above_control']} s_per_neuron={summary['seconds_per_neuron']} "
        f"known_effect={k['causal_effect']:.4f} known_control={k['causal_control']:.5f}"
    )


if __name__ == "__main__":
    main()
