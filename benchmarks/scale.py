"""Explaining many neurons: the fan-out driver's memory and the objects the run leaves.

Synthetic activation records for 2 layers x 1536 neurons (the bundled model's width; rows laid
out as the record stage writes them: one object per layer and 256 neurons, sorted by neuron)
go into a local run. Then, each in a fresh child process (so that its peaks are its own), the
explain fan-out runs over a selection of 100 and of 1,000 neurons (half in each layer) into a
fresh run, and reports the driver's peak memory: Python allocations (tracemalloc) plus Arrow's
memory pool peak, both taken in the driver process only.

The explain step is replaced by a TRIVIAL WORKLOAD (``trivial_workflow`` below, passed as
``RunContext(workflow=...)``; nowhere else): it reads the neuron's records like the real
workflow, asks a scripted stand-in LLM three questions through the run's response cache, and
writes one explanation row and a transcript. This measures the driver and the store, not
explanations.

driver_mem_ratio = peak(1,000 neurons) / peak(100 neurons) (goal: within 0.9-1.1);
objects_per_neuron = objects under explanations/, transcripts/ and llm_cache/ after the
1,000-neuron run / neurons (goal <= 0.1).

The dry-run part is the product as a user runs it, no stand-in: real records of the bundled model
(DRY_NEURONS neurons of layer DRY_LAYER over DRY_TOKENS tokens), then ``--dry-run`` and the real
explain stage over that selection, each in a fresh process with its own vLLM engine and the
default explain settings. dryrun_error = the larger of |estimate / real - 1| for the LLM tokens
and for the fan-out's wall time (goal <= 0.30).

Appends a section to benchmarks/RESULTS.md; the last printed line is
``driver_mem_ratio=.. objects_per_neuron=.. dryrun_error=..`` (nan for a part not run).
Run: ``python benchmarks/scale.py [--parts memory,dryrun]`` (memory: a few minutes on 2 CPU
cores; dryrun: about half an hour).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from common import append_results, header, run_child

from neuronscope.schema import RECORDS, conform

LAYERS, NEURONS, SHARD = 2, 1536, 256
TOP, RANDOM, WINDOW = 8, 4, 32
SIZES = (100, 1000)
DRY_LAYER, DRY_NEURONS, DRY_TOKENS = 6, 36, 16384
# the estimate's figures and the real run's summary fields they are compared with
DRY_KEYS = ("pending", "sample", "sample_failed", "sample_seconds", "tokens_per_neuron", "tokens", "seconds")
DRY_KEYS += ("ok", "failed", "explained")
FOLDERS = ("explanations/", "transcripts/", "llm_cache/")


def synthetic_records(store) -> int:
    """RECORDS rows for LAYERS x NEURONS neurons; returns the rows written."""
    rng = np.random.default_rng(0)
    words = np.array([f" w{i}" for i in range(500)])
    rows = 0
    for layer in range(LAYERS):
        for shard in range(NEURONS // SHARD):
            neurons = np.repeat(np.arange(shard * SHARD, (shard + 1) * SHARD), TOP + RANDOM)
            n = len(neurons)
            ids = rng.integers(0, len(words), size=(n, WINDOW))
            acts = rng.random((n, WINDOW), dtype=np.float32)
            per = np.tile(np.r_[np.zeros(TOP, np.int32), np.ones(RANDOM, np.int32)], SHARD)
            table = pa.table(
                {
                    "layer": np.full(n, layer, np.int32),
                    "neuron": neurons.astype(np.int32),
                    "kind": np.where(per == 0, "top", "random"),
                    "rank": np.tile(np.r_[np.arange(TOP), np.arange(RANDOM)], SHARD).astype(np.int32),
                    "window_id": rng.integers(0, 10**6, size=n),
                    "tokens": words[ids].tolist(),
                    "token_ids": ids.astype(np.int32).tolist(),
                    "activations": acts.tolist(),
                    "max_pos": acts.argmax(axis=1).astype(np.int32),
                    "max_act": acts.max(axis=1),
                }
            )
            store.write_parquet(f"records/layer_{layer:03d}/part-{shard:05d}.parquet", conform(table, RECORDS))
            rows += n
    return rows


class ScriptedLLM:
    """Stand-in LLM of the trivial workload: answers at once, deterministically."""

    model_id = "scripted-stand-in@1"

    def chat(self, conversations, params):
        from neuronscope.llm.base import Completion

        return [Completion(f"answer to {c[-1]['content'][:40]}", 20, 4) for c in conversations]


def trivial_workflow(layer, neuron, records, llm, cfg, options=None):
    """TRIVIAL WORKLOAD standing in for explain_neuron: the benchmark measures the driver and the store."""
    from neuronscope.explain import NeuronResult
    from neuronscope.llm.agents import Agent
    from neuronscope.llm.base import GenParams, Ledger, Metered
    from neuronscope.results.transcript import LedgerEntry, OtherEntry
    from neuronscope.schema import explanation_row

    top = records[records["kind"] == "top"].sort_values("rank")
    ledger = Ledger()
    prompts = [[{"role": "user", "content": "".join(t)}] for t in top["tokens"].head(3)]
    cache = options.cache if options is not None else None
    answers = Metered(llm, ledger, cache).chat(Agent.EXPLAIN, prompts, GenParams())
    row = explanation_row(
        layer,
        neuron,
        mode=0,
        n_modes=1,
        explanation=answers[0].text,
        mode_size=len(top),
        exemplar_ids=top["window_id"].tolist(),
        score=float(top["max_act"].mean()),
        method="trivial",
    )
    transcript = [
        OtherEntry({"agent": "trivial", "prompt": p[0]["content"], "answer": a.text}) for p, a in zip(prompts, answers)
    ]
    return NeuronResult([row], transcript + [LedgerEntry(ledger.as_dict())], ledger)


def measure(records_uri: str, out_uri: str, n: int) -> dict:
    """One fan-out over ``n`` neurons, in this process; the driver's peaks and the objects left."""
    import tracemalloc

    import ray

    from neuronscope.config import ExplainConfig
    from neuronscope.explain import RunContext, explain_run
    from neuronscope.store import Store

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    records, out = Store.open(records_uri), Store.open(out_uri)
    cfg = ExplainConfig(layers="0-1", neurons=f"0-{n // LAYERS - 1}", self_check=False)
    pool = pa.default_memory_pool()
    arrow0 = pool.max_memory() or 0
    tracemalloc.start()
    t0 = time.time()
    summary = explain_run(RunContext(records, out, ScriptedLLM(), cfg, workflow=trivial_workflow))
    seconds = time.time() - t0
    _, py_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    ray.shutdown()
    objects = {f: len(out.list(f)) for f in FOLDERS}
    return {
        "neurons": n,
        "ok": summary.ok,
        "failed": summary.failed,
        "seconds": round(seconds, 1),
        "python_peak": py_peak,
        "arrow_peak": max(0, (pool.max_memory() or 0) - arrow0),
        "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "objects": objects,
        "compaction_errors": summary.compaction_errors,
    }


def dry_record(out: str) -> dict:
    """Real records for the dry-run part (the record stage, bundled model and corpus)."""
    from neuronscope import stages
    from neuronscope.config import RunConfig
    from neuronscope.logs import printer

    cfg = RunConfig(record={"layers": str(DRY_LAYER), "neurons": f"0-{DRY_NEURONS - 1}", "max_tokens": DRY_TOKENS})
    return stages.run_record(cfg, out, printer())


def dry_explain(records: str, out: str, dry: bool) -> dict:
    """``neuronscope explain`` over the dry-run selection, its estimate when ``dry``."""
    from neuronscope import stages
    from neuronscope.config import RunConfig
    from neuronscope.logs import printer

    selection = {"layers": str(DRY_LAYER), "neurons": f"0-{DRY_NEURONS - 1}"}
    cfg = RunConfig(explain={**selection, "dry_run": dry})
    result = stages.run_explain(cfg, records, out, printer())
    summary = result.as_dict() if isinstance(result, stages.Estimate) else result
    return {k: summary.get(k) for k in DRY_KEYS if k in summary}


def dryrun_part(work: Path) -> dict:
    """The estimate of ``--dry-run`` against the real run on the same selection."""
    records = str(work / "dry-records")
    run_child(__file__, "--dry-record", records)
    estimate = run_child(__file__, "--dry-explain", "estimate", "--records", records, "--out", work / "dry-est")
    real = run_child(__file__, "--dry-explain", "real", "--records", records, "--out", work / "dry-real")
    errors = {k: estimate[k] / real[r] - 1 for k, r in (("tokens", "tokens"), ("seconds", "seconds"))}
    return {"estimate": estimate, "real": real, "errors": errors, "dryrun_error": max(map(abs, errors.values()))}


def child(records_uri: str, work: Path, n: int) -> dict:
    return run_child(__file__, "--measure", n, "--records", records_uri, "--out", work / f"explain-{n}")


def memory_part(work: Path) -> dict:
    """The trivial-workload fan-outs over SIZES neurons: driver peaks and objects left."""
    from neuronscope.store import Store

    rows = synthetic_records(Store.open(str(work / "records")))
    runs = {n: child(str(work / "records"), work, n) for n in SIZES}
    peak = {n: r["python_peak"] + r["arrow_peak"] for n, r in runs.items()}
    big = runs[SIZES[1]]
    return {
        "records_rows": rows,
        "runs": runs,
        "peak": peak,
        "driver_mem_ratio": peak[SIZES[1]] / peak[SIZES[0]],
        "objects_per_neuron": sum(big["objects"].values()) / big["ok"],
    }


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="memory,dryrun", help="comma-separated: memory, dryrun")
    ap.add_argument("--keep", help="keep the runs in this folder (default: a temporary folder, removed)")
    ap.add_argument("--no-append", action="store_true", help="do not append to benchmarks/RESULTS.md")
    ap.add_argument("--measure", type=int, help=argparse.SUPPRESS)  # child process: one fan-out
    ap.add_argument("--dry-record", help=argparse.SUPPRESS)  # child process: the dry-run part's records
    ap.add_argument("--dry-explain", choices=["estimate", "real"], help=argparse.SUPPRESS)
    ap.add_argument("--records", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    return ap.parse_args()


def main() -> None:
    args = _args()
    if args.measure:
        print(json.dumps(measure(args.records, args.out, args.measure)))
        return
    if args.dry_record:
        print(json.dumps(dry_record(args.dry_record), default=str))
        return
    if args.dry_explain:
        print(json.dumps(dry_explain(args.records, args.out, args.dry_explain == "estimate")))
        return
    parts = set(args.parts.split(","))
    work = Path(args.keep or tempfile.mkdtemp(prefix="neuronscope-scale-"))
    t0 = time.time()
    try:
        memory = memory_part(work) if "memory" in parts else None
        dry = dryrun_part(work) if "dryrun" in parts else None
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"memory": memory, "dryrun": dry, "total_s": round(time.time() - t0, 1)}, indent=1))
    last = _last_line(memory, dry)
    if not args.no_append:
        append_results(_section(memory, dry, last))
    print(last)


def _last_line(memory: dict | None, dry: dict | None) -> str:
    nan = float("nan")
    ratio, per = (memory["driver_mem_ratio"], memory["objects_per_neuron"]) if memory else (nan, nan)
    error = dry["dryrun_error"] if dry else nan
    return f"driver_mem_ratio={ratio:.3f} objects_per_neuron={per:.4f} dryrun_error={error:.3f}"


def _section(memory: dict | None, dry: dict | None, last: str) -> str:
    """The RESULTS.md section."""
    parts = [
        _memory_section(memory) if memory else "Memory part: not run (nan).\n",
        _dryrun_section(dry) if dry else "Dry-run part: not run (nan).\n",
    ]
    title = "Scale: driver memory, objects per neuron, dry-run estimate"
    return "\n".join(header(title, __file__)) + "\n" + "\n".join(parts) + f"\n`{last}`\n"


def _memory_section(m: dict) -> str:
    a, b = (m["runs"][n] for n in SIZES)
    peak, ratio, per_neuron = m["peak"], m["driver_mem_ratio"], m["objects_per_neuron"]
    mib = lambda x: f"{x / 2**20:.2f} MiB"
    objs = lambda r: ", ".join(f"{k} {v}" for k, v in r["objects"].items())
    return f"""Memory part: local run folder, 2-CPU Ray.
Records: synthetic, {LAYERS} layers x {NEURONS} neurons, {TOP} top + {RANDOM} random exemplars of {WINDOW} tokens each ({m["records_rows"]} rows, one object per layer and {SHARD} neurons).
The explain step is a **trivial workload** (`trivial_workflow` in the script, passed to `explain_run` as its `RunContext`'s `workflow` in this benchmark only): it reads the neuron's records, asks a scripted stand-in LLM three questions through the response cache and writes one row and a transcript. The figures are the fan-out driver's and the store's, not the explanations'.

| figure | {SIZES[0]} neurons | {SIZES[1]} neurons |
|---|---|---|
| neurons ok / failed | {a["ok"]} / {a["failed"]} | {b["ok"]} / {b["failed"]} |
| driver peak, Python allocations (tracemalloc) | {mib(a["python_peak"])} | {mib(b["python_peak"])} |
| driver peak, Arrow memory pool | {mib(a["arrow_peak"])} | {mib(b["arrow_peak"])} |
| driver max RSS (whole process, Ray client included) | {a["max_rss_kib"] / 1024:.0f} MiB | {b["max_rss_kib"] / 1024:.0f} MiB |
| fan-out wall time | {a["seconds"]} s | {b["seconds"]} s |
| objects left (explanations, transcripts, llm_cache) | {objs(a)} | {objs(b)} |

**driver_mem_ratio** = {mib(peak[SIZES[1]])} / {mib(peak[SIZES[0]])} = **{ratio:.3f}** (goal 0.9-1.1).
**objects_per_neuron** after compaction = **{per_neuron:.4f}** ({per_neuron * 1000:.0f} objects per 1,000 neurons; goal <= 0.1; before compaction each neuron writes 3).
"""


def _dryrun_section(d: dict) -> str:
    e, r, err = d["estimate"], d["real"], d["errors"]
    pct = lambda x: f"{x * 100:+.1f} %"
    return f"""Dry-run part: bundled:smollm2-135m, layer {DRY_LAYER} neurons 0-{DRY_NEURONS - 1} recorded over {DRY_TOKENS} tokens of bundled:shakespeare; default explain settings; each run in a fresh process with its own vLLM engine.

| figure | `--dry-run` estimate | real run | estimate / real - 1 |
|---|---|---|---|
| neurons | {e["sample"]} sampled of {e["pending"]} ({e["sample_failed"]} failed) | {r["ok"]} ok, {r["failed"]} failed | |
| LLM tokens, whole selection | {e["tokens"]:,} ({e["tokens_per_neuron"]:,} per neuron) | {r["tokens"]:,} | {pct(err["tokens"])} |
| fan-out wall time, whole selection | {e["seconds"]} s (sample: {e["sample_seconds"]} s) | {r["seconds"]} s | {pct(err["seconds"])} |

**dryrun_error** = **{d["dryrun_error"]:.3f}** (goal <= 0.30).
"""


if __name__ == "__main__":
    main()
