"""The CPU a neuron costs outside the LLM engine, without the engine: a kept run's finished neurons
explained again in this one process (``explain.task.run_task``, the workers' own call), every LLM
answer read from the run's response cache (an LLM that answers nothing else: a miss fails the
neuron, so a replay that passes read them all), into a fresh run.

Single-threaded (OMP_NUM_THREADS=1, as Ray gives each worker), in two passes over the same neurons:
- cold: the process starts with no embedding cached (its per-process cache fills as it goes; the
  served embedder of a long run, which keeps 200,000 texts, hits more often);
- warm: every text already embedded, so only the workers' own work is left (reads, items,
  statistics, clustering, writes).
Reports CPU seconds per neuron by the method each neuron got (``--embedder-dtype`` float32 or
bfloat16 side by side with ``--dtypes``), and how far its rows' scores moved from the run's own.

Run: ``python benchmarks/replay_cost.py --run RUN`` (a run made by ``neuronscope explain`` with the
default settings, e.g. a folder ``neuron_cost.py --keep`` left, or any whole-model run).
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"  # before numpy and torch load: a Ray worker's own setting
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from common import append_results, header

from neuronscope.config import load_config
from neuronscope.explain.schedule import Outputs
from neuronscope.explain.task import RunContext, TaskOrder, run_task
from neuronscope.llm.base import LazyTokenizer
from neuronscope.llm.vllm_backend import resolve_dtype as llm_dtype
from neuronscope.models.bundled import resolve_model
from neuronscope.models.embedder import get_embedder
from neuronscope.results.records import RecordsIndex
from neuronscope.selection import selected
from neuronscope.store import Store

KEYS = ["layer", "neuron", "polarity", "mode"]


class CachedOnly(LazyTokenizer):
    """The run's LLM as its response cache knows it: the same ``model_id`` (so the same keys), the
    same tokenizer, and no engine behind it."""

    def __init__(self, path: str, model_id: str):
        self.path, self.model_id = path, model_id

    def _tokenizer_source(self) -> str:
        return self.path

    def chat(self, *_, **__):
        raise RuntimeError("not in the response cache")

    def next_token_logprobs(self, *_, **__):
        raise RuntimeError("not in the response cache")


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="a run whose explain stage finished (folder)")
    p.add_argument("--layers", help="layers to replay, e.g. '2,9' (default: every explained layer)")
    p.add_argument("--neurons", default="0-19", help="neurons of each layer to replay")
    p.add_argument("--dtypes", default="bfloat16,float32", help="embedder dtypes to measure, in turn")
    p.add_argument("--no-append", action="store_true", help="print, do not append to RESULTS.md")
    return p.parse_args(argv)


def _orders(src: Store, out: Store, rows) -> list[tuple[TaskOrder, str]]:
    """Each selected ok neuron's order as the driver makes it, full workflow allowed where the run
    allowed it (its method says whether the budget held it back), and its positive side's method."""
    index, outputs = RecordsIndex.scan(src), Outputs(out)
    out_list = []
    for (layer, neuron), g in rows.groupby(["layer", "neuron"]):
        if (g["status"] != "ok").any():
            continue
        full = not g["method"].str.endswith("(budget)").any()
        order = TaskOrder(
            int(layer),
            int(neuron),
            index.keys_of(layer, neuron),
            outputs.cache_sources(layer, neuron),
            index.output_keys_of(layer),
            full,
        )
        out_list.append((order, g.sort_values("polarity", ascending=False)["method"].iloc[0]))
    return out_list


def _pass(orders, ctx) -> tuple[dict[str, list[float]], int]:
    """CPU seconds of each neuron's task by method, and how many failed (left out of the seconds:
    a workflow that decided otherwise than the run asks the LLM what the cache does not hold)."""
    cpu, failed = defaultdict(list), 0
    for order, method in orders:
        t = time.process_time()
        s = run_task(order, ctx)
        if s.status == "ok":
            cpu[method].append(time.process_time() - t)
        else:
            failed += 1
            print(f"layer {order.layer} neuron {order.neuron}: {s.error}", file=sys.stderr)
    return cpu, failed


def _moved(src: Store, out: Store) -> tuple[int, float, float]:
    """(rows compared, largest change of a baseline score, of a control score) against the run's rows."""
    a = src.read_parquet("explanations/").to_pandas()
    b = out.read_parquet("explanations/").to_pandas()
    m = b.merge(a, on=KEYS, suffixes=("", "_run"))
    d = {c: float((m[c] - m[c + "_run"]).abs().max()) for c in ("baseline_score", "control_score")}
    return len(m), d["baseline_score"], d["control_score"]


def measure(args) -> tuple[list[dict], int]:
    src = Store.open(args.run)
    rows = src.read_parquet("explanations/").to_pandas()
    rows = rows[selected(rows["layer"].to_numpy(), rows["neuron"].to_numpy(), args.layers, args.neurons)]
    cfg = load_config(None, {"explain": {"method": "triage"}})
    model = resolve_model(cfg.llm.model)
    llm = CachedOnly(model.path, f"vllm:{cfg.llm.model}@{model.revision}:{llm_dtype(cfg.llm)}")
    out_rows = []
    for dtype in args.dtypes.split(","):
        with tempfile.TemporaryDirectory(prefix="ns-replay-") as tmp:
            shutil.copytree(Path(args.run) / "llm_cache", Path(tmp) / "llm_cache")
            out = Store.open(tmp)
            orders = _orders(src, out, rows)
            ctx = RunContext(
                src, out, llm, cfg.explain, embedder=get_embedder(cfg.explain.embedder, dtype), calibrated=True
            )
            run_task(orders[0][0], ctx)  # imports, the tokenizer, the reference vocabulary: once per process
            cold, failed_cold = _pass(orders[1:], ctx)
            warm, failed_warm = _pass(orders[1:], ctx)
            n, base, control = _moved(src, out)
        for method in sorted(cold):
            out_rows.append(
                {
                    "dtype": dtype,
                    "method": method,
                    "n": len(cold[method]),
                    "cold": float(np.mean(cold[method])),
                    "warm": float(np.mean(warm[method])),
                }
            )
        every = [x for v in cold.values() for x in v], [x for v in warm.values() for x in v]
        out_rows.append(
            {
                "dtype": dtype,
                "method": "all",
                "n": len(every[0]),
                "cold": float(np.mean(every[0])),
                "warm": float(np.mean(every[1])),
                "failed": failed_cold + failed_warm,
                "moved": f"{n} rows; baseline score by at most {base:.4f}, control score by at most {control:.4f}",
            }
        )
    return out_rows, len(orders) - 1


def section(args, table: list[dict], n: int) -> str:
    lines = header("Replayed neurons: CPU per neuron outside the engine", __file__)
    lines += [
        f"Run `{Path(args.run).name}`: {n} of its ok neurons (layers {args.layers or 'all'}, neurons "
        f"{args.neurons}) explained again in one process, single-threaded, every LLM answer from its "
        "response cache; cold: embeddings computed as they come (a per-process cache), warm: all cached.",
        "",
        "| embedder dtype | method (positive side) | neurons | CPU s per neuron, cold | warm |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {r['dtype']} | {r['method']} | {r['n']} | {r['cold']:.3f} | {r['warm']:.3f} |" for r in table]
    lines += [""] + [
        f"- {r['dtype']}: {r['failed']} neuron passes failed (a decision other than the run's asked for an "
        f"answer the cache does not hold; left out of the seconds); against the run's rows, {r['moved']}."
        for r in table
        if r["method"] == "all"
    ]
    return "\n".join(lines)


def main(argv=None) -> None:
    args = _args(argv)
    table, n = measure(args)
    text = section(args, table, n)
    print(text)
    if not args.no_append:
        append_results(text)
    every = {r["dtype"]: r for r in table if r["method"] == "all"}
    print(" ".join(f"cpu_cold_{d}={r['cold']:.3f} cpu_warm_{d}={r['warm']:.3f}" for d, r in every.items()))


if __name__ == "__main__":
    main()
