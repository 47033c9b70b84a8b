"""`neuronscope status`: where a run stands, stage by stage, from its manifest and its tables."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc

from . import layout, manifest
from .errors import NeuronScopeError
from .lease import holder_line
from .schema import TOKEN_COLUMNS
from .selection import selected
from .store import Store


def _table(store: Store, prefix: str, columns: list[str]) -> pa.Table | None:
    """Those columns of a stage's table (only they are fetched), or None when the run has none."""
    return (
        store.read_parquet_where(prefix, None, columns)
        if any(k.endswith(".parquet") for k in store.list(prefix))
        else None
    )


def _pairs(t: pa.Table | None) -> set[tuple[int, int]]:
    if t is None:
        return set()
    return set(zip(t["layer"].to_pylist(), t["neuron"].to_pylist()))


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
    columns = ["layer", "neuron", "mode", "status", "error", "method", *TOKEN_COLUMNS]
    rows = _table(store, layout.prefix(layout.EXPLANATIONS), columns)
    if rows is None:
        return [f"  neurons: 0 done, 0 failed, {len(todo)} pending; LLM tokens 0"]
    first = rows.filter(pc.less_equal(rows["mode"], 0))  # one row per neuron carries its totals
    done = first.filter(pc.equal(first["status"], "ok"))
    failed = first.filter(pc.equal(first["status"], "failed"))
    # every token the run spent, the single-pass baseline's included: what --budget counts
    spent = sum(pc.sum(first[c]).as_py() or 0 for c in TOKEN_COLUMNS)
    lines = [
        f"  neurons: {done.num_rows} done, {failed.num_rows} failed, "
        f"{len(todo - _pairs(done) - _pairs(failed))} pending; LLM tokens {spent:,}"
    ]
    if done.num_rows:
        methods = Counter(done["method"].to_pylist())
        lines.append(f"  methods: {', '.join(f'{m} {n}' for m, n in sorted(methods.items()))}")
    if failed.num_rows:
        r = failed.slice(failed.num_rows - 1).to_pylist()[0]
        lines.append(f"  last neuron failure: layer {r['layer']} neuron {r['neuron']}: {r['error']}")
    return lines


def _earlier_line(earlier: list[dict]) -> str:
    counts = Counter(a.get("status") for a in earlier)
    last = earlier[-1]
    return (
        f"  earlier attempts: {', '.join(f'{n} {k}' for k, n in sorted(counts.items()))}; "
        f"the last started {last.get('started')}, {last.get('status')}"
    )


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
    for stage, details in (("record", _record_lines), ("explain", _explain_lines)):
        entry = m["stages"].get(stage)
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
