"""The record stage driver: corpus shards -> Ray Data windows -> recording actors -> merged
summaries (with their exemplars' tokens) -> store. The driver holds the shard list and the
summaries, never the corpus."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ..config import RecordConfig
from ..errors import NeuronScopeError
from ..layout import records_key, stats_key
from ..logs import Progress
from ..models import arch
from ..models.bundled import resolve_model
from ..schema import RECORDS, RECORDS_ROW_GROUP_ROWS, STATS, conform
from ..selection import parse_selection
from ..store import Store
from .bestk import PAD_CODE
from .source import CorpusSource, corpus_error, corpus_totals, list_corpus, local_windows, new_tally, windows_dataset
from .topk import QUANTILE_LEVELS, Counts, Summary, split_code
from .udf import Recorder, exemplar_counts
from .vocab import write_output_tokens

SHARD_NEURONS = 256  # neurons per output part: the unit a rerun can skip
ACTOR_WAIT_S = 600.0  # how long a pass waits for its recorders to start (an autoscaler may add nodes)
PROGRESS_EVERY_S = 10.0  # a line while recorders are not all up
WRITE_THREADS = 2  # layers written at once
PASS_ATTEMPTS = 3  # a pass whose recorder died (node lost, killed for memory) starts over this often


def _start_recorders(cfg: RecordConfig, cells: tuple[list[int], list[int]], progress: Progress) -> list:
    """``cfg.num_actors`` recorders, requested from the cluster as they are (so that an autoscaler
    can add the nodes they need), waited for up to ACTOR_WAIT_S with a progress line while some
    are not up. Every split of a streaming split must be read for any to advance, so the pass
    runs with the recorders up by then and cancels the others; none up is an error."""
    import ray

    layers, neurons = cells
    n = cfg.num_actors
    # one CPU per actor leaves the rest of a small node to the tasks feeding it; a second
    # concurrent call answers the progress polls while consume runs; SPREAD puts the recorders on
    # as many nodes as they number
    actor = ray.remote(
        num_cpus=1, num_gpus=cfg.num_gpus_per_actor or None, max_concurrency=2, scheduling_strategy="SPREAD"
    )(Recorder)
    waiting = {}
    for _ in range(n):
        a = actor.remote(cfg, layers, neurons, n)
        waiting[a.ready.remote()] = a
    up: list = []
    start = time.monotonic()
    shown = start
    try:
        while waiting:
            left = ACTOR_WAIT_S - (time.monotonic() - start)
            if left <= 0:
                break
            done, _ = ray.wait(list(waiting), num_returns=len(waiting), timeout=min(2.0, left))
            for ref in done:
                ray.get(ref)  # a recorder that could not start (its model, its memory) raises here
                up.append(waiting.pop(ref))
            if waiting and time.monotonic() - shown >= PROGRESS_EVERY_S:
                shown = time.monotonic()
                free = ray.available_resources()
                gpus = f", {free.get('GPU', 0):.0f} GPUs" if cfg.num_gpus_per_actor else ""
                progress(
                    f"record: {len(up)}/{n} recording actors up; the rest load their model or wait for the cluster "
                    f"({free.get('CPU', 0):.0f} CPUs{gpus} free now); waiting up to {left:.0f} s more"
                )
    except BaseException:
        for a in [*up, *waiting.values()]:
            ray.kill(a)
        raise
    for a in waiting.values():
        ray.kill(a)
    if not up:
        total = ray.cluster_resources()
        need = f"1 CPU{f' and {cfg.num_gpus_per_actor:g} GPU' if cfg.num_gpus_per_actor else ''}"
        raise NeuronScopeError(
            f"record: no recording actor ({need} each) started in {ACTOR_WAIT_S:.0f} s on the Ray cluster "
            f"({total.get('CPU', 0):.0f} CPUs, {total.get('GPU', 0):.0f} GPUs in all); stop the work holding "
            "them (an LLM engine, another run) or add a node"
        )
    if waiting:
        progress(f"record: {len(up)} of {n} recording actors started in {ACTOR_WAIT_S:.0f} s; recording with {len(up)}")
    return up


@dataclass(frozen=True)
class ExemplarWindows:
    """The token ids of the windows a pass's exemplars hold, sent by the recorders with their
    summaries: ``ids`` sorted and unique, ``tokens`` (len(ids), window) int32."""

    ids: np.ndarray
    tokens: np.ndarray

    @classmethod
    def merged(cls, parts: list[tuple[np.ndarray, np.ndarray]]) -> ExemplarWindows:
        ids = np.concatenate([p[0] for p in parts])
        tokens = np.concatenate([p[1] for p in parts if len(p[0])]) if len(ids) else np.zeros((0, 0), np.int32)
        ids, first = np.unique(ids, return_index=True)  # a window reaches one recorder; be safe
        return cls(ids, tokens[first])

    def of(self, wids: np.ndarray) -> np.ndarray:
        """(len(wids), window) token ids of the windows ``wids``."""
        at = np.searchsorted(self.ids, wids)
        assert len(at) == 0 or (at.max() < len(self.ids) and (self.ids[at] == wids).all()), (
            "an exemplar window is missing"
        )
        return self.tokens[at]


@dataclass
class _Pass:
    """What one pass over the corpus gives the driver."""

    summaries: dict[int, Summary]
    windows: ExemplarWindows
    n_windows: int  # windows folded, all recorders together
    skipped: dict
    first_batch_s: float | None  # from the pass's start to the first batch any recorder folded


def _summarize_retrying(
    cfg: RecordConfig, cells: tuple[list[int], list[int]], counts: Counts, source: CorpusSource, progress: Progress
) -> _Pass:
    """``_summarize``, started over when a recorder's worker dies: a streaming split cannot hand a
    dead reader's share to another, and a pass's summaries are worthless until all are in. A
    fault of the corpus (a broken shard) ends the stage with its one-line error."""
    from ray.exceptions import OutOfMemoryError, RayActorError, RayTaskError, WorkerCrashedError

    for attempt in range(1, PASS_ATTEMPTS + 1):
        try:
            return _summarize(cfg, cells, counts, source, progress)
        except RayTaskError as e:
            fault = corpus_error(e, cfg.corpus)
            if fault is None:
                raise
            raise fault from None
        except (RayActorError, WorkerCrashedError, OutOfMemoryError) as e:  # the last: Ray's memory monitor
            reason = str(e).strip().splitlines()[0][:200]
            if attempt == PASS_ATTEMPTS:
                raise NeuronScopeError(
                    f"record: a recording actor died in each of {PASS_ATTEMPTS} tries of this pass ({reason}); "
                    "the shards already written are kept: rerun to resume"
                ) from e
            progress(
                f"record: a recording actor died ({type(e).__name__}); starting the pass over ({attempt + 1}/{PASS_ATTEMPTS})"
            )
    raise AssertionError("unreachable")


def _summarize(
    cfg: RecordConfig, cells: tuple[list[int], list[int]], counts: Counts, source: CorpusSource, progress: Progress
) -> _Pass:
    """One pass over the corpus for the (layers, neurons) ``cells``: Ray Data reads and windows
    the shards on the workers, each actor folds its stream share, the driver merges the results."""
    import ray

    layers, neurons = cells
    started = time.time()
    actors = _start_recorders(cfg, cells, progress)
    n = len(actors)
    tally = new_tally()
    limit = "" if cfg.max_tokens is None else f"/{max(1, cfg.max_tokens // cfg.window)}"
    try:
        # the data tasks ask for no CPU (the recorders hold them): at most as many as the others
        data_tasks = max(1, int(ray.cluster_resources().get("CPU", 1)) - n)
        shards = windows_dataset(source, cfg, tally, data_tasks).streaming_split(n, equal=False)
        pending = [a.consume.remote(shard, cfg.batch_size) for a, shard in zip(actors, shards)]
        shown = 0
        while len(ray.wait(pending, num_returns=len(pending), timeout=2.0)[0]) < len(pending):
            done = sum(ray.get([a.progress.remote() for a in actors]))
            if done > shown:
                shown = done
                progress(f"record: {done}{limit} windows, {done * cfg.window} tokens")
        parts = ray.get(pending)
        folded = sum(ray.get([a.progress.remote() for a in actors]))
        firsts = [t for t in ray.get([a.first_batch.remote() for a in actors]) if t is not None]
        skipped = corpus_totals(cfg.corpus, ray.get(tally.counts.remote()), folded, cfg.window)
    finally:
        for a in [*actors, tally]:
            ray.kill(a)
    windows = ExemplarWindows.merged([(ids, tokens) for _, ids, tokens in parts])
    first = round(min(firsts) - started, 3) if firsts else None
    if len(parts) == 1:
        return _Pass(parts[0][0], windows, folded, skipped, first)
    # merged into fresh summaries: the actors' arrays arrive read-only from the object store
    summaries = {layer: Summary(len(neurons), counts) for layer in layers}
    for part, _, _ in parts:
        for layer, s in part.items():
            summaries[layer].merge(s)
    return _Pass(summaries, windows, folded, skipped, first)


@dataclass(frozen=True)
class _Kind:
    """One RECORDS kind of a Summary: (neurons, m) codes and values, (neurons, m, window)
    windows (empty entries: code PAD_CODE), and what its max_pos / max_act point at: the
    recorded token ("token"), or the window's max ("max") or min ("min")."""

    name: str
    code: np.ndarray
    val: np.ndarray
    win: np.ndarray | None
    at: str


def _kinds(s: Summary) -> list[_Kind]:
    """The kinds of a Summary in row order: top, random, quantile_0.., bottom, negative_quantile_0.."""
    kinds = [_Kind("top", s.top.code, s.top.val, s.top.win, "token")]
    kinds.append(_Kind("random", s.rnd_code, s.rnd_val, s.rnd_win, "max"))
    for side, prefix in ((s.top, ""), (s.bottom, "negative_")):
        if side is None:
            continue
        if side.sign < 0:
            kinds.append(_Kind("bottom", side.code, side.val, side.win, "token"))
        st = side.strata
        if st is not None and st.win is not None:
            at = "max" if side.sign > 0 else "min"
            kinds += [
                _Kind(f"{prefix}quantile_{j}", st.code[:, j], st.val[:, j], st.win[:, j], at)
                for j in range(st.code.shape[1])
            ]
    return [k for k in kinds if k.code.shape[1] and k.win is not None]  # windows exist once anything was folded


def _exemplar_pieces(tokenizer, windows: ExemplarWindows) -> Callable[[np.ndarray], pa.Array]:
    """The token text lookup of every window some exemplar of the pass holds."""
    return _token_pieces(tokenizer, windows.tokens)


def _exemplar_table(layer: int, neurons: list[int], windows: ExemplarWindows, s: Summary, pieces) -> pa.Table:
    """Rows in reader order: one neuron's rows together, kind by kind (``_kinds``), by rank."""
    window = windows.tokens.shape[1]
    kinds = _kinds(s)
    widths = [k.code.shape[1] for k in kinds]
    kidx = np.repeat(np.arange(len(kinds), dtype=np.int8), widths)  # per column
    rank = np.concatenate([np.arange(w) for w in widths])
    code = np.concatenate([k.code for k in kinds], axis=1)
    # empty entries (a stratum holding fewer windows than quantile_k) come last in their kind
    col, j = (code != PAD_CODE).nonzero()
    kidx, rank, code = kidx[j], rank[j], code[col, j]
    val = np.concatenate([k.val for k in kinds], axis=1)[col, j]
    a = np.concatenate([k.win for k in kinds], axis=1)[col, j].reshape(-1, window)
    wid, pos = split_code(code)
    at = np.array([k.at for k in kinds])[kidx]
    # top and bottom exemplars keep the recorded token (first in the tie order); the others point
    # at the window's own extreme on their side
    max_pos = np.where(at == "token", pos, np.where(at == "min", a.argmin(axis=1), a.argmax(axis=1))).astype(np.int32)
    max_act = np.where(at == "token", val, a[np.arange(len(a)), max_pos]).astype(np.float32)
    names = pa.array([k.name for k in kinds], pa.string())
    kind = pa.DictionaryArray.from_arrays(pa.array(kidx), names).cast(pa.string())
    toks = windows.of(wid)
    return conform(
        pa.table(
            {
                "layer": np.full(len(col), layer, np.int32),
                "neuron": np.asarray(neurons, np.int32)[col],
                "kind": kind,
                "rank": rank.astype(np.int32),
                "window_id": wid.astype(np.int64),
                "tokens": _lists(pieces(toks.reshape(-1)), len(toks)),
                "token_ids": _lists(pa.array(toks.reshape(-1).astype(np.int32)), len(toks)),
                "activations": _lists(pa.array(a.reshape(-1).astype(np.float32)), len(toks)),
                "max_pos": max_pos,
                "max_act": max_act,
            }
        ),
        RECORDS,
    )


def _token_pieces(tokenizer, windows: np.ndarray) -> Callable[[np.ndarray], pa.Array]:
    """A vectorized map from token ids to their decoded text (each token decoded alone)."""
    ids = np.unique(windows)
    if not len(ids):
        return lambda tokens: pa.array([], pa.string())
    text = pa.array(tokenizer.batch_decode([[i] for i in ids.tolist()]), pa.string())
    # a lookup table over the whole id range: one gather, no search per token
    lut = np.zeros(int(ids[-1]) + 1, np.int32)
    lut[ids] = np.arange(len(ids), dtype=np.int32)
    return lambda tokens: text.take(pa.array(lut[tokens]))


def _lists(values: pa.Array, n: int) -> pa.ListArray:
    """``values`` cut into ``n`` equal-length lists (built in Arrow: no Python object per token)."""
    width = len(values) // n
    return pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * width), values)


def _stats_table(layer: int, neurons: list[int], s: Summary) -> pa.Table:
    st = s.stats()
    n = len(neurons)
    return conform(
        pa.table(
            {
                "layer": np.full(n, layer, np.int32),
                "neuron": np.asarray(neurons, np.int32),
                "mean": st["mean"],
                "std": st["std"],
                "min": st["min"],
                "max": st["max"],
                "quantile_levels": [list(QUANTILE_LEVELS)] * n,
                "quantiles": list(st["quantiles"]),
                "n_tokens": np.full(n, s.count, np.int64),
            }
        ),
        STATS,
    )


def load_windows(cfg: RecordConfig, tokenizer) -> tuple[np.ndarray, dict]:
    """All windows of a bundled or local corpus as an (n, window) int32 array in id order, and the
    skip counters, read in this process (tests and benchmarks; the stage reads on the workers).
    For a one-shard corpus, row i is window i."""
    _, windows, skipped = local_windows(cfg, tokenizer)
    return windows, skipped


def plan_passes(
    layers: list[int], neurons: list[int], done: set[tuple[int, int]], cell_bytes: int, budget: float
) -> list[tuple[list[int], list[int]]]:
    """Passes (layers, neurons) covering every (layer, shard) not yet done.

    A pass holds the exemplar windows of its layer x neuron cells (``cell_bytes`` each) until it
    ends. Consecutive shards needing the same layers share a pass (one forward serves them all)
    while their cells fit in ``budget`` bytes, which bounds memory and the work a crash loses; a
    shard whose layers do not fit spreads them over several passes. The smallest pass is one
    layer of one shard, whatever the budget.
    """
    cells = max(1, int(budget // cell_bytes))
    by_shard: dict[int, list[int]] = {}
    for n in neurons:
        by_shard.setdefault(n // SHARD_NEURONS, []).append(n)
    passes: list[tuple[list[int], list[int]]] = []
    for shard, ns in sorted(by_shard.items()):
        todo = [layer for layer in layers if (layer, shard) not in done]
        if not todo:
            continue
        if passes and passes[-1][0] == todo and (len(passes[-1][1]) + len(ns)) * len(todo) <= cells:
            passes[-1][1].extend(ns)
            continue
        step = max(1, cells // len(ns))  # layers of this shard per pass
        passes += [(todo[i : i + step], list(ns)) for i in range(0, len(todo), step)]
    return passes


def cell_bytes(counts: Counts, window: int) -> int:
    """Bytes of exemplar windows one layer x neuron cell holds (float32 activations)."""
    return counts.per_neuron() * window * 4


def _by_shard(table: pa.Table) -> dict[int, pa.Table]:
    """The rows of each neuron shard (rows come sorted by neuron): slices, no copy."""
    shard = table["neuron"].to_numpy() // SHARD_NEURONS
    cuts = np.flatnonzero(np.diff(shard)) + 1
    starts, ends = np.r_[0, cuts], np.r_[cuts, len(shard)]
    return {int(shard[i]): table.slice(i, j - i) for i, j in zip(starts, ends) if j > i}


@dataclass(frozen=True)
class _PassWriter:
    """Writes the layers of one pass: its neurons, the tokens of its exemplars' windows and their
    text (``pieces``), the (layer, shard) parts already in the store (``skip``)."""

    store: Store
    neurons: list[int]
    windows: ExemplarWindows
    pieces: Callable[[np.ndarray], pa.Array]
    skip: frozenset

    def layer(self, layer: int, summary: Summary) -> int:
        """A layer's records and stats shards not in ``skip``; stats after records, so that a
        stats part means its shard is complete. Returns the shards written."""
        stats = _by_shard(_stats_table(layer, self.neurons, summary))
        written = 0
        exemplars = _exemplar_table(layer, self.neurons, self.windows, summary, self.pieces)
        for shard, part in _by_shard(exemplars).items():
            if (layer, shard) not in self.skip:
                # dictionary encoding pays on the repeated strings only (on activations it doubles the time)
                self.store.write_parquet(
                    records_key(layer, shard),
                    part,
                    row_group_size=RECORDS_ROW_GROUP_ROWS,
                    dictionary=["kind", "tokens"],
                )
                self.store.write_parquet(stats_key(layer, shard), stats[shard])
                written += 1
        return written


@dataclass(frozen=True)
class _Plan:
    """What a record run does: its selection, passes and the shards they cover."""

    layers: list[int]
    neurons: list[int]
    counts: Counts
    passes: list[tuple[list[int], list[int]]]
    shards: set[tuple[int, int]]
    done: set[tuple[int, int]]
    cell_bytes: int


def _plan(cfg: RecordConfig, config, store) -> _Plan:
    """The passes over the selected (layer, shard)s not yet in the store."""
    layers = parse_selection(cfg.layers, arch.n_layers(config), "layer")
    neurons = parse_selection(cfg.neurons, arch.n_neurons(config), "neuron")
    shards = {(layer, n // SHARD_NEURONS) for layer in layers for n in neurons}
    # stats are written after records, so a stats part means its shard is complete
    done = {
        (layer, s) for layer, s in shards if store.exists(stats_key(layer, s)) and store.exists(records_key(layer, s))
    }
    counts = exemplar_counts(cfg, arch.signed(config))
    size = cell_bytes(counts, cfg.window)
    return _Plan(
        layers,
        neurons,
        counts,
        plan_passes(layers, neurons, done, size, cfg.pass_memory_gib * (1 << 30)),
        shards,
        done,
        size,
    )


def _recorded_tokens(store: Store, done: set[tuple[int, int]]) -> int:
    """Corpus tokens behind the shards already written (a rerun with nothing left to record)."""
    if not done:
        return 0
    layer, shard = min(done)
    return int(store.read_parquet(stats_key(layer, shard))["n_tokens"][0].as_py())


def _write_pass(store, tokenizer, selection: tuple[list[int], list[int]], result, done: frozenset) -> int:
    """A pass's RECORDS and STATS parts (those not in ``done``); how many shards it wrote."""
    layers, neurons = selection
    writer = _PassWriter(store, neurons, result.windows, _exemplar_pieces(tokenizer, result.windows), done)
    # Arrow and Parquet release the GIL: layers are built and written side by side
    with ThreadPoolExecutor(WRITE_THREADS) as pool:
        jobs = [pool.submit(writer.layer, layer, result.summaries[layer]) for layer in layers]
        return sum(job.result() for job in jobs)


def _output_side(store, path: str, plan, progress: Progress) -> dict:
    # the output side needs only the weights: a few seconds a layer, its own parts skipped on a rerun
    outputs = write_output_tokens(store, path, plan.layers, plan.neurons, SHARD_NEURONS)
    if outputs["parts"]:
        progress(f"record: output tokens of {outputs['parts']} shards in {outputs['seconds']} s")
    return outputs


def record(cfg: RecordConfig, store, progress: Progress | None = None, source: CorpusSource | None = None) -> dict:
    """Record top-k / random / stratified exemplars (and, with the negative side, bottom-k and
    negative strata) and stats for the selected neurons into ``store``.

    Writes, per selected layer L and neuron shard S (neurons S*SHARD_NEURONS ..
    (S+1)*SHARD_NEURONS-1), ``records/layer_LLL/part-SSSSS.parquet`` (schema RECORDS, rows sorted
    by neuron, kind, rank) and ``stats/layer_LLL/part-SSSSS.parquet`` (schema STATS). A shard
    whose two files are already in the store is skipped, so a rerun resumes an interrupted
    run; results do not depend on which shards are recorded together. Then the same shards'
    ``output_tokens/layer_LLL/part-SSSSS.parquet`` (schema OUTPUT_TOKENS, ``vocab.py``), from
    the weights alone, each skipped where it exists. ``source``: the corpus, listed already
    (else listed here). Each pass streams the corpus anew. Returns a summary.
    """
    from transformers import AutoConfig, AutoTokenizer

    progress = progress or (lambda msg: None)
    t0 = time.time()
    path = resolve_model(cfg.model).path
    config = AutoConfig.from_pretrained(path)
    arch.site(config)
    plan = _plan(cfg, config, store)
    source = source or list_corpus(cfg.corpus)
    tokenizer = AutoTokenizer.from_pretrained(path)
    done, written = set(plan.done), 0
    n_windows, skipped, first_batch = _recorded_tokens(store, done) // cfg.window, {}, None
    if done:
        progress(f"record: {len(done)}/{len(plan.shards)} shards already in the store, skipped")
    for i, (p_layers, p_neurons) in enumerate(plan.passes):
        mib = len(p_layers) * len(p_neurons) * plan.cell_bytes / (1 << 20)
        progress(
            f"record: pass {i + 1}/{len(plan.passes)}: {source.describe()}, windows of {cfg.window} tokens; "
            f"{len(p_layers)} layers x {len(p_neurons)} neurons, {mib:.0f} MiB of exemplar windows"
        )
        result = _summarize_retrying(cfg, (p_layers, p_neurons), plan.counts, source, progress)
        n_windows, skipped = result.n_windows, result.skipped
        first_batch = first_batch if first_batch is not None else result.first_batch_s
        progress(f"record: writing the records and stats of {len(p_layers)} layers")
        written += _write_pass(store, tokenizer, (p_layers, p_neurons), result, frozenset(done))
        done |= {(layer, n // SHARD_NEURONS) for layer in p_layers for n in p_neurons}
    outputs = _output_side(store, path, plan, progress)
    summary = {
        "layers": plan.layers,
        "neurons": len(plan.neurons),
        "corpus_shards": len(source.shards),
        "n_windows": n_windows,
        "n_tokens": n_windows * cfg.window,
        "seconds": round(time.time() - t0, 2),
        "first_batch_s": first_batch,
        "skipped": skipped,
        "shards": len(plan.shards),
        "shards_recorded": written,
        "passes": len(plan.passes),
        "negative": plan.counts.negative,
        "exemplars_per_neuron": plan.counts.per_neuron(),
        "output_token_shards": outputs["parts"],
    }
    progress(f"record: done, {summary['n_tokens']} tokens in {summary['seconds']} s")
    return summary
