"""J: the reader judge's cost per neuron, this tree against a git revision's, on a kept run's neurons.

For each neuron of a kept run (``--run``: its records and transcripts), the judge calls its
workflow made are made again, through ``NeuronWork``'s own stages, on the exemplar sets its
transcript names (its split's window ids): triage (baseline and words held out, the words' modes),
each mode's LLM candidates on validation, one refine round (the revision the run got, from the
transcript: no LLM), the choice among candidates, coverage, and the final held-out scores with
their bootstrap intervals (modes, combined, baseline, control, words). The embedder is the
configured one, loaded in the process (``--embedder``) on ``--threads`` torch threads (1: what Ray
gives a run's workflows and its served embedder); its time is told apart from the rest.

Each contender (``--against``'s ``neuronscope`` package read from git into a scratch folder, and
this tree's) runs in fresh child processes, taking turns ``--rounds`` times so that load from
other processes hits both alike. In each child: a *cold* pass over the neurons in run order with
an empty embedder cache (the cache filling as a run's served embedder does), then a *warm* pass
(every text embedded already), then a profiled warm pass (``cProfile``: cumulative seconds of the
judge's parts). Every score and interval of the two contenders must agree (``max_diff``).

J = this tree's warm judge seconds per neuron / the revision's (median over rounds). Appends a
section to benchmarks/RESULTS.md; the last printed line is ``J_warm=.. J_cold=.. max_diff=..``.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
from common import append_results, header

TREE = Path(__file__).resolve().parents[1]
# the judge's parts, by the functions that do each (either contender's): (label, file suffix, names)
PARTS = (
    ("embedding: model (new texts)", "embedder.py", ("embed",)),
    ("embedding: cache lookups", "embedder.py", ("embed_cached",)),
    ("items: words (word_items)", "reader.py", ("word_items",)),
    ("items: contexts (window_items)", "contexts.py", ("window_items",)),
    ("values (ReaderScorer.values)", "reader.py", ("values",)),
    ("AUROC (auroc_weighted, auroc_resampled)", "metrics.py", ("auroc_weighted", "auroc_resampled")),
    ("guesses (rank_guesses)", "scorer.py", ("rank_guesses",)),
    ("bootstrap draws", "metrics.py", ("bootstrap_weights", "bootstrap_counts")),
    ("intervals (Scorer.interval)", "scorer.py", ("interval",)),
)


class TimedEmbedder:
    """The model behind a fresh per-process cache (``embed_cached`` keys on this object), timing
    what it encodes."""

    def __init__(self, model):
        self.model, self.seconds, self.texts = model, 0.0, 0

    def encode(self, texts, **kw):
        t0 = time.perf_counter()
        out = self.model.encode(texts, **kw)
        self.seconds += time.perf_counter() - t0
        self.texts += len(texts)
        return out

    @property
    def tokenizer(self):
        return self.model.tokenizer


class RefineReplay:
    """The LLM as far as the replay asks it, the refine agent only: each draft gets the revision
    its run's transcript holds (the draft itself where the run refined none)."""

    def __init__(self, revisions: dict[str, str]):
        self.revisions = revisions

    def chat(self, conversations, params):
        from neuronscope.llm.base import Completion

        out = []
        for conv in conversations:
            user = next(m["content"] for m in reversed(conv) if m["role"] == "user")
            draft = user.split("\n", 1)[0].removeprefix("Current explanation: ")
            out.append(Completion(" " + self.revisions.get(draft, draft), 0, 1))
        return out


def _exemplars(records, ids: list[int]):
    """The exemplars of ``ids``, each window as the split claims it (top, strata, random)."""
    from neuronscope.exemplars import load

    pools = load(records)
    by_id: dict = {}
    for e in pools.top + [e for s in pools.strata for e in s] + pools.random:
        by_id.setdefault(e.window_id, e)
    return pools, [by_id[i] for i in ids]


def _work(store, index, cfg, embedder, layer: int, neuron: int, entries: list):
    """A ``NeuronWork`` opened as its run opened it: the transcript's split, control and baseline."""
    from neuronscope.exemplars import FEEDBACK_RANDOM, Scale, Split, lexical_explanation, shown_words
    from neuronscope.explain.judges import Judges
    from neuronscope.explain.neuron import NeuronOptions, NeuronWork
    from neuronscope.results import read_neuron
    from neuronscope.results.transcript import RefineDecision, ScoreEntry, SplitEntry

    records = read_neuron(store, index.keys_of(layer, neuron), layer, neuron)
    s = next(e for e in entries if isinstance(e, SplitEntry))
    pools, ex = _exemplars(records, s.explain + s.heldout + s.validation)
    explain, rest = ex[: len(s.explain)], ex[len(s.explain) :]
    heldout, validation = rest[: len(s.heldout)], rest[len(s.heldout) :]
    claimed = {e.window_id for e in pools.top + [e for st in pools.strata for e in st]}
    feedback = tuple([e for e in pools.random if e.window_id not in claimed][:FEEDBACK_RANDOM])
    revisions = {e.old: e.new for e in entries if isinstance(e, RefineDecision)}
    work = NeuronWork(layer, neuron, RefineReplay(revisions), cfg, NeuronOptions(embedder=embedder))
    scale = Scale.of(pools.top, pools.random)
    work.sp = Split(explain, heldout, validation, scale, feedback)
    work.embedder = embedder
    work.judges = Judges.of(work.llm, cfg, embedder, scale, shown_words(explain, scale))
    scored = {e.purpose: e.explanation for e in entries if isinstance(e, ScoreEntry)}
    work.control = scored["control heldout"]
    work.lexical = lexical_explanation(explain, scale)
    return work, scored.get("baseline heldout", scored.get("triage heldout"))


def _modes(work, entries: list) -> list:
    """The run's modes (its chosen clustering) with their LLM candidates, drafted as the workflow does."""
    from neuronscope.exemplars import lexical_explanation
    from neuronscope.explain.neuron import Mode
    from neuronscope.results.transcript import CandidateEntry, ClusterEntry

    used = next((e for e in entries if isinstance(e, ClusterEntry) and e.used), None)
    if used is None:
        return []
    labels = [used.modes[str(e.window_id)] for e in work.sp.explain]
    sp, modes = work.sp, []
    for m in range(len(set(labels))):
        exs = [e for e, lab in zip(sp.explain, labels) if lab == m]
        modes.append(Mode(exs, [], lexical_explanation(exs, sp.scale)))
    for c in (e for e in entries if isinstance(e, CandidateEntry)):
        work.draft(modes[c.mode], [x["text"] for x in c.candidates if x["source"] == "llm"])
    return modes


def replay(store, index, cfg, embedder, layer: int, neuron: int, entries: list) -> list:
    """One neuron's judge calls, in its workflow's order; the scores its transcript gets."""
    from neuronscope.results.transcript import CandidateEntry, RefineDecision, ScoreEntry, TriageEntry

    work, base_text = _work(store, index, cfg, embedder, layer, neuron, entries)
    if any(isinstance(e, TriageEntry) for e in entries):
        work.triage(base_text)
    modes = _modes(work, entries)
    if modes:
        work.refine(modes)
        for i, m in enumerate(modes):
            work.choose(i, m)
        work.coverage(modes)
    work.final_scores(modes, base_text)
    out = []
    for e in work.transcript:
        if isinstance(e, ScoreEntry):
            out.append([e.purpose, e.explanation, e.score, *e.extra.get("ci", [np.nan, np.nan])])
        elif isinstance(e, CandidateEntry):
            out += [["candidate", c["text"], c["score"], np.nan, np.nan] for c in e.candidates]
        elif isinstance(e, RefineDecision):
            out += [["refine", e.old, e.old_score, np.nan, np.nan], ["refine", e.new, e.new_score, np.nan, np.nan]]
    return out, work.timings


def _neurons(store, limit: int | None) -> list:
    """(layer, neuron, transcript entries) of the run's neurons, in layer and neuron order."""
    from neuronscope import layout
    from neuronscope.results.transcript import entry_from_json

    out = []
    for key in sorted(store.list(layout.prefix(layout.TRANSCRIPTS))):
        for line in store.read_bytes(key).decode().split("\n"):
            if line.strip():
                r = json.loads(line)
                out.append((r["layer"], r["neuron"], [entry_from_json(e) for e in r["transcript"]]))
    return sorted(out, key=lambda x: x[:2])[:limit]


def _pass(ctx, neurons, embedder) -> dict:
    """Every neuron replayed once: seconds per neuron (judge; embedding, in the judge and the
    clustering; clustering; the process's CPU) and the scores."""
    from neuronscope.timing import CLUSTER, judge_phase

    out: dict[str, list] = {"judge": [], "embed": [], "cluster": [], "cpu": [], "scores": []}
    for layer, neuron, entries in neurons:
        before, cpu = embedder.seconds, time.process_time()
        got, timings = replay(*ctx, embedder, layer, neuron, entries)
        out["cpu"].append(time.process_time() - cpu)
        out["judge"].append(timings.seconds.get(judge_phase("reader"), 0.0))
        out["embed"].append(embedder.seconds - before)
        out["cluster"].append(timings.seconds.get(CLUSTER, 0.0))
        out["scores"].append(got)
    return out


def _parts(profile: cProfile.Profile, n: int) -> dict[str, float]:
    """Cumulative seconds per neuron of each of PARTS, from a profile of ``n`` neurons."""
    stats = pstats.Stats(profile).stats  # (file, line, name) -> (calls, prim, tottime, cumtime, callers)
    out = {}
    for label, suffix, names in PARTS:
        out[label] = sum(v[3] for (f, _, fn), v in stats.items() if fn in names and f.endswith(suffix)) / n
    return out


def child(args) -> None:
    """One contender's passes, as JSON on the last line."""
    import torch

    from neuronscope.config import ExplainConfig
    from neuronscope.models.embedder import get_embedder
    from neuronscope.results.records import RecordsIndex
    from neuronscope.store import Store

    torch.set_num_threads(args.threads)
    store = Store.open(args.run)
    cfg = ExplainConfig(**store.read_json("manifest.json")["stages"]["explain"]["config"]["explain"])
    ctx = (store, RecordsIndex.scan(store), cfg)
    neurons = _neurons(store, args.neurons)
    model = get_embedder(args.embedder or cfg.embedder, cfg.embedder_dtype)
    embedder = TimedEmbedder(model)
    cold = _pass(ctx, neurons, embedder)
    warm = _pass(ctx, neurons, embedder)
    profile = cProfile.Profile()
    profile.enable()
    _pass(ctx, neurons, embedder)
    profile.disable()
    out = {"cold": cold, "warm": warm, "parts": _parts(profile, len(neurons)), "texts": embedder.texts}
    print(json.dumps(out, default=float))


def _checkout(rev: str, root: Path) -> Path:
    """The revision's ``neuronscope`` package, unpacked under ``root``."""
    archive = subprocess.run(["git", "-C", str(TREE), "archive", rev, "neuronscope"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive.stdout, check=True)
    return root


def _run_child(source: Path, args) -> dict:
    flags = ["--child", "--run", args.run] + (["--neurons", str(args.neurons)] if args.neurons else [])
    flags += (["--embedder", args.embedder] if args.embedder else []) + ["--threads", str(args.threads)]
    env = {**os.environ, "PYTHONPATH": str(source)}
    done = subprocess.run([sys.executable, __file__, *flags], capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the child on {source} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def max_diff(a: list, b: list) -> float:
    """The largest difference between two contenders' scores and intervals (inf where the
    explanations judged differ; NaN equals NaN)."""
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        for rx, ry in zip(x, y, strict=True):
            if rx[:2] != ry[:2]:
                return float("inf")
            u, v = np.asarray(rx[2:], dtype=float), np.asarray(ry[2:], dtype=float)
            if not np.array_equal(np.isnan(u), np.isnan(v)):
                return float("inf")
            worst = max(worst, float(np.nanmax(np.abs(u - v), initial=0.0)))
    return worst


def _per_neuron(results: list[dict], phase: str, key: str) -> tuple[float, float]:
    """Median over rounds of the (median, mean) seconds per neuron."""
    med = np.median([np.median(r[phase][key]) for r in results])
    mean = np.median([np.mean(r[phase][key]) for r in results])
    return float(med), float(mean)


def _section(args, names: list[str], results: dict, diff: float) -> tuple[str, dict]:
    n = len(results[names[0]][0]["cold"]["judge"])
    rows, heads = [], {}
    for phase in ("cold", "warm"):
        for key, label in (
            ("judge", "judge reader"),
            ("cluster", "cluster"),
            ("embed", "embedding new texts (in the judge and the clustering)"),
            ("cpu", "CPU seconds of the process (records read included)"),
        ):
            cells = []
            for name in names:
                med, mean = _per_neuron(results[name], phase, key)
                cells.append(f"{med:.3f} / {mean:.3f}")
            rows.append(f"| {phase}: {label} | " + " | ".join(cells) + " |")
        base, new = (_per_neuron(results[nm], phase, "judge")[1] for nm in names)
        heads[phase] = new / base
    parts = []
    for label, *_ in PARTS:
        cells = [f"{np.median([r['parts'][label] for r in results[nm]]):.3f}" for nm in names]
        parts.append(f"| {label} | " + " | ".join(cells) + " |")
    lines = header("Reader judge cost per neuron", __file__) + [
        f"{n} neurons of a kept run (RUN: `neuron_cost.py`'s 48 neurons, layers 2,9,16,23 x 0-11, triage), "
        f"their judge calls replayed through `NeuronWork` (see the script's doc); each contender in fresh "
        f"processes, {args.rounds} round(s) taking turns, in-process embedder (MiniLM on {args.threads} torch "
        "thread(s), as Ray gives a run's workers and its served embedder).",
        "",
        "Seconds per neuron, median / mean (median over rounds):",
        "",
        "| | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
        *rows,
        "",
        "Where the warm judge's time goes (cProfile, cumulative seconds per neuron; parts overlap: values and "
        "intervals hold the draws and their AUROCs):",
        "",
        "| part | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
        *parts,
        "",
        f"Largest difference of any score or interval between the two: **{diff:.2g}**.  ",
        f"**J_warm** = {names[1]} / {names[0]} mean judge seconds per neuron, warm cache = "
        f"**{heads['warm']:.2f}**; cold: **{heads['cold']:.2f}**.",
    ]
    return "\n".join(lines), heads


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="a kept run with records and explain transcripts")
    p.add_argument("--against", default="main", help="git revision whose judge is the baseline")
    p.add_argument("--neurons", type=int, help="only the first N neurons of the run (default: all)")
    p.add_argument("--rounds", type=int, default=2, help="turns each contender takes")
    p.add_argument("--embedder", help="sentence embedder spec (default: the run's)")
    # a run's workflows and its served embedder get OMP_NUM_THREADS=1 from Ray (their CPU share is under 1)
    p.add_argument("--threads", type=int, default=1, help="torch threads of the embedder")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--no-append", action="store_true", help="print, do not append to RESULTS.md")
    args = p.parse_args(argv)
    if args.child:
        return child(args)
    names = [args.against, "this tree"]
    results: dict[str, list] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="judge_cost_") as scratch:
        sources = {args.against: _checkout(args.against, Path(scratch)), "this tree": TREE}
        for r in range(args.rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                results[name].append(_run_child(sources[name], args))
                print(f"round {r + 1}: {name} done", flush=True)
    diff = max(max_diff(a["cold"]["scores"], b["cold"]["scores"]) for a, b in zip(*results.values()))
    text, heads = _section(args, names, results, diff)
    print(text)
    if not args.no_append:
        append_results(text)
    print(f"J_warm={heads['warm']:.3f} J_cold={heads['cold']:.3f} max_diff={diff:.3g}")


if __name__ == "__main__":
    main()
