"""`neuronscope status`: where a run stands, stage by stage, from its manifest and its tables."""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import layout, manifest
from .errors import NeuronScopeError
from .lease import holder_line, read_holder
from .results.transcript import TimingEntry, entry_from_json
from .schema import EXPLANATIONS, TOKEN_COLUMNS
from .selection import selected
from .store import Store
from .timing import phase_order


def _table(store: Store, prefix: str, columns: list[str], schema: pa.Schema | None = None) -> pa.Table | None:
    """Those columns of a stage's table (only they are fetched), or None when the run has none;
    ``schema``: the table's, so that a column older objects lack reads as nulls."""
    return (
        store.read_parquet_where(prefix, None, columns, schema)
        if any(k.endswith(".parquet") for k in store.list(prefix))
        else None
    )


def _pairs(t: pa.Table | None) -> set[tuple[int, int]]:
    if t is None:
        return set()
    return set(zip(t["layer"].to_pylist(), t["neuron"].to_pylist()))


def _codes(t: pa.Table) -> pa.Array:
    """Each row's neuron as one number, to match rows of one neuron across sides."""
    return pc.add(pc.multiply(pc.cast(t["layer"], pa.int64()), 1 << 32), pc.cast(t["neuron"], pa.int64()))


def _selected(present: set[tuple[int, int]], layers: str | None, neurons: str | None) -> set[tuple[int, int]]:
    """The recorded neurons an explain selection names (the whole recorded set when both are None)."""
    pairs = sorted(present)
    mask = selected([p[0] for p in pairs], [p[1] for p in pairs], layers, neurons)
    return {p for p, keep in zip(pairs, mask) if keep}


def _record_lines(store: Store, entry: dict) -> list[str]:
    s = entry.get("summary") or {}
    recorded = _pairs(_table(store, layout.prefix(layout.STATS), ["layer", "neuron"]))
    line = f"  neurons recorded: {len(recorded)}"
    if "shards" in s:
        line += f"; shards {s.get('shards_recorded', 0)}/{s['shards']}; tokens {s.get('n_tokens', 0):,}"
    return [line]


def _explain_lines(store: Store, entry: dict) -> list[str]:
    cfg = (entry.get("config") or {}).get("explain", {})
    source = Store.open((entry.get("inputs") or {}).get("records") or store.uri)
    stats = _table(source, layout.prefix(layout.STATS), ["layer", "neuron"])
    todo = _selected(_pairs(stats), cfg.get("layers"), cfg.get("neurons"))
    columns = ["layer", "neuron", "polarity", "mode", "status", "error", "method", *TOKEN_COLUMNS, "timings"]
    rows = _table(store, layout.prefix(layout.EXPLANATIONS), columns, EXPLANATIONS)
    if rows is None:
        return [f"  neurons: 0 done, 0 failed, {len(todo)} pending; LLM tokens 0"]
    sides = rows.filter(pc.less_equal(rows["mode"], 0))  # one row per neuron and side carries its totals
    negative = pc.fill_null(pc.equal(sides["polarity"], -1), False)
    first = sides.filter(pc.invert(negative))  # the neuron's (its positive side's) row
    failed = first.filter(pc.is_in(_codes(first), _codes(sides.filter(pc.equal(sides["status"], "failed")))))
    done = first.filter(pc.invert(pc.is_in(_codes(first), _codes(failed))))
    # every token the run spent, the single-pass baseline's and the negative sides' included: what --budget counts
    spent = sum(pc.sum(sides[c]).as_py() or 0 for c in TOKEN_COLUMNS)
    pending = len(todo - _pairs(done) - _pairs(failed))
    lines = [f"  neurons: {done.num_rows} done, {failed.num_rows} failed, {pending} pending; LLM tokens {spent:,}"]
    if done.num_rows:
        ok_negative = sides.filter(negative).filter(pc.is_in(_codes(sides.filter(negative)), _codes(done)))
        methods = Counter(done["method"].to_pylist())
        methods.update(f"negative: {m}" for m in ok_negative["method"].to_pylist())
        lines.append(f"  methods: {', '.join(f'{m} {n}' for m, n in sorted(methods.items()))}")
    timings = _timings(first)
    lines += _pace_lines(store, entry, timings, done.num_rows + failed.num_rows, spent, pending)
    lines += _breakdown_lines(timings)
    bad = sides.filter(pc.equal(sides["status"], "failed"))
    if bad.num_rows:
        r = bad.slice(bad.num_rows - 1).to_pylist()[0]
        side = "negative side: " if r["polarity"] == -1 else ""
        lines.append(f"  last neuron failure: layer {r['layer']} neuron {r['neuron']}: {side}{r['error']}")
    return lines


def _timings(first: pa.Table) -> list[TimingEntry]:
    """The neurons' timings (the rows' ``timings``; none for neurons of older runs, or whose task died)."""
    out = []
    for text in first["timings"].to_pylist():
        if text:
            entry = entry_from_json(json.loads(text))
            if isinstance(entry, TimingEntry):
                out.append(entry)
    return out


def _unix(stamp: str | None) -> float | None:
    return dt.datetime.fromisoformat(stamp).timestamp() if stamp else None


def _explain_seconds(store: Store, entry: dict, finishes: list[float]) -> float:
    """Seconds the explain stage has run, over all its attempts: each from its start to its end
    in the manifest; for one cut short, to its last neuron's finish (``finishes``); for the one
    running now (a process holds it), to now."""
    attempts = [*entry.get("earlier", []), entry]
    starts = [_unix(a.get("started")) for a in attempts]
    live = entry.get("status") == "running" and read_holder(store, layout.lease_key("explain")) is not None
    total = 0.0
    for i, (a, start) in enumerate(zip(attempts, starts)):
        if start is None:
            continue
        after = next((t for t in starts[i + 1 :] if t is not None), math.inf)
        if live and i == len(attempts) - 1:
            end = time.time()
        elif a.get("finished"):
            end = _unix(a["finished"]) or start
        else:  # interrupted: it ran at least until its last neuron finished
            end = max((f for f in finishes if start <= f < after), default=start)
        total += max(0.0, end - start)
    return total


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"


def _pace_lines(store: Store, entry: dict, timings: list[TimingEntry], finished: int, spent: int, pending: int):
    """The stage's pace over its attempts so far, and the time the pending neurons would take at it;
    none for a run whose neurons have no timings (made before they were kept)."""
    if not timings:
        return []
    seconds = _explain_seconds(store, entry, [t.finished for t in timings])
    if seconds <= 0 or not finished:
        return []
    lines = [
        f"  pace: {spent / seconds:,.0f} LLM tokens/s, {finished / seconds * 60:.1f} neurons/min "
        f"over {_duration(seconds)} of explain"
    ]
    if pending:
        lines.append(f"  to finish: {pending} pending, about {_duration(pending * seconds / finished)} at this pace")
    return lines


def _breakdown_lines(timings: list[TimingEntry]) -> list[str]:
    """Where a neuron's time goes: the median over the neurons of each phase, and of their totals."""
    if not timings:
        return []
    phases = sorted({p for t in timings for p in t.seconds}, key=phase_order)
    median = {p: float(np.median([t.seconds.get(p, 0.0) for t in timings])) for p in phases}
    total = float(np.median([t.total() for t in timings]))
    parts = ", ".join(f"{p} {_secs(median[p])}" for p in phases)
    return [f"  seconds per neuron, median of {len(timings)}: total {_secs(total)}; {parts}"]


def _secs(x: float) -> str:
    return f"{x:.2f}" if x < 10 else f"{x:.1f}"


def _earlier_line(earlier: list[dict]) -> str:
    counts = Counter(a.get("status") for a in earlier)
    last = earlier[-1]
    return (
        f"  earlier attempts: {', '.join(f'{n} {k}' for k, n in sorted(counts.items()))}; "
        f"the last started {last.get('started')}, {last.get('status')}"
    )


def _causal_lines(store: Store, entry: dict) -> list[str]:
    s = entry.get("summary") or {}
    line = f"  neurons checked: {len(_pairs(_table(store, layout.prefix(layout.CAUSAL), ['layer', 'neuron'])))}"
    if s.get("top_mode_above_control") is not None:
        line += f"; top mode's interval above its control: {s['top_mode_above_control']:.0%}"
    if "seconds_per_neuron" in s:
        line += f"; {s['seconds_per_neuron']:.1f} s per neuron"
    return [line]


def run_status(run: str) -> str:
    """Each stage's state, its neuron counts and token spend, and the last error, as lines."""
    store = Store.open(run)
    if not store.exists(layout.MANIFEST):
        raise NeuronScopeError(
            f"{store.uri} is not a NeuronScope run (no {layout.MANIFEST}); "
            f"start one with `neuronscope record --out {store.uri}`"
        )
    m = manifest.load(store)
    lines = [f"run {store.uri}"]
    for stage, details in (("record", _record_lines), ("explain", _explain_lines), ("causal", _causal_lines)):
        entry = m["stages"].get(stage)
        if entry is None and stage == "causal":  # a later stage of its own: listed once it ran
            continue
        if entry is None:
            lines.append(f"{stage}: not started")
            continue
        lines.append(
            f"{stage}: {entry.get('status')} (started {entry.get('started')}, finished {entry.get('finished', '-')})"
        )
        if entry.get("status") == "running":
            lines.append(holder_line(store, stage))
        if entry.get("earlier"):
            lines.append(_earlier_line(entry["earlier"]))
        lines += details(store, entry)
        if entry.get("error"):
            lines.append(f"  last error: {entry['error']}")
    return "\n".join(lines)
