"""Many neurons: one Ray task per neuron, a bounded number in flight, all sharing one LLM client.

The driver streams: it keeps the (layer, neuron) keys of the records and of the run's outputs
(one listing per folder), never records themselves; each task reads its own neuron's records
from the store with a filter. A finished neuron writes its transcript, its response-cache
object and then its explanation rows (``outputs.py``); the latter marks the neuron done, so a
rerun skips it (a neuron recorded as failed is tried again unless ``retry_failed=False``: its LLM
answers come from the response cache, so a deterministic failure costs nothing and a transient
one recovers). Every ``cfg.compact_every`` finished neurons of a layer, and when a layer ends,
a compaction task merges their objects into the layer's parts (``compact.py``).
"""

from __future__ import annotations

import math
import time
import uuid

import numpy as np

from .. import layout
from ..config import ExplainConfig

# The stage's API: its callers import these from here.
from ..layout import explanation_key, transcript_key  # noqa: F401
from ..parts import FolderIndex
from ..report import progress_note
from ..results import (  # noqa: F401
    RecordsIndex,
    code,
    load_records,
    neuron_explanations,
    read_transcript,
    rows_table,
    uncode,
    write_result,
)
from ..selection import selected
from .compact import FOLDERS, compact, leftovers
from .task import SUMMARY_COLUMNS, Shared, failed_rows, failure_reason, record_failure, run_task, task_summary
from .workflow import FULL_ATTEMPTS, explain_neuron

TASK_CPUS = 0.25  # the workflow mostly waits on the LLM actor; leave the cores to the engine
TASK_RETRIES = 2  # reruns of a neuron whose worker process or node died mid-workflow
MAX_LISTED_FAILURES = 50  # the summary goes into the manifest: the rest are in the files
# Workflows in flight per engine replica when cfg.max_in_flight is unset: enough waiting
# requests to fill an engine's batches (benchmarks/llm_pool.py measured R3 at 12 on one engine).
IN_FLIGHT_PER_REPLICA = 12


def pool_size(llm) -> int:
    """Engine replicas behind ``llm``: a vLLM pool's actors, else its config's replicas, else 1."""
    actors = getattr(llm, "actors", None)
    if actors:
        return len(actors)
    return int(getattr(getattr(llm, "cfg", None), "replicas", 1) or 1)


def max_in_flight(cfg: ExplainConfig, llm) -> int:
    return cfg.max_in_flight or pool_size(llm) * IN_FLIGHT_PER_REPLICA


def selection(index: RecordsIndex, cfg: ExplainConfig, neurons) -> np.ndarray:
    """Codes of the neurons to explain, sorted: ``neurons`` as given, else cfg.layers x
    cfg.neurons over the neurons with records."""
    if neurons is not None:
        return np.unique(np.array([code(int(a), int(b)) for a, b in neurons], dtype=np.int64))
    present = index.present()
    return present[selected(*uncode(present), cfg.layers, cfg.neurons)]


class Outputs:
    """The run's outputs as one listing per folder shows them: what is done, and what waits to
    be merged (own objects left by an earlier run)."""

    def __init__(self, store):
        self.index = {f.name: FolderIndex.listing(store, f.name) for f in FOLDERS}
        self.explanations = self.index[layout.EXPLANATIONS]
        self.stale: list[str] = []
        self.waiting: dict[int, set[int]] = {}
        for f in FOLDERS:
            stale, waiting = leftovers(self.explanations, f, self.index[f.name])
            self.stale += stale
            for layer, ns in waiting.items():
                self.waiting.setdefault(layer, set()).update(ns)

    def done(self, layer: int, neuron: int, retry_failed: bool) -> bool:
        li = self.explanations.layer(layer)
        return self.explanations.ok(layer, neuron) or (not retry_failed and neuron in li.failed)

    def cache_sources(self, layer: int, neuron: int) -> list[str]:
        return self.index[layout.LLM_CACHE].sources(layer, neuron)


class Tally:
    """Running counts and score sums: the driver keeps no per-neuron list."""

    KEYS = ("score", "baseline_score", "control_score")

    def __init__(self):
        self.explained = self.ok = self.failed = self.tokens = 0
        self.baseline_tokens = 0  # of which the single-pass explanation and its scoring
        self.full_extra = 0  # triage: tokens of the full workflows beyond their single-pass share
        self.methods: dict[str, int] = {}  # what the neurons got (each row's method)
        self.sums = dict.fromkeys(self.KEYS, 0.0)
        self.counts = dict.fromkeys(self.KEYS, 0)
        self.failures: dict[str, str] = {}

    def add(self, s: dict) -> None:
        self.explained += 1
        self.tokens += s.get("tokens", 0)
        self.baseline_tokens += s.get("baseline_tokens", 0)
        method = s.get("method") or "?"
        self.methods[method] = self.methods.get(method, 0) + 1
        if method in FULL_ATTEMPTS:
            self.full_extra += s.get("tokens", 0) - s.get("baseline_tokens", 0)
        if s["status"] != "ok":
            self.failed += 1
            if len(self.failures) < MAX_LISTED_FAILURES:
                self.failures[f"{s['layer']}/{s['neuron']}"] = s["error"]
            return
        self.ok += 1
        for k in self.KEYS:
            if s[k] is not None and math.isfinite(s[k]):
                self.sums[k] += s[k]
                self.counts[k] += 1

    def mean(self, key: str):
        return round(self.sums[key] / self.counts[key], 4) if self.counts[key] else None

    def plus(self, other: Tally) -> Tally:
        """The spend of both (tokens, neurons and methods; scores are not merged)."""
        out = Tally()
        for k in ("explained", "tokens", "baseline_tokens", "full_extra"):
            setattr(out, k, getattr(self, k) + getattr(other, k))
        out.methods = {m: self.methods.get(m, 0) + other.methods.get(m, 0) for m in {*self.methods, *other.methods}}
        return out


def full_fits(t: Tally, in_flight: int, allowed_in_flight: int, left: int, budget: int) -> bool:
    """Whether one more full workflow fits the budget beside every neuron's single-pass share: the
    spend ``t``, the ``in_flight`` neurons at the single-pass cost each plus a full workflow's extra
    for the ``allowed_in_flight`` of them that may take one (a mean over all finished neurons would
    count them at a few single-pass neurons' cost), the ``left`` neurons not submitted yet (the next
    one included) at the single-pass cost, and one more extra. Costs are the means so far; a full
    workflow's extra counts as 0 until one has finished."""
    if not t.explained:
        return True
    single = t.baseline_tokens / t.explained
    full = sum(t.methods.get(m, 0) for m in FULL_ATTEMPTS)
    extra = t.full_extra / full if full else 0
    return t.tokens + single * (in_flight + left) + extra * (allowed_in_flight + 1) <= budget


def spent_before(out_store, done: np.ndarray) -> Tally:
    """What the already-done neurons of the selection (``done``: codes) spent, read from their
    rows: a budget covers the whole selection, so a rerun after a kill does not spend it again."""
    import pyarrow.dataset as ds

    t = Tally()
    if not len(done):
        return t
    layers, units = uncode(done)
    table = out_store.read_parquet_where(
        layout.prefix(layout.EXPLANATIONS), ds.field("layer").isin(np.unique(layers).tolist()), list(SUMMARY_COLUMNS)
    )
    df = table.to_pandas().drop_duplicates(["layer", "neuron"])
    wanted = set(zip(layers.tolist(), units.tolist()))
    for r in df.to_dict("records"):
        if (r["layer"], r["neuron"]) in wanted:
            t.add(task_summary(r["layer"], r["neuron"], [r]))
    return t


class Driver:
    """Submits tasks with at most ``limit`` in flight, collects them, and starts a compaction
    task per layer every ``compact_every`` finished neurons and when the layer ends."""

    def __init__(
        self, shared_ref, shared: Shared, outputs: Outputs, index: RecordsIndex, limit: int, total: int, progress
    ):
        import ray

        self.ray, self.shared_ref, self.cfg, self.out_store = ray, shared_ref, shared.cfg, shared.out
        self.outputs, self.index, self.limit, self.total, self.progress = outputs, index, limit, total, progress
        # SPREAD: a cluster's nodes share the workflows' CPU work; a task whose worker or node
        # died is run again (only system failures are retried: a neuron's own errors are results)
        self.task = ray.remote(num_cpus=TASK_CPUS, max_retries=TASK_RETRIES, scheduling_strategy="SPREAD")(run_task)
        self.compactor = ray.remote(num_cpus=TASK_CPUS, max_retries=1)(compact)
        self.in_flight: dict = {}  # ref -> (layer, neuron, whether it may take the full workflow)
        self.running: dict[int, int] = {}  # layer -> tasks in flight
        self.ready = {layer: set(ns) for layer, ns in outputs.waiting.items()}  # layer -> neurons to merge
        self.compactions: list = []
        self.tally = Tally()
        self.before = Tally()  # the selection's neurons done by earlier runs (set when a budget needs it)

    def submit(self, layer: int, neuron: int, full_allowed: bool = True) -> None:
        self.make_room()
        keys = self.index.keys_of(layer, neuron)
        if not keys:
            self.record(
                record_failure(self.out_store, layer, neuron, self.cfg, "no activation records for this neuron")
            )
            return
        cache = self.outputs.cache_sources(layer, neuron)
        ref = self.task.remote(layer, neuron, keys, cache, self.shared_ref, full_allowed)
        self.in_flight[ref] = (layer, neuron, full_allowed)
        self.running[layer] = self.running.get(layer, 0) + 1

    def make_room(self) -> None:
        while len(self.in_flight) >= self.limit:
            self.wait_one()

    def over_budget(self, budget: int | None) -> bool:
        """Whether the tokens spent, plus what the neurons in flight will likely spend (the mean so
        far), reach ``budget``; before any neuron finished only the spend counts."""
        if budget is None:
            return False
        t = self._spend()
        return t.tokens + self._likely_in_flight(t) >= budget

    def _spend(self) -> Tally:
        """This run's spend and earlier runs' on the selection (the budget spans reruns)."""
        return self.tally.plus(self.before)

    def spent(self) -> int:
        """Tokens the selection has cost: this run's and earlier runs'."""
        return self.tally.tokens + self.before.tokens

    def _likely_in_flight(self, t: Tally) -> float:
        """What the neurons in flight will likely spend: the mean of ``t`` so far each (0 before any finished)."""
        return t.tokens / t.explained * len(self.in_flight) if t.explained else 0

    def full_affordable(self, budget: int | None, left: int) -> bool:
        """Method triage under a budget: whether the next neuron may still get the full workflow
        (``full_fits``, with the neurons in flight and those of them already allowed one)."""
        if budget is None or self.cfg.method != "triage":
            return True
        allowed = sum(full for _, _, full in self.in_flight.values())
        return full_fits(self._spend(), len(self.in_flight), allowed, left, budget)

    def wait_one(self) -> None:
        ready, _ = self.ray.wait(list(self.in_flight), num_returns=1)
        ref = ready[0]
        layer, neuron, _ = self.in_flight.pop(ref)
        self.running[layer] -= 1
        try:
            summary = self.ray.get(ref)
        except Exception as e:  # the task itself died (OOM, worker crash, store write): still recorded
            reason = f"task failed: {failure_reason(e)}"
            try:
                summary = record_failure(self.out_store, layer, neuron, self.cfg, reason)
            except Exception:  # the summary still names the neuron and its failure
                summary = task_summary(layer, neuron, failed_rows(layer, neuron, self.cfg, reason))
        self.record(summary)

    def record(self, s: dict) -> None:
        self.tally.add(s)
        if s["status"] == "ok":
            ready = self.ready.setdefault(s["layer"], set())
            ready.add(s["neuron"])
            if len(ready) >= self.cfg.compact_every:
                self.compact(s["layer"])
        if self.progress:
            self.progress(
                f"explain {self.tally.explained}/{self.total}: layer {s['layer']} neuron {s['neuron']}: "
                f"{progress_note(self.cfg.scorer, s)}"
            )

    def compact(self, layer: int) -> None:
        neurons = sorted(self.ready.pop(layer, ()))
        if neurons:
            self.compactions.append(self.compactor.remote(self.out_store, layer, neurons))

    def close_layers(self, below: int | None) -> None:
        """Compact the layers (below ``below``; all when None) that have no task left in flight."""
        for layer in sorted(self.ready):
            if (below is None or layer < below) and not self.running.get(layer):
                self.compact(layer)

    def finish(self) -> list[str]:
        """Wait for every task and compaction; returns the compaction errors."""
        while self.in_flight:
            self.wait_one()
            self.close_layers(None)
        self.close_layers(None)
        errors = []
        for ref in self.compactions:
            try:
                self.ray.get(ref)
            except Exception as e:  # the neurons' own objects are still there: the next run merges them
                errors.append(failure_reason(e))
        return errors


def explain_run(
    records_store,
    out_store,
    llm,
    cfg: ExplainConfig,
    neurons: list[tuple[int, int]] | None = None,
    progress=None,
    retry_failed: bool = True,
    embedder=None,
    calibrated: bool | None = None,
    workflow=None,
    index: RecordsIndex | None = None,
) -> dict:
    """Explain every selected neuron (``neurons``, else cfg.layers x cfg.neurons over the records)
    not already done in ``out_store``; returns counts and mean scores. Needs Ray initialised;
    ``progress(message)`` is called once per finished neuron. ``embedder`` (picklable, shipped to
    the workers) replaces cfg.embedder, which each worker process otherwise loads once;
    ``calibrated`` is the scorer self-check's verdict, written into every row; ``workflow``
    replaces ``explain_neuron`` (same signature; for tests and benchmarks); ``index``: the records'
    ``RecordsIndex`` where the caller has scanned them already."""
    import ray

    t0 = time.time()
    index, outputs, todo, pending = _pending(records_store, out_store, cfg, neurons, retry_failed, index)
    for key in outputs.stale:  # what an interrupted merge left: a part already holds it
        out_store.delete(key)
    layers, units = uncode(todo)
    shared = Shared(records_store, out_store, llm, cfg, embedder, calibrated, workflow or explain_neuron)
    driver = Driver(ray.put(shared), shared, outputs, index, max_in_flight(cfg, llm), int(sum(pending)), progress)
    if cfg.budget is not None:
        driver.before = spent_before(out_store, todo[~pending])
    left = _submit_all(driver, layers[pending], units[pending], cfg.budget, progress)
    errors = driver.finish()
    t = driver.tally
    return {
        "neurons": len(todo),
        "explained": t.explained,
        "skipped": len(todo) - int(sum(pending)),
        "ok": t.ok,
        "failed": t.failed,
        "failures": t.failures,
        "scorer": cfg.scorer,
        "mean_score": t.mean("score"),
        "mean_baseline_score": t.mean("baseline_score"),
        "mean_control_score": t.mean("control_score"),
        "compaction_errors": errors,
        "tokens": t.tokens,
        "tokens_before": driver.before.tokens,  # spent on the selection by earlier runs (counted when a budget is set)
        "budget": cfg.budget,
        "left_by_budget": left,
        "methods": t.methods,
        "seconds": round(time.time() - t0, 1),
    }


def _pending(records_store, out_store, cfg: ExplainConfig, neurons, retry_failed: bool, index=None):
    """(records index, outputs listing, selected codes, mask of those not done yet)."""
    index = index or RecordsIndex.scan(records_store)
    todo = selection(index, cfg, neurons)
    outputs = Outputs(out_store)
    layers, units = uncode(todo)
    pending = np.fromiter(
        (not outputs.done(int(a), int(b), retry_failed) for a, b in zip(layers, units)), dtype=bool, count=len(todo)
    )
    return index, outputs, todo, pending


def estimate_run(
    records_store, out_store, llm, cfg: ExplainConfig, progress=None, index: RecordsIndex | None = None, **explain_kw
) -> dict:
    """``--dry-run``: explain a sample of the pending neurons, spread over the selection, into a
    scratch folder of the run (removed afterwards), and scale its tokens and wall time to every
    pending neuron. The sample runs up to as many neurons at once as the real run would: with at
    least the in-flight limit its per-neuron time is the real run's pace (a little slower: the
    sample's tail runs alone); a smaller sample overestimates the time."""
    index, _, todo, pending = _pending(records_store, out_store, cfg, None, True, index)
    waiting = todo[pending]
    picks = np.unique(np.linspace(0, len(waiting) - 1, min(cfg.dry_run_sample, len(waiting))).round().astype(int))
    sample = [(int(a), int(b)) for a, b in zip(*uncode(waiting[picks]))] if len(waiting) else []
    scratch = type(out_store).open(out_store.url(layout.dry_run_folder(uuid.uuid4().hex[:8])))
    plain = cfg.model_copy(update={"budget": None, "dry_run": False})
    try:
        s = (
            explain_run(records_store, scratch, llm, plain, sample, progress, index=index, **explain_kw)
            if sample
            else None
        )
    finally:
        for key in scratch.list(""):
            scratch.delete(key)
        scratch.prune()
    n = len(sample)
    per_tokens, per_s = (s["tokens"] / n, s["seconds"] / n) if s else (0.0, 0.0)
    return {
        "pending": len(waiting),
        "sample": n,
        "sample_failed": s["failed"] if s else 0,
        "sample_seconds": s["seconds"] if s else 0.0,
        "tokens_per_neuron": round(per_tokens),
        "tokens": round(per_tokens * len(waiting)),
        "seconds": round(per_s * len(waiting)),
    }


def _submit_all(driver: Driver, layers: np.ndarray, units: np.ndarray, budget: int | None, progress) -> int:
    """Submit every neuron, in order, until the token budget is reached; how many were left.
    Under method triage the budget first holds back full workflows (``Driver.full_affordable``)."""
    withheld = False
    for i, (layer, neuron) in enumerate(zip(layers, units)):
        driver.make_room()
        full = driver.full_affordable(budget, len(layers) - i)
        if not full and not withheld and progress:
            progress(
                f"explain: token budget: {driver.spent():,} of {budget:,} spent; the {len(layers) - i} "
                "neurons left get the single-pass explanation only (method triage/single-pass (budget))"
            )
        withheld = withheld or not full
        if driver.over_budget(budget):
            left = len(layers) - i
            if progress:
                progress(
                    f"explain: token budget reached ({driver.spent():,} of {budget:,} spent, "
                    f"{len(driver.in_flight)} neurons finishing); {left} neurons left pending: "
                    "rerun with a larger --budget to continue"
                )
            return left
        driver.close_layers(int(layer))
        driver.submit(int(layer), int(neuron), full)
    return 0
