"""The judges judged: does each scorer prefer a neuron's true explanation to the false ones a judge
is known to fall for, at what cost, and do the scorers agree?

  python benchmarks/scorers.py                        # reader and embedding: no LLM engine
  python benchmarks/scorers.py --puzzles PUZZLES      # and the neuron puzzles
  python benchmarks/scorers.py --scorers reader,simulation --parts check,stress,real   # the LLM engine too

Stress (``neuronscope.scoring.stress``): planted neurons (``neuronscope.record.synthetic``: 1-3
whole-word concepts over the real corpus, and context neurons that fire on a concept only right
after given words), each neuron's held-out exemplars (the workflow's split) scored with its truth
and with a false explanation of every kind that applies: the explain exemplars' top words as a
list and in the puzzles' phrasing, over-general, one concept only, a near miss (sibling), a wrong
context, garbage, another neuron's truth. A kind's win rate = share of pairs where the truth
scores higher (ties one half). Two concept tables: TUNING (the reader judge's weights were chosen
on it) and HELD_OUT (never tuned on).
Puzzles (``--puzzles PATH``: the JSON of openai/automated-interpretability's neuron puzzles, per
puzzle its sentences with activations, true explanation and false ones): every sentence held
out, the truth's win rate over the false ones, word lists apart.
Self-check: each scorer's run-time calibration (``neuronscope.scoring.calibration``).
Real neurons (``--parts real``; starts the LLM engine): the single-pass explainer's explanation of
each neuron of the bundled model against another neuron's (own vs other), and Spearman agreement
between scorers. The scorer name "simulation (0-10, before)" is the simulator with the old 0-10
numeral scale (on SmolLM2 "10" is two tokens, so a predicted 10 was read as a 1).
Last line: S_stress_min=<default scorer's worst kind win rate, tuning table>, S_stress_min_heldout
and S_puzzles likewise, then each scorer's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from common import append_results, header

from neuronscope import stages
from neuronscope.cli.flags import config_from_args
from neuronscope.config import ExplainConfig
from neuronscope.exemplars import Exemplar, Scale, Split, SplitSizes, load, needed, split
from neuronscope.explain import agents
from neuronscope.llm.base import Ledger, Metered
from neuronscope.logs import printer
from neuronscope.models.embedder import get_embedder, resolve_dtype
from neuronscope.scoring import LLM_SCORERS, SCORERS, Scorer, SimulationScorer, make_scorer
from neuronscope.scoring.calibration import self_check
from neuronscope.scoring.metrics import pairwise_win
from neuronscope.scoring.simulate import Vocab
from neuronscope.scoring.stress import KINDS, Case, Trial, contest, stress, win_rates

BEFORE = "simulation (0-10, before)"
PARTS = ("check", "stress", "real")
# The stress split: the explainer's 8, and a held-out set larger than a run's, so a win rate
# rests on many words (validation exemplars are drawn as a run's are, and not used).
SIZES = SplitSizes(explain=8, heldout_top=24, heldout_random=32, validation_top=8, validation_random=8)
WINDOW = 64  # tokens per planted window (the record stage's default)
TABLE_SEEDS = {"tuning": 11, "held-out": 99}  # which concept combinations each table plants
# a false explanation of a puzzle that lists words ('instances of the words "a", "b" and "c"',
# 'the sequences of digits "000", ...') rather than describing them
PUZZLE_WORDS = re.compile(r'^(?:the )?(?:instances|sequences) of (?:the )?\w+ (?:"|\d)', re.I)


@dataclass
class Contender:
    """One scorer under test: what makes it for a neuron from the words its explainer was shown,
    and the ledger that books its LLM calls alone."""

    make: Callable[[frozenset[str]], Scorer]
    ledger: Ledger


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
    p.add_argument("--scorers", default="reader,embedding", help=f"comma list of {[*SCORERS, BEFORE]}")
    p.add_argument(
        "--embedder-dtype", default="auto", choices=("auto", "float32", "bfloat16"), help="the embedder's dtype"
    )
    p.add_argument("--parts", default="check,stress", help=f"comma list of {list(PARTS)} (real: the LLM engine)")
    p.add_argument("--stress-per", type=int, default=10, help="planted neurons per concept count (1, 2, 3), per table")
    p.add_argument("--stress-tokens", type=int, default=1_200_000, help="corpus tokens the planted neurons draw from")
    p.add_argument("--puzzles", help="the neuron puzzles' JSON file (left out when not given)")
    p.add_argument("--layers", default="3,11,19,27", help="real neurons: layers of the bundled model")
    p.add_argument("--neurons", default="0-3", help="real neurons: neurons of each layer")
    p.add_argument("--max-tokens", type=int, default=40_000, help="real neurons: corpus tokens recorded")
    p.add_argument("--out", help="folder for the real-neuron run (default: a temporary folder)")
    p.add_argument("--no-append", action="store_true", help="print, do not append to RESULTS.md")
    args = p.parse_args(argv)
    args.scorers, args.parts = args.scorers.split(","), args.parts.split(",")
    unknown = sorted(set(args.scorers) - {*SCORERS, BEFORE}) + sorted(set(args.parts) - set(PARTS))
    if unknown:
        p.error(f"unknown scorer(s) or part(s) {unknown}")
    return args


def _needs_llm(args) -> bool:
    """Whether the run starts the LLM engine: an LLM scorer, or the real neurons' explainer."""
    return "real" in args.parts or bool(set(args.scorers) & {*LLM_SCORERS, BEFORE})


def _scorer(name: str, llm, embedder, shown: frozenset[str]) -> Scorer:
    return OldScaleSimulation(llm) if name == BEFORE else make_scorer(name, llm=llm, embedder=embedder, shown=shown)


def _contenders(llm, embedder, names: list[str]) -> dict[str, Contender]:
    out = {}
    for name in names:
        ledger = Ledger()
        out[name] = Contender(partial(_scorer, name, Metered(llm, ledger) if llm else None, embedder), ledger)
    return out


def _timed(c: Contender, run: Callable[[], list[Trial]]) -> tuple[list[Trial], float, int]:
    """``run()``'s trials, its seconds and the LLM tokens the scorer spent (none for the embedder)."""
    before, t0 = c.ledger.total().tokens_in, time.time()
    trials = run()
    return trials, time.time() - t0, c.ledger.total().tokens_in - before


def _cases(table, windows, tok, n_per: int, seed: int) -> tuple[list[Case], int]:
    """The table's planted neurons as stress cases, and how many are context neurons."""
    from neuronscope.record.synthetic import ConceptWindows

    rules = table.rules(n_per, seed)
    planted = ConceptWindows(windows, tok, table.concepts).plant(rules, *needed(SIZES), seed=3)
    cases = []
    for p in planted:
        sp = split(load(p.table), SIZES)
        cases.append(Case(table.truth(p.concepts, p.context), sp.explain, sp.heldout, sp.scale))
    return cases, sum(r.context is not None for r in rules)


def stress_part(cfg, contenders: dict[str, Contender], args, progress) -> dict:
    from transformers import AutoTokenizer

    from neuronscope.config import RecordConfig
    from neuronscope.models.bundled import resolve_model
    from neuronscope.record.driver import load_windows
    from neuronscope.record.synthetic import HELD_OUT, TUNING

    tok = AutoTokenizer.from_pretrained(resolve_model(cfg.record.model).path)
    rcfg = RecordConfig(corpus=cfg.record.corpus, window=WINDOW, max_tokens=args.stress_tokens)
    windows, _ = load_windows(rcfg, tok)
    out = {}
    for label, table in (("tuning", TUNING), ("held-out", HELD_OUT)):
        cases, contexts = _cases(table, windows, tok, args.stress_per, TABLE_SEEDS[label])
        per = {}
        for name, c in contenders.items():
            trials, secs, spent = _timed(c, partial(stress, c.make, cases))
            kinds = win_rates(trials)
            per[name] = {
                "kinds": kinds,
                "all": float(np.mean([t.win for t in trials])),
                "seconds": secs / len(cases),
                "tokens": spent / len(cases),
            }
            worst = min(kinds, key=kinds.__getitem__)
            progress(f"stress ({label}): {name}: worst kind {worst} {kinds[worst]:.2f}")
        out[label] = {"per": per, "n": len(cases), "contexts": contexts}
    return out


def _puzzle(p: dict) -> list[Exemplar]:
    """A puzzle's sentences as exemplars: a token is a string (quiet) or [string, activation]."""
    out = []
    for k, s in enumerate(p["sentences"]):
        toks = tuple(t[0] if isinstance(t, list) else t for t in s)
        acts = tuple(float(t[1]) if isinstance(t, list) else 0.0 for t in s)
        out.append(Exemplar(k, "top", k, toks, acts, int(np.argmax(acts))))
    return out


def puzzles_part(path: str, contenders: dict[str, Contender], progress) -> dict:
    with open(path, encoding="utf-8") as fh:
        puzzles = json.load(fh)
    out = {}
    for name, c in contenders.items():

        def run(f=c.make) -> list[Trial]:
            trials = []
            for i, p in enumerate(puzzles.values()):
                exs = _puzzle(p)
                falses = [
                    ("words (puzzle form)" if PUZZLE_WORDS.match(x) else "other", x) for x in p["false_explanations"]
                ]
                trials += contest(f, p["explanation"], falses, Split(exs, exs, [], Scale.of(exs)), i)
            return trials

        trials, secs, _ = _timed(c, run)
        out[name] = {
            "kinds": win_rates(trials),
            "all": float(np.mean([t.win for t in trials])),
            "pairs": len(trials),
            "seconds": secs / len(puzzles),
        }
        progress(f"puzzles: {name}: truth over false {out[name]['all']:.2f}")
    return {"per": out, "n": len(puzzles)}


def real_part(cfg, contenders: dict[str, Contender], llm, run: str, progress) -> dict:
    from scipy.stats import spearmanr

    from neuronscope.results import load_records
    from neuronscope.store import Store

    stages.run_record(cfg, run, progress)
    df = load_records(Store.open(run))
    sizes, neurons = SplitSizes.of(cfg.explain), []
    for _, g in sorted(df.groupby(["layer", "neuron"])):
        try:
            neurons.append(split(load(g), sizes))
        except ValueError:
            continue
    session = agents.AgentSession(Metered(llm, Ledger()), cfg.explain.max_parse_retries, [])
    texts = [agents.single_pass(session, sp.explain, sp.scale) for sp in neurons]
    shift = len(neurons) // 2 or 1  # another neuron's explanation: half the list away (another layer)
    out, own = {}, {}
    for name, c in contenders.items():
        if name == BEFORE:  # the numeral fix is measured on planted neurons; real ones need no twin run
            continue

        def run_(f=c.make) -> list[Trial]:
            trials = []
            for i, sp in enumerate(neurons):
                other = [("other neuron", texts[(i + shift) % len(neurons)])]
                trials += contest(f, texts[i], other, sp, i)
            return trials

        trials, secs, spent = _timed(c, run_)
        s = np.array([[t.right, t.wrong] for t in trials])
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


def _kind_table(per: dict, extra: list[str]) -> list[str]:
    """Markdown rows: a scorer per row, a column per kind (KINDS order), then ``extra`` columns."""
    met = dict.fromkeys(k for r in per.values() for k in r["kinds"])
    kinds = [k for k in KINDS if k in met] + [k for k in met if k not in KINDS]
    lines = [
        "| scorer | " + " | ".join([*kinds, "all", "worst", *extra]) + " |",
        "|---" * (len(kinds) + 3 + len(extra)) + "|",
    ]
    for name, r in per.items():
        cells = [f"{r['kinds'][k]:.2f}" if k in r["kinds"] else "-" for k in kinds]
        cells += [f"{r['all']:.2f}", f"**{min(r['kinds'].values()):.2f}**"]
        cells += [f"{r[e]:.2f}" if e == "seconds" else f"{r[e]:.0f}" for e in extra]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _report(argv, args, cfg, checks, stressed, puzzles, real, seconds) -> str:
    llm = f"LLM: {cfg.llm.backend} `{cfg.llm.model}`; " if _needs_llm(args) else "no LLM; "
    lines = header("Scorers", __file__, argv) + [
        f"Embedder `{cfg.explain.embedder}` ({resolve_dtype(cfg.explain.embedder_dtype)}); {llm}wall time {seconds / 60:.1f} min.\n",
    ]
    if checks:
        lines += [
            "**Self-check** (`neuronscope.scoring.calibration`, the run-time check): per kind, the share of pairs "
            "where a built-in concept's name scores above the false explanation.\n",
            "| scorer | kinds | worst | verdict | s |",
            "|---|---|---|---|---|",
        ]
        for name, c in checks.items():
            kinds = ", ".join(f"{k} {v:.2f}" for k, v in c.kinds.items())
            verdict = "pass" if c.passed else "FAIL"
            lines.append(f"| {name} | {kinds} | {c.discrimination:.2f} | {verdict} | {c.seconds:.1f} |")
    for label, part in (stressed or {}).items():
        lines += [
            f"\n**Stress, {label} table** ({part['n']} planted neurons: {args.stress_per} each of 1, 2 and 3 "
            f"concepts and {part['contexts']} context neurons, over {args.stress_tokens} corpus tokens in "
            f"{WINDOW}-token windows; held-out {SIZES.heldout_top} top + {SIZES.heldout_random} random "
            f"exemplars, explainer shown {SIZES.explain}): win rate of the truth over each kind of false "
            "explanation.\n",
            *_kind_table(part["per"], ["seconds", "tokens"]),
        ]
    if puzzles:
        lines += [
            f"\n**Neuron puzzles** ({puzzles['n']} puzzles of openai/automated-interpretability, every sentence "
            "held out, shown words = the firing words of all sentences): win rate of the true explanation over the "
            "false ones, word lists (words (puzzle form)) and the others (other) apart.\n",
            *_kind_table(puzzles["per"], ["pairs"]),
        ]
    if real:
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
        lines += ["\nAgreement between scorers on the real neurons' own-explanation scores (Spearman):\n"]
        lines += [
            "| pair | rho |",
            "|---|---|",
            *(f"| {a} ~ {b} | {rho:.2f} |" for (a, b), rho in real["agree"].items()),
        ]
    return "\n".join(lines) + "\n"


def _headline(stressed, puzzles) -> str:
    """S_stress_min, S_stress_min_heldout and S_puzzles of the default scorer, then each scorer's."""

    def figures(name: str) -> dict[str, float]:
        out = {}
        if stressed:
            out["stress_min"] = min(stressed["tuning"]["per"][name]["kinds"].values())
            out["stress_min_heldout"] = min(stressed["held-out"]["per"][name]["kinds"].values())
        if puzzles:
            out["puzzles"] = puzzles["per"][name]["all"]
        return out

    names = list((stressed or {}).get("tuning", {}).get("per", {})) or list((puzzles or {}).get("per", {}))
    default = ExplainConfig().scorer
    parts = [f"S_{k}={v:.2f}" for k, v in figures(default).items()] if default in names else []
    for name in names:
        tag = "simulation_before" if name == BEFORE else name
        parts += [f"S_{tag}_{k}={v:.2f}" for k, v in figures(name).items()]
    return " ".join(parts)


def main(argv=None) -> None:
    args = _args(argv)
    base = {
        "record": {
            **stages.DEMO_OVERRIDES["record"],
            "layers": args.layers,
            "neurons": args.neurons,
            "max_tokens": args.max_tokens,
        },
        "explain": {**stages.DEMO_OVERRIDES["explain"], "embedder_dtype": args.embedder_dtype},
    }
    cfg = config_from_args(argparse.Namespace(config=None), base)
    progress = printer()
    t0 = time.time()
    llm = None
    if _needs_llm(args):
        stages.ensure_ray()
        llm = stages.start_llm(cfg, progress)
    contenders = _contenders(llm, get_embedder(cfg.explain.embedder, cfg.explain.embedder_dtype), args.scorers)
    checks = {}
    if "check" in args.parts:
        for name, c in contenders.items():
            checks[name] = self_check(c.make)
            progress(checks[name].line())
    stressed = stress_part(cfg, contenders, args, progress) if "stress" in args.parts else None
    puzzles = puzzles_part(args.puzzles, contenders, progress) if args.puzzles else None
    real = None
    if "real" in args.parts:
        real = real_part(cfg, contenders, llm, args.out or tempfile.mkdtemp(prefix="ns-scorers-"), progress)
    report = _report(argv, args, cfg, checks, stressed, puzzles, real, time.time() - t0)
    print(report)
    if not args.no_append:
        append_results(report)
    print(_headline(stressed, puzzles))


if __name__ == "__main__":
    main()
