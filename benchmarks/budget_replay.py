"""The triage budget replayed: how many full workflows a budget lets start, against how many fit,
and how many neurons it leaves pending, on a kept run's own per-neuron costs and durations.

The explain driver's decisions (``explain.budget.full_fits`` and ``likely_in_flight``, this
checkout's) run on a simulated clock: neurons submitted in order with at most ``--in-flight`` at
once, each holding its slot for its measured workflow time, its summary (``NeuronSummary``) added
to the ``Tally`` when it finishes. Each neuron costs what it cost in the kept run:
- a neuron of the run that took the full workflow costs its single pass where it is now refused
  one, and takes it again where allowed;
- a neuron the run gave the single pass only takes the full workflow where allowed with the run's
  share of allowed neurons that took it (drawn per ``--seeds``), at the cost and time of a full
  workflow of the run drawn at random;
- a selected neuron the run left pending is a neuron of its layer drawn at random.
"Fit" is the full workflows the budget holds beside every neuron's single pass at the drawn costs.

Run: ``python benchmarks/budget_replay.py --run DIR/run --budget 1500000`` on a run kept by
``neuron_cost.py --keep DIR``. Appends a section to benchmarks/RESULTS.md (``--no-append``: print only).
"""

from __future__ import annotations

import argparse
import heapq
import json
from dataclasses import dataclass, replace

import numpy as np
from common import append_results, header

from neuronscope import layout
from neuronscope.explain import budget
from neuronscope.explain.neuron import FULL_ATTEMPTS, TRIAGE_FULL, TRIAGE_WITHHELD
from neuronscope.explain.task import NeuronSummary, Side, task_summary
from neuronscope.schema import backfill
from neuronscope.selection import parse_selection
from neuronscope.store import Store


@dataclass(frozen=True)
class Neuron:
    """One neuron of the replay: what it costs with the single pass only and with the full
    workflow, how long each takes, and whether triage sends it to the full workflow if allowed."""

    single: NeuronSummary
    full: NeuronSummary
    single_s: float
    full_s: float
    wants_full: bool


def _kept(run: Store) -> dict[tuple[int, int], tuple[NeuronSummary, float, bool]]:
    """Per (layer, neuron) of the kept run: its summary, workflow seconds and whether it was allowed the full workflow."""
    df = backfill(run.read_parquet(layout.prefix(layout.EXPLANATIONS)).to_pandas())
    df = df.drop_duplicates(["layer", "neuron", "polarity", "mode"])
    out = {}
    for (layer, neuron), rows in df.groupby(["layer", "neuron"]):
        recs = rows.to_dict("records")
        s = task_summary(int(layer), int(neuron), recs)
        t = json.loads(next(r["timings"] for r in recs if r.get("timings")))
        allowed = not any(side.method == TRIAGE_WITHHELD for side in s.sides())
        out[(int(layer), int(neuron))] = (s, t["finished"] - t["started"], allowed)
    return out


def _took_full(s: NeuronSummary) -> bool:
    return any(side.method in FULL_ATTEMPTS for side in s.sides())


def _single_only(s: NeuronSummary) -> NeuronSummary:
    """``s`` where the budget refused it the full workflow: each side at its single pass's cost."""
    if not _took_full(s):
        return s
    neg = s.negative
    if neg is not None:
        neg = Side(
            TRIAGE_WITHHELD if neg.method in FULL_ATTEMPTS else neg.method, neg.baseline_tokens, neg.baseline_tokens
        )
    method = TRIAGE_WITHHELD if s.method in FULL_ATTEMPTS else s.method
    return replace(s, method=method, tokens=s.baseline_tokens, negative=neg)


def neurons(kept, layers, units, rng) -> list[Neuron]:
    """The replay's neurons in submission order (see the module's docstring)."""
    fulls = [(s, sec) for s, sec, _ in kept.values() if _took_full(s)]
    singles = [sec for s, sec, _ in kept.values() if not _took_full(s)]
    allowed = [s for s, _, a in kept.values() if a]
    share = sum(map(_took_full, allowed)) / max(len(allowed), 1)
    out = []
    for layer in layers:
        of_layer = [v for (lay, _), v in kept.items() if lay == layer]
        for unit in units:
            s, sec, was_allowed = kept.get((layer, unit)) or of_layer[rng.integers(len(of_layer))]
            if _took_full(s):
                single_s = singles[rng.integers(len(singles))]
                out.append(Neuron(_single_only(s), s, single_s, sec, True))
                continue
            f, f_sec = fulls[rng.integers(len(fulls))]
            extra = f.tokens - _single_only(f).tokens
            full = replace(s, method=TRIAGE_FULL, tokens=s.tokens + extra)
            wants = False if was_allowed else bool(rng.random() < share)
            out.append(Neuron(s, full, sec, f_sec, wants))
    return out


def replay(ns: list[Neuron], cap: int, in_flight_limit: int) -> dict:
    """The driver's budget decisions over ``ns`` on a simulated clock (see the module's docstring)."""
    tally, flying, now = budget.Tally(), [], 0.0  # flying: (end, index, summary, sides, allowed)
    sides = np.array([len(n.single.sides()) for n in ns])
    left = np.cumsum(sides[::-1])[::-1]

    def finish():
        nonlocal now
        now, _, s, _, _ = heapq.heappop(flying)
        tally.add(s)

    def over() -> bool:
        n_sides, allowed = sum(f[3] for f in flying), sum(f[4] for f in flying)
        return tally.tokens + budget.likely_in_flight(tally, len(flying), n_sides, allowed, True) >= cap

    took = pending = 0
    for i, n in enumerate(ns):
        while len(flying) >= in_flight_limit:
            finish()
        while flying and not tally.explained and over():
            finish()  # the driver waits for a first neuron rather than stop on the priors
        allowed = budget.full_fits(tally, sum(f[3] for f in flying), sum(f[4] for f in flying), int(left[i]), cap)
        if over():
            pending = len(ns) - i
            break
        full = allowed and n.wants_full
        took += full
        end = now + (n.full_s if full else n.single_s)
        heapq.heappush(flying, (end, i, n.full if full else n.single, sides[i], allowed))
    while flying:
        finish()
    return {"full": took, "pending": pending, "tokens": tally.tokens}


def fit(ns: list[Neuron], cap: int) -> float:
    """Full workflows the budget holds beside every neuron's single pass, at the drawn costs."""
    singles = sum(n.single.tokens for n in ns)
    extras = [n.full.tokens - n.single.tokens for n in ns if n.wants_full]
    return (cap - singles) / float(np.mean(extras)) if extras else float("inf")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="the output store of a kept run (neuron_cost.py --keep DIR: DIR/run)")
    p.add_argument("--budget", default="1500000", help="token budgets, comma-separated")
    p.add_argument("--layers", default="2,9,16,23", help="the selection's layers, in submission order")
    p.add_argument("--neurons", default="0-249", help="the selection's neurons of each layer")
    p.add_argument("--seeds", default="0,1,2", help="draws of the neurons the run did not measure")
    p.add_argument("--in-flight", type=int, default=48, help="neurons in flight at most (the driver's limit)")
    p.add_argument("--margin", type=float, help="budget.SINGLE_MARGIN for this replay (default: the code's)")
    p.add_argument("--label", default="this checkout", help="what the replayed code is, for the table")
    p.add_argument("--no-append", action="store_true", help="print the section only")
    args = p.parse_args(argv)
    if args.margin is not None:
        budget.SINGLE_MARGIN = args.margin
    kept = _kept(Store.open(args.run))
    layers = parse_selection(args.layers, 10**6, "layer")
    units = parse_selection(args.neurons, 10**6, "neuron")
    lines = header("Budget replay: full workflows against the room", __file__, argv) + [
        f"{len(kept)} neurons measured in the kept run; {len(layers) * len(units)} selected.",
        "",
        "| code | budget | seed | full workflows | fit | neurons pending | tokens / budget |",
        "|---|---|---|---|---|---|---|",
    ]
    for cap in map(int, args.budget.split(",")):
        for seed in map(int, args.seeds.split(",")):
            ns = neurons(kept, layers, units, np.random.default_rng(seed))
            r = replay(ns, cap, args.in_flight)
            lines.append(
                f"| {args.label} | {cap:,} | {seed} | {r['full']} | {fit(ns, cap):.1f} | {r['pending']} "
                f"| {r['tokens'] / cap:.3f} |"
            )
    text = "\n".join(lines)
    print(text)
    if not args.no_append:
        append_results(text)


if __name__ == "__main__":
    main()
