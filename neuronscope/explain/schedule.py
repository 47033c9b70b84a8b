"""Many neurons: one task per neuron, a bounded number in flight, all sharing one LLM client.
The tasks run on a pool of worker actors, several at once in each (``WorkflowWorker``).

The driver streams: it keeps the (layer, neuron) keys of the records and of the run's outputs
(one listing per folder), never records themselves; each task reads its own neuron's records
and output tokens from the store with a filter. A finished neuron writes its transcript, its response-cache
object and then its explanation rows (``results/outputs.py``); the latter marks the neuron done,
so a rerun skips it (a neuron recorded as failed is tried again unless ``retry_failed=False``: its
LLM answers come from the response cache, so a deterministic failure costs nothing and a
transient one recovers). Every ``cfg.compact_every`` finished neurons of a layer, and when a
layer ends, a compaction task merges their objects into the layer's parts (``compact.py``). A
token budget (``budget.py``) stops submitting, or holds triage's full workflows back.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace

import numpy as np

from .. import layout
from ..config import ExplainConfig
from ..models import embedder
from ..parts import FolderIndex
from ..report import progress_note
from ..results import RecordsIndex, code, uncode
from ..selection import selected
from .budget import Tally, full_fits, likely_in_flight, sides, spent_before
from .compact import FOLDERS, compact, leftovers
from .task import (
    NeuronSummary,
    RunContext,
    TaskOrder,
    WorkflowWorker,
    failed_rows,
    failure_reason,
    record_failure,
    task_summary,
)

TASK_CPUS = 0.25  # a worker's workflows mostly wait on the LLM actor; leave the cores to the engine
MIN_TASK_CPUS = 0.01
TASK_RETRIES = 2  # reruns of a neuron whose worker process or node died mid-workflow
SUSPECT_S = 60.0  # a worker whose task died gets no new task for this long (its node may be going)
# Workflows in flight per engine replica when cfg.max_in_flight is unset: enough waiting
# requests to fill an engine's batches. On one CPU engine, 24 (on 6 workers) against 12 (on 12)
# took R5 from 0.28 to 0.39 and the engine's CPU per token from 1.11 to 0.81 ms; 48 (on 6
# workers of 8) against 24, 18 to 35 calls in flight and R5 from 0.48 to 0.58 (RESULTS.md).
IN_FLIGHT_PER_REPLICA = 48


@dataclass(frozen=True)
class RunSummary:
    """What an explain run did: the explain stage's summary in the manifest."""

    neurons: int  # selected
    explained: int  # by this run
    skipped: int  # done already
    ok: int
    failed: int
    failures: dict[str, str | None]  # "layer/neuron" -> why, the first few
    scorer: str
    mean_score: float | None
    mean_baseline_score: float | None
    mean_control_score: float | None
    compaction_errors: list[str]
    tokens: int
    tokens_before: int  # spent on the selection by earlier runs (counted when a budget is set)
    budget: int | None
    left_by_budget: int  # neurons left pending when the budget was reached
    methods: dict[str, int]  # what the neurons got (each side's method; the negative side's as "negative: METHOD")
    seconds: float
    negative: int = 0  # of the neurons explained, those whose negative side was explained too

    def as_dict(self) -> dict:
        return asdict(self)


def pool_size(llm) -> int:
    """Engine replicas behind ``llm``: a vLLM pool's actors, else its config's replicas, else 1."""
    actors = getattr(llm, "actors", None)
    if actors:
        return len(actors)
    return int(getattr(getattr(llm, "cfg", None), "replicas", 1) or 1)


def max_in_flight(cfg: ExplainConfig, llm) -> int:
    return cfg.max_in_flight or pool_size(llm) * IN_FLIGHT_PER_REPLICA


def task_cpus(limit: int, free_cpus: float) -> float:
    """The CPUs a worker (or a compaction task) asks Ray for: TASK_CPUS, or a smaller share where
    ``limit`` of them would not fit the CPUs Ray has free (the engines hold theirs: one of a
    2-core machine's two), so that the in-flight limit, not Ray's CPU count, decides how many
    workflows run at once."""
    share = math.floor(free_cpus / max(limit, 1) * 10_000) / 10_000  # Ray counts CPUs to 1/10,000
    return max(MIN_TASK_CPUS, min(TASK_CPUS, share))


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


@dataclass(frozen=True)
class Flight:
    """A task in flight: its order, its neuron's sides (the budget's reserve), the index of the
    worker running it and its attempt (0 first)."""

    order: TaskOrder
    n_sides: int
    worker: int
    attempt: int


class Driver:
    """Submits tasks with at most ``limit`` in flight to its workers (each runs
    ``cfg.workflows_per_worker`` at once), collects them, and starts a compaction task per layer
    every ``compact_every`` finished neurons and when the layer ends."""

    def __init__(self, run: RunContext, outputs: Outputs, index: RecordsIndex, limit: int, total: int, progress):
        import ray

        self.ray, self.run_ref, self.cfg, self.out_store = ray, ray.put(run), run.cfg, run.out
        self.outputs, self.index, self.limit, self.total, self.progress = outputs, index, limit, total, progress
        n_workers = math.ceil(limit / run.cfg.workflows_per_worker)
        cpus = task_cpus(n_workers + 1, ray.available_resources().get("CPU", 0.0))  # + 1: a compaction's
        # SPREAD: a cluster's nodes share the workflows' CPU work. A worker that died (its process
        # killed, its node lost) is started again; the driver reruns its tasks on other workers
        # (``wait_one``: Ray's own retries would go back to the same worker, which fails them at
        # once until Ray sees that its node is gone).
        self.worker_class = ray.remote(
            num_cpus=cpus, max_concurrency=run.cfg.workflows_per_worker, max_restarts=-1, scheduling_strategy="SPREAD"
        )(WorkflowWorker)
        self.workers: list = []  # started with the first task
        self.n_workers = n_workers
        self.load: list[int] = []  # per worker, its tasks in flight
        self.suspect_until: list[float] = []  # per worker, when it may take tasks again after one died
        self.compactor = ray.remote(num_cpus=cpus, max_retries=1)(compact)
        self.in_flight: dict[object, Flight] = {}  # ref -> the task it will return
        self.running: dict[int, int] = {}  # layer -> tasks in flight
        self.ready = {layer: set(ns) for layer, ns in outputs.waiting.items()}  # layer -> neurons to merge
        self.compactions: list = []
        self.tally = Tally()
        self.before = Tally()  # the selection's neurons done by earlier runs (set when a budget needs it)

    def submit(self, layer: int, neuron: int, full_allowed: bool = True, n_sides: int = 1) -> None:
        self.make_room()
        keys = self.index.keys_of(layer, neuron)
        if not keys:
            self.record(
                record_failure(self.out_store, layer, neuron, self.cfg, "no activation records for this neuron")
            )
            return
        cache = self.outputs.cache_sources(layer, neuron)
        outputs = self.index.output_keys_of(layer)
        order = TaskOrder(layer, neuron, keys, cache, outputs, full_allowed)
        self._dispatch(order, n_sides, 0)

    def _dispatch(self, order: TaskOrder, n_sides: int, attempt: int) -> None:
        w = self._least_loaded()
        ref = self.workers[w].run.remote(replace(order, submitted=time.time()), self.run_ref)
        self.in_flight[ref] = Flight(order, n_sides, w, attempt)
        self.load[w] += 1
        self.running[order.layer] = self.running.get(order.layer, 0) + 1

    def _least_loaded(self) -> int:
        """The worker with the fewest tasks in flight, of those not suspect (all, if all are)."""
        if not self.workers:
            self.workers = [self.worker_class.remote() for _ in range(self.n_workers)]
            self.load, self.suspect_until = [0] * self.n_workers, [0.0] * self.n_workers
        now = time.monotonic()
        sound = [i for i in range(self.n_workers) if self.suspect_until[i] <= now]
        return min(sound or range(self.n_workers), key=self.load.__getitem__)

    def make_room(self) -> None:
        while len(self.in_flight) >= self.limit:
            self.wait_one()

    def over_budget(self, budget: int | None) -> bool:
        """Whether the tokens spent, plus what the neurons in flight will likely spend
        (``likely_in_flight``), reach ``budget``."""
        if budget is None:
            return False
        t = self._spend()
        sides, allowed = self._flying()
        allowed = 0 if self.cfg.method == "single-pass" else allowed
        triage = self.cfg.method == "triage"
        return t.tokens + likely_in_flight(t, len(self.in_flight), sides, allowed, triage) >= budget

    def _flying(self) -> tuple[int, int]:
        """The sides (workflows) of the tasks in flight, and how many of them may take the full workflow."""
        flights = self.in_flight.values()
        return sum(f.n_sides for f in flights), sum(f.order.full_allowed for f in flights)

    def learn_first(self, budget: int | None) -> None:
        """Before any neuron of the selection finished, wait for one wherever the prior costs of
        those in flight reach ``budget``: the run stops on its own measured mean, never on a prior."""
        while budget is not None and self.in_flight and not self._spend().explained and self.over_budget(budget):
            self.wait_one()

    def _spend(self) -> Tally:
        """This run's spend and earlier runs' on the selection (the budget spans reruns)."""
        return self.tally.plus(self.before)

    def spent(self) -> int:
        """Tokens the selection has cost: this run's and earlier runs'."""
        return self.tally.tokens + self.before.tokens

    def full_affordable(self, budget: int | None, left: int) -> bool:
        """Method triage under a budget: whether the next neuron may still get the full workflow
        (``full_fits``, with the sides in flight and the neurons of them already allowed one;
        ``left``: the sides of the neurons not submitted yet)."""
        if budget is None or self.cfg.method != "triage":
            return True
        flying, allowed = self._flying()
        return full_fits(self._spend(), flying, allowed, left, budget)

    def wait_one(self) -> None:
        from ray.exceptions import NodeDiedError, OutOfMemoryError, RayActorError, WorkerCrashedError

        ready, _ = self.ray.wait(list(self.in_flight), num_returns=1)
        ref = ready[0]
        f = self.in_flight.pop(ref)
        layer, neuron = f.order.layer, f.order.neuron
        self.load[f.worker] -= 1
        self.running[layer] -= 1
        try:
            summary = self.ray.get(ref)
        except (RayActorError, WorkerCrashedError, NodeDiedError, OutOfMemoryError) as e:
            if f.attempt >= TASK_RETRIES:  # only system failures are rerun: a neuron's own errors are results
                summary = self._task_failure(layer, neuron, e)
            else:
                self.suspect_until[f.worker] = time.monotonic() + SUSPECT_S
                self._dispatch(f.order, f.n_sides, f.attempt + 1)
                return
        except Exception as e:  # the task itself failed (a store write, say): still recorded
            summary = self._task_failure(layer, neuron, e)
        self.record(summary)

    def _task_failure(self, layer: int, neuron: int, e: BaseException) -> NeuronSummary:
        reason = f"task failed: {failure_reason(e)}"
        try:
            return record_failure(self.out_store, layer, neuron, self.cfg, reason)
        except Exception:  # the summary still names the neuron and its failure
            return task_summary(layer, neuron, failed_rows(layer, neuron, self.cfg, reason))

    def record(self, s: NeuronSummary) -> None:
        self.tally.add(s)
        if s.status == "ok":
            ready = self.ready.setdefault(s.layer, set())
            ready.add(s.neuron)
            if len(ready) >= self.cfg.compact_every:
                self.compact(s.layer)
        if self.progress:
            self.progress(
                f"explain {self.tally.explained}/{self.total}: layer {s.layer} neuron {s.neuron}: "
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
        self.stop_workers()  # their CPUs go to the compactions
        self.close_layers(None)
        errors = []
        for ref in self.compactions:
            try:
                self.ray.get(ref)
            except Exception as e:  # the neurons' own objects are still there: the next run merges them
                errors.append(failure_reason(e))
        return errors

    def stop_workers(self) -> None:
        for w in self.workers:
            self.ray.kill(w, no_restart=True)
        self.workers, self.load = [], []


def explain_run(
    run: RunContext,
    neurons: list[tuple[int, int]] | None = None,
    progress=None,
    retry_failed: bool = True,
    index: RecordsIndex | None = None,
) -> RunSummary:
    """Explain every selected neuron (``neurons``, else cfg.layers x cfg.neurons over the records)
    not already done in the run's outputs; returns counts and mean scores. Needs Ray initialised;
    ``progress(message)`` is called once per finished neuron; ``index``: the records'
    ``RecordsIndex`` where the caller has scanned them already."""
    t0 = time.time()
    index, outputs, todo, pending = pending_neurons(run, neurons, retry_failed, index)
    for key in outputs.stale:  # what an interrupted merge left: a part already holds it
        run.out.delete(key)
    layers, units = uncode(todo)
    served = None
    if run.embedder is None and pending.any():  # one process embeds for every workflow of the run
        served = embedder.serve(run.cfg.embedder, run.cfg.embedder_dtype)
        run = replace(run, embedder=served)
    try:
        driver = Driver(run, outputs, index, max_in_flight(run.cfg, run.llm), int(sum(pending)), progress)
        try:
            if run.cfg.budget is not None:
                driver.before = spent_before(run.out, todo[~pending])
            n_sides = np.ones(int(sum(pending)), dtype=np.int64)
            if run.cfg.budget is not None and run.cfg.method == "triage":  # a negative side is one more workflow
                n_sides = sides(run.records, index, todo[pending], run.cfg.negative_ratio)
            left = _submit_all(driver, layers[pending], units[pending], n_sides, run.cfg.budget, progress)
            errors = driver.finish()
        finally:
            driver.stop_workers()
    finally:
        if served is not None:
            embedder.stop(served)
    t = driver.tally
    return RunSummary(
        neurons=len(todo),
        explained=t.explained,
        skipped=len(todo) - int(sum(pending)),
        ok=t.ok,
        failed=t.failed,
        failures=t.failures,
        scorer=run.cfg.scorer,
        mean_score=t.mean("score"),
        mean_baseline_score=t.mean("baseline_score"),
        mean_control_score=t.mean("control_score"),
        compaction_errors=errors,
        tokens=t.tokens,
        tokens_before=driver.before.tokens,
        budget=run.cfg.budget,
        left_by_budget=left,
        methods=t.methods,
        seconds=round(time.time() - t0, 1),
        negative=t.negative,
    )


def pending_neurons(run: RunContext, neurons, retry_failed: bool, index: RecordsIndex | None = None):
    """(records index, outputs listing, selected codes, mask of those not done yet)."""
    index = index or RecordsIndex.scan(run.records)
    todo = selection(index, run.cfg, neurons)
    outputs = Outputs(run.out)
    layers, units = uncode(todo)
    mask = np.fromiter(
        (not outputs.done(int(a), int(b), retry_failed) for a, b in zip(layers, units)), dtype=bool, count=len(todo)
    )
    return index, outputs, todo, mask


def _submit_all(
    driver: Driver, layers: np.ndarray, units: np.ndarray, n_sides: np.ndarray, budget: int | None, progress
) -> int:
    """Submit every neuron, in order, until the token budget is reached; how many were left.
    Under method triage the budget first holds back full workflows (``Driver.full_affordable``,
    with ``n_sides``: each neuron's workflows)."""
    withheld = False
    sides_left = np.cumsum(n_sides[::-1])[::-1]  # from each neuron on
    for i, (layer, neuron) in enumerate(zip(layers, units)):
        driver.make_room()
        driver.learn_first(budget)
        full = driver.full_affordable(budget, int(sides_left[i]))
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
        driver.submit(int(layer), int(neuron), full, int(n_sides[i]))
    return 0
