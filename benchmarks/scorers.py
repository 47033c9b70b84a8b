"""The judges judged: can each scorer tell a right explanation from a wrong one, at what cost, and
do the scorers agree?

  python benchmarks/scorers.py                 # bundled SmolLM2-135M (LLM scorers) + MiniLM

Planted neurons (neuronscope.record.synthetic: 1-3 known concepts over the real corpus): each
neuron's held-out exemplars (the workflow's split) scored with its concepts' own names (right), a
concept it does not hold (wrong) and another planted neuron's names (other). Pairwise AUROC =
share of neurons where right beats wrong (ties one half); gap = mean right - mean wrong.
Real neurons of the bundled model: the single-pass explainer's explanation of each neuron
against another neuron's explanation (own vs other), and Spearman agreement between scorers.
Also each scorer's self-check and a simulation row with the old 0-10 numeral scale ("before"
the fix: on SmolLM2 "10" is two tokens, so a predicted 10 was read as a 1).
Last line: S_right_vs_wrong=<default scorer's pairwise AUROC> plus each scorer's.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from common import append_results, header

from neuronscope import stages
from neuronscope.cli.flags import config_from_args
from neuronscope.config import ExplainConfig
from neuronscope.exemplars import load, split
from neuronscope.explain import agents
from neuronscope.llm.base import Ledger, Metered
from neuronscope.llm.vllm_backend import resolve_dtype
from neuronscope.logs import printer
from neuronscope.models.embedder import get_embedder
from neuronscope.scoring import SCORERS, SimulationScorer, make_scorer
from neuronscope.scoring.calibration import self_check
from neuronscope.scoring.metrics import pairwise_win
from neuronscope.scoring.simulate import Vocab

BEFORE = "simulation (0-10, before)"


class OldScaleSimulation(SimulationScorer):
    """The simulator as it was: a 0-10 scale read from single-token numerals only, so on a
    tokenizer that splits "10" a predicted 10 counts as a 1."""

    name = BEFORE

    @property
    def vocab(self) -> Vocab:
        if self._vocab is None:
            v = Vocab.of(self.llm)
            self._vocab = Vocab(v.numerals, v.tab, v.newline, v.slot, 10)
        return self._vocab


def _args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--planted-per", type=int, default=5, help="planted neurons per concept count (1, 2, 3)")
    p.add_argument("--planted-tokens", type=int, default=300_000, help="corpus tokens the planted neurons draw from")
    p.add_argument("--layers", default="3,11,19,27", help="real neurons: layers of the bundled model")
    p.add_argument("--neurons", default="0-3", help="real neurons: neurons of each layer")
    p.add_argument("--max-tokens", type=int, default=40_000, help="real neurons: corpus tokens recorded")
    p.add_argument("--out", help="folder for the real-neuron run (default: a temporary folder)")
    p.add_argument(
        "--scorers",
        default=",".join([*SCORERS, BEFORE]),
        help=f"comma list of scorers to measure (default: all, and {BEFORE!r})",
    )
    p.add_argument("--no-append", action="store_true", help="print, do not append to RESULTS.md")
    return p.parse_args(argv)


def _scorers(llm, embedder, ledger: Ledger, names: list[str]) -> dict:
    unknown = sorted(set(names) - {*SCORERS, BEFORE})
    if unknown:
        raise SystemExit(f"unknown scorer(s) {unknown}; known: {[*SCORERS, BEFORE]}")
    metered = Metered(llm, ledger)
    return {
        n: OldScaleSimulation(metered, agent=BEFORE)
        if n == BEFORE
        else make_scorer(n, llm=metered, embedder=embedder, agent=n)
        for n in names
    }


def _timed(scorer, jobs, ledger: Ledger) -> tuple[list[float], float, int]:
    """Scores of every (max_act, [(explanation, exemplars), ...]) job, seconds, and the LLM
    tokens the scorer spent (none for the embedder)."""
    agents_ = [getattr(scorer, "agent", "")]
    before, t0 = ledger.total(agents_).tokens_in, time.time()
    scores = []
    for max_act, group in jobs:  # one call per neuron: each neuron has its own 0-10 scale
        scores += [r.score for r in scorer(group, max_act)]
    return scores, time.time() - t0, ledger.total(agents_).tokens_in - before


def planted_part(cfg, scorers: dict, ledger: Ledger, n_per: int, tokens: int, progress) -> dict:
    from transformers import AutoTokenizer

    from neuronscope.config import RecordConfig
    from neuronscope.models.bundled import resolve_model
    from neuronscope.record.driver import load_windows
    from neuronscope.record.synthetic import CONCEPTS, ConceptWindows, concept_sets

    tok = AutoTokenizer.from_pretrained(resolve_model(cfg.record.model).path)
    r = cfg.record
    windows, _ = load_windows(RecordConfig(corpus=r.corpus, window=r.window, max_tokens=tokens), tok)
    sets = concept_sets(n_per, seed=11)
    planted = ConceptWindows(windows, tok).plant(sets, top_k=r.top_k, random_k=r.random_k, seed=3)
    e = cfg.explain
    rng = np.random.default_rng(5)
    jobs = []
    for p in planted:
        sp = split(*load(p.table), e.n_explain, e.n_heldout_top, e.n_heldout_random)
        wrong = str(rng.choice([c for c in CONCEPTS if c not in p.concepts]))
        others = [q for q in planted if not set(q.concepts) & set(p.concepts)]
        other = " and ".join(others[int(rng.integers(len(others)))].concepts)
        jobs.append((sp.max_act, [(" and ".join(p.concepts), sp.heldout), (wrong, sp.heldout), (other, sp.heldout)]))
    out = {}
    for name, sc in scorers.items():
        scores, secs, spent = _timed(sc, jobs, ledger)
        s = np.array(scores).reshape(len(planted), 3)
        out[name] = {
            "right_vs_wrong": pairwise_win(s[:, 0], s[:, 1]),
            "right_vs_other": pairwise_win(s[:, 0], s[:, 2]),
            "right": float(np.nanmean(s[:, 0])),
            "wrong": float(np.nanmean(s[:, 1])),
            "other": float(np.nanmean(s[:, 2])),
            "seconds": secs / len(planted),
            "tokens": spent / len(planted),
            "n": len(planted),
        }
        progress(f"planted: {name}: right over wrong {out[name]['right_vs_wrong']:.2f}")
    return out


def real_part(cfg, scorers: dict, llm, ledger: Ledger, run: str, progress) -> dict:
    from scipy.stats import spearmanr

    from neuronscope.results import load_records
    from neuronscope.store import Store

    stages.run_record(cfg, run, progress)
    df = load_records(Store.open(run))
    e, neurons = cfg.explain, []
    for (layer, neuron), g in sorted(df.groupby(["layer", "neuron"])):
        try:
            neurons.append(((layer, neuron), split(*load(g), e.n_explain, e.n_heldout_top, e.n_heldout_random)))
        except ValueError:
            continue
    metered = Metered(llm, Ledger())
    texts = [
        agents.single_pass(agents.AgentSession(metered, e.max_parse_retries, []), sp.explain, sp.max_act)
        for _, sp in neurons
    ]
    shift = len(neurons) // 2 or 1  # another neuron's explanation: half the list away (another layer)
    jobs = [
        (sp.max_act, [(texts[i], sp.heldout), (texts[(i + shift) % len(neurons)], sp.heldout)])
        for i, (_, sp) in enumerate(neurons)
    ]
    out, own = {}, {}
    for name, sc in scorers.items():
        if name == BEFORE:  # the numeral fix is measured on planted neurons; real ones need no twin run
            continue
        scores, secs, spent = _timed(sc, jobs, ledger)
        s = np.array(scores).reshape(len(neurons), 2)
        own[name] = s[:, 0]
        out[name] = {
            "own_vs_other": pairwise_win(s[:, 0], s[:, 1]),
            "own": float(np.nanmean(s[:, 0])),
            "other": float(np.nanmean(s[:, 1])),
            "seconds": secs / len(neurons),
            "tokens": spent / len(neurons),
        }
        progress(f"real: {name}: own over other {out[name]['own_vs_other']:.2f}")
    names = list(own)
    agree = {(a, b): float(spearmanr(own[a], own[b], nan_policy="omit")[0]) for a in names for b in names if a < b}
    return {"per": out, "agree": agree, "n": len(neurons)}


def _report(argv, args, cfg, checks, planted, real, seconds) -> str:
    lines = header("Scorers", __file__, argv) + [
        f"LLM scorers: {cfg.llm.backend} `{cfg.llm.model}` ({resolve_dtype(cfg.llm)}); embedder `{cfg.explain.embedder}`; "
        f"held-out {cfg.explain.n_heldout_top} top + {cfg.explain.n_heldout_random} random exemplars per neuron "
        f"(the demo's split); wall time {seconds / 60:.1f} min.\n",
        f"**Planted neurons** ({next(iter(planted.values()))['n']}: {args.planted_per} each of 1, 2 and 3 "
        f"concepts; top-k {cfg.record.top_k} / random-k {cfg.record.random_k} planted). Pairwise AUROC = share of neurons where the right explanation (the planted concepts' "
        "names) scores above a wrong concept's / another planted neuron's; self-check = the run-time "
        "calibration (`neuronscope.scoring.calibration`), right name over wrong name.\n",
        "| scorer | right > wrong | right > other neuron | mean right / wrong / other | self-check | "
        "s per neuron | LLM tokens per neuron |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in planted.items():
        c = checks.get(name)
        check = f"{c.discrimination:.2f} ({'pass' if c.passed else 'FAIL'}, {c.seconds:.1f} s)" if c else "-"
        lines.append(
            f"| {name} | {r['right_vs_wrong']:.2f} | {r['right_vs_other']:.2f} | "
            f"{r['right']:.3f} / {r['wrong']:.3f} / {r['other']:.3f} | {check} | {r['seconds']:.2f} | "
            f"{r['tokens']:.0f} |"
        )
    lines += [
        f"\n**Real neurons** ({real['n']} of `{cfg.record.model}`, layers {args.layers}, neurons "
        f"{args.neurons}, {args.max_tokens} tokens): each neuron's single-pass explanation (own) against "
        "another neuron's (other), same held-out exemplars.\n",
        "| scorer | own > other | mean own / other | s per neuron | LLM tokens per neuron |",
        "|---|---|---|---|---|",
    ]
    for name, r in real["per"].items():
        lines.append(
            f"| {name} | {r['own_vs_other']:.2f} | {r['own']:.3f} / {r['other']:.3f} | "
            f"{r['seconds']:.2f} | {r['tokens']:.0f} |"
        )
    lines += [
        "\nAgreement between scorers on the real neurons' own-explanation scores (Spearman):\n",
        "| pair | rho |",
        "|---|---|",
    ]
    lines += [f"| {a} ~ {b} | {rho:.2f} |" for (a, b), rho in real["agree"].items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = _args(argv)
    base = {
        "record": {
            **stages.DEMO_OVERRIDES["record"],
            "layers": args.layers,
            "neurons": args.neurons,
            "max_tokens": args.max_tokens,
        },
        "explain": dict(stages.DEMO_OVERRIDES["explain"]),
    }
    cfg = config_from_args(argparse.Namespace(config=None), base)
    progress = printer()
    t0 = time.time()
    stages.ensure_ray()
    llm = stages.start_llm(cfg, progress)
    ledger = Ledger()
    scorers = _scorers(llm, get_embedder(cfg.explain.embedder), ledger, args.scorers.split(","))
    checks = {}
    for name, sc in scorers.items():
        checks[name] = self_check(sc)
        progress(checks[name].line())
    planted = planted_part(cfg, scorers, ledger, args.planted_per, args.planted_tokens, progress)
    real = real_part(cfg, scorers, llm, ledger, args.out or tempfile.mkdtemp(prefix="ns-scorers-"), progress)
    report = _report(argv, args, cfg, checks, planted, real, time.time() - t0)
    print(report)
    if not args.no_append:
        append_results(report)
    default = ExplainConfig().scorer
    print(
        f"S_right_vs_wrong={planted[default]['right_vs_wrong'] if default in planted else float('nan'):.2f} "
        + " ".join(
            f"S_{n.split()[0]}{'_before' if n == BEFORE else ''}={r['right_vs_wrong']:.2f}" for n, r in planted.items()
        )
    )


if __name__ == "__main__":
    main()
