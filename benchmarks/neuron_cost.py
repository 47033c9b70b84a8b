"""R5 and the per-neuron fixed cost: the explain stage's LLM throughput under method triage against
the same engine's saturated throughput, and where each neuron's time goes.

One vLLM engine (bundled SmolLM2-135M-Instruct) serves the whole benchmark:
1. record the selected neurons (default layers 2,9,16,23 x neurons 0-249: 1,000 neurons) over the
   bundled corpus (the real record stage);
2. explain them with ``--method triage`` at the default explain settings, logging every request
   that reaches the engine (``llm_pool.LoggingLLM``); (a) = LLM tokens in the rows' ledgers /
   the explain stage's wall time;
3. replay every logged request at once on the same engine, its prefix cache emptied first
   (``llm_pool.replay``); (b) = its tokens / its wall time; **R5** = a / b (goal >= 0.70);
4. where each neuron's time went, from the rows' ``timings`` (``neuronscope.timing``): median and
   mean seconds per phase; **fixed_s** = a neuron's median time outside the LLM and the queue (its
   reads, setup, judges, clustering, the rest of the workflow and its writes; goal <= 0.5 s), and
   the CPU seconds per neuron spent outside the engine while the stage ran;
5. ``neuronscope status`` of the run, as the command prints it.

``--keep DIR --reuse`` measures a run kept in DIR whose explain stage ended (done, or stopped part
way: then its figures are those of the neurons it finished, over its time) and replays its logged
requests on a fresh engine, without recording or explaining again.

Appends a section to benchmarks/RESULTS.md; the last printed line is ``R5=.. fixed_s=.. ...``.
Run: ``python benchmarks/neuron_cost.py`` (hours on 2 CPU cores at 1,000 neurons; ``--layers``
and ``--neurons`` select fewer).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pandas as pd
from common import append_results, header
from llm_pool import QUARTERS, ledger_tokens, logged_explain, per_neuron, replay, scratch, timeline

from neuronscope import stages
from neuronscope.cli.flags import add_flags, config_from_args
from neuronscope.logs import printer
from neuronscope.results.transcript import TimingEntry, entry_from_json
from neuronscope.status import run_status
from neuronscope.store import Store
from neuronscope.timing import LLM, QUEUE, phase_order

# The records of the 2026-12-01 triage run of 1,000 neurons (RESULTS.md), at the recorder's defaults otherwise.
RECORD = {"window": 32, "max_tokens": 60_000}


def _args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layers", default="2,9,16,23", help="layers of the subject model")
    p.add_argument("--neurons", default="0-249", help="neurons of each layer")
    p.add_argument("--max-tokens", type=int, default=RECORD["max_tokens"], help="corpus tokens recorded")
    p.add_argument("--keep", help="keep the run and the request log in this folder (default: removed)")
    p.add_argument(
        "--reuse",
        action="store_true",
        help="with --keep: where the folder holds a run whose explain stage ended (done, or stopped part "
        "way) and its request log, measure that run and replay its requests instead of running it again",
    )
    p.add_argument("--config", help="run.yaml with explain/llm sections; flags override it")
    p.add_argument("--no-append", action="store_true", help="print, do not append to RESULTS.md")
    add_flags(p, "explain", skip=("layers", "neurons", "method"))
    add_flags(p, "llm")
    return p.parse_args(argv)


def timings_of(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per neuron with timings: its method, when it finished, seconds per phase (0 where
    a phase did not run), ordered by finish."""
    out = []
    for method, text in zip(rows["method"], rows["timings"]):
        entry = entry_from_json(json.loads(text)) if text else None
        if isinstance(entry, TimingEntry):
            out.append({"method": method, "finished": entry.finished, **entry.seconds})
    df = pd.DataFrame(out).fillna(0.0)
    if df.empty:
        return df
    phases = sorted((c for c in df.columns if c not in ("method", "finished")), key=phase_order)
    df = df[["method", "finished", *phases]].sort_values("finished").reset_index(drop=True)
    df["total"] = df[phases].sum(axis=1)
    df["outside"] = df["total"] - df[QUEUE] - df.get(LLM, 0.0)  # the neuron's own time, LLM and queue aside
    return df


def breakdown(t: pd.DataFrame) -> dict:
    """Per phase (and total, outside): median and mean over neurons, mean per method, and the mean
    of each quarter of the neurons in finish order (does a phase shrink as workers warm up?)."""
    cols = [c for c in t.columns if c not in ("method", "finished")]
    quarters = np.array_split(np.arange(len(t)), QUARTERS)
    return {
        c: {
            "median": float(t[c].median()),
            "mean": float(t[c].mean()),
            "by_method": {m: float(g[c].mean()) for m, g in t.groupby("method")},
            "quarters": [float(t[c].iloc[q].mean()) if len(q) else float("nan") for q in quarters],
        }
        for c in cols
    }


def main(argv=None) -> None:
    args = _args(argv)
    base = {"record": {**RECORD, "layers": args.layers, "neurons": args.neurons, "max_tokens": args.max_tokens}}
    base["explain"] = {"method": "triage"}
    cfg = config_from_args(args, base)
    progress = printer()
    names = ("run", "requests")
    reuse = args.reuse and bool(args.keep) and _explained(Path(args.keep) / "run")
    t_all = time.time()
    with scratch(args.keep, "neuronscope-neuron-cost-", names, clear=not reuse) as (run, logs):
        stages.ensure_ray()
        if reuse:  # a kept run: its stages as its manifest has them, then the replay alone
            record_s, stage = _span(run, "record"), _kept_stage(run)
            pool = stages.start_llm(cfg, progress)
        else:
            t0 = time.time()
            stages.run_record(cfg, str(run), progress)
            record_s = time.time() - t0
            pool = stages.start_llm(cfg, progress)
            stage = _explain(cfg, pool, run, logs, progress)
        f = _figures(pool, run, logs, stage)
        f["record_s"] = round(record_s, 1)
        f["max_in_flight"] = cfg.explain.max_in_flight or "default"
        f["status"] = run_status(str(run))
    f["total_s"] = round(time.time() - t_all, 1)
    print(json.dumps({k: v for k, v in f.items() if k != "status"}, indent=1))
    if not args.no_append:
        append_results(_section(argv, args, cfg, f))
    b = f["breakdown"]
    print(
        f"R5={f['r5']:.2f} fixed_s={b['outside']['median']:.2f} fixed_mean_s={b['outside']['mean']:.2f} "
        f"a_tok_s={f['a_tok_s']} b_tok_s={f['b_tok_s']} neurons={f['neurons']}"
    )


def _manifest_stage(run: Path, name: str) -> dict:
    return json.loads((run / "manifest.json").read_text())["stages"].get(name) or {}


def _unix(stamp: str) -> float:
    return dt.datetime.fromisoformat(stamp).timestamp()


def _explained(run: Path) -> bool:
    """Whether a kept run's explain stage ran to an end (done, or stopped part way)."""
    return (run / "manifest.json").exists() and bool(_manifest_stage(run, "explain").get("finished"))


def _span(run: Path, name: str) -> float:
    e = _manifest_stage(run, name)
    return _unix(e["finished"]) - _unix(e["started"])


def _kept_stage(run: Path) -> dict:
    """A kept run's explain stage, from its manifest (to the second; no CPU split, no load average)."""
    e = _manifest_stage(run, "explain")
    return {"t0": _unix(e["started"]), "t1": _unix(e["finished"]), "ended": e["status"], "error": e.get("error")}


def _explain(cfg, pool, run: Path, logs: Path, progress) -> dict:
    """The explain stage at its defaults, every engine request logged."""
    stage = logged_explain(cfg, pool, run, logs, progress)
    return {**stage, "ended": "done", "load_explain": [round(x, 2) for x in os.getloadavg()]}


def _figures(pool, run: Path, logs: Path, stage: dict) -> dict:
    """(a) the explain stage's LLM tokens/s, (b) its requests replayed at once on the engine, and
    the neurons' timings."""
    rows = per_neuron(Store.open(str(run)))
    tokens = ledger_tokens(Store.open(str(run)))  # both sides: a neuron's negative side is one more workflow
    a = tokens / (stage["t1"] - stage["t0"])
    rep = replay(pool, str(logs))
    b = rep["tokens"] / rep["seconds"]
    t = timings_of(rows)
    return {
        **stage,
        "neurons": len(rows),
        "ok": int((rows["status"] == "ok").sum()),
        "methods": rows["method"].value_counts().to_dict(),
        "explain_s": round(stage["t1"] - stage["t0"], 1),
        "ledger_tokens": tokens,
        "a_tok_s": round(a, 1),
        "replay_requests": rep["requests"],
        "replay_tokens": rep["tokens"],
        "replay_s": round(rep["seconds"], 1),
        "b_tok_s": round(b, 1),
        "r5": a / b,
        "timed": len(t),
        "breakdown": breakdown(t),
        "quarters": by_quarter(stage, t),
        "load_replay": [round(x, 2) for x in os.getloadavg()],
        **timeline(str(logs), stage["t0"], stage["t1"]),
    }


def _got(f: dict, key: str) -> str:
    """A figure, or a dash where it was not measured (a kept run's stage, ``--reuse``)."""
    return str(f[key]) if key in f else "–"


def _seconds(x: float) -> str:
    return f"{x:.2f}" if x < 10 else f"{x:.1f}"


def _breakdown_table(b: dict) -> list[str]:
    methods = sorted({m for v in b.values() for m in v["by_method"]})
    lines = [
        "| phase (s per neuron) | median | mean | "
        + " | ".join(f"mean, {m}" for m in methods)
        + f" | mean by finish order, quarters 1-{QUARTERS} |",
        "|---|---|---|" + "---|" * len(methods) + "---|",
    ]
    for phase, v in b.items():
        name = {"total": "**total**", "outside": "**outside the LLM and the queue**"}.get(phase, phase)
        lines.append(
            f"| {name} | {_seconds(v['median'])} | {_seconds(v['mean'])} | "
            + " | ".join(_seconds(v["by_method"].get(m, float("nan"))) for m in methods)
            + " | "
            + " / ".join(_seconds(q) for q in v["quarters"])
            + " |"
        )
    return lines


def _cpu_table(f: dict, n: int) -> list[str]:
    """The explain stage's CPU seconds per kind of process (``llm_pool.ProcessCpu``), in all and per neuron."""
    kinds = f.get("cpu_by_kind")
    if not kinds:
        return []
    return [
        "CPU seconds of the explain stage per kind of process (sampled each second):",
        "",
        "| process | CPU s | per neuron |",
        "|---|---|---|",
        *(f"| {k} | {v} | {v / max(n, 1):.2f} |" for k, v in kinds.items()),
        "",
    ]


def by_quarter(stage: dict, t: pd.DataFrame) -> list[dict]:
    """Per quarter of the explain stage's wall time: the neurons that finished in it, and the CPU
    seconds per such neuron outside the engine, of the served embedder and of the workflow workers."""
    out = []
    for q in stage.get("cpu_by_quarter", []):
        a, b = q["t"]
        done = int(((t["finished"] > a) & (t["finished"] <= b)).sum()) if len(t) else 0
        kinds = q["by_kind"]
        out.append(
            {
                "neurons": done,
                "outside": sum(v for k, v in kinds.items() if k != "engine") / max(done, 1),
                "embedder": kinds.get("ray::EmbedderService", 0.0) / max(done, 1),
                "workers": kinds.get("ray::WorkflowWorker.run", 0.0) / max(done, 1),
            }
        )
    return out


def _quarter_table(f: dict) -> list[str]:
    qs = f.get("quarters")
    if not qs:
        return []

    def row(name: str, key: str) -> str:
        return f"| {name} | " + " | ".join(f"{q[key]:.2f}" for q in qs) + " |"

    return [
        "CPU seconds per neuron by quarter of the explain stage's wall time (the neurons that finished in "
        "it; a long run's caches, the served embedder's first of all, hold more of the corpus's text as it goes):",
        "",
        "| | " + " | ".join(f"quarter {i + 1}" for i in range(len(qs))) + " |",
        "|---|" + "---|" * len(qs),
        "| neurons finished | " + " | ".join(str(q["neurons"]) for q in qs) + " |",
        row("outside the engine", "outside"),
        row("served embedder", "embedder"),
        row("workflow workers", "workers"),
        "",
    ]


def _section(argv, args, cfg, f: dict) -> str:
    llm, e = cfg.llm, cfg.explain
    n = f["neurons"]
    b = f["breakdown"]
    body = [
        f"One vLLM-CPU engine ({llm.model}, {llm.dtype}, {llm.replicas} replica, max_model_len {llm.max_model_len}, "
        f"KV cache {llm.kv_cache_gib} GiB, prefix caching on). Records: {cfg.record.corpus}, layers "
        f"{args.layers} x neurons {args.neurons}, {cfg.record.max_tokens} tokens, window {cfg.record.window}, "
        f"top_k {cfg.record.top_k}, random_k {cfg.record.random_k}, {cfg.record.quantile_bins} strata of "
        f"{cfg.record.quantile_k}. Explain: method {e.method}, scorer {e.scorer}, simulation scores "
        f"{e.simulation_scores}, max_in_flight {f['max_in_flight']}; the other settings at their defaults.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| neurons explained (ok) | {n} ({f['ok']}) |",
        f"| methods | {', '.join(f'{k} {v}' for k, v in sorted(f['methods'].items()))} |",
        f"| record stage wall time | {f['record_s']} s |",
        f"| explain stage wall time (how it ended) | {f['explain_s']} s ({f['ended']}{': ' + f['error'] if f.get('error') else ''}) |",
        f"| LLM tokens in the rows' ledgers (in + out, both sides) | {f['ledger_tokens']} |",
        f"| engine requests / tokens served during the explain stage | {_got(f, 'engine_requests_explain')} / {_got(f, 'engine_tokens_explain')} |",
        f"| (a) explain-stage LLM tokens/s | {f['a_tok_s']} |",
        f"| replay of the same {f['replay_requests']} requests at once: tokens, wall time | {f['replay_tokens']}, {f['replay_s']} s |",
        f"| (b) the engine's saturated tokens/s | {f['b_tok_s']} |",
        f"| **R5** = a / b (goal >= 0.70) | **{f['r5']:.2f}** |",
        f"| **fixed_s**: median seconds per neuron outside the LLM and the queue (goal <= 0.5); mean | **{b['outside']['median']:.2f}**; {b['outside']['mean']:.2f} |",
        f"| explain stage: seconds before the first LLM call / after the last one | {f['before_first_s']} / {f['after_last_s']} |",
        f"| share of the stage with an LLM call in flight; mean calls in flight | {f['busy_share']}; {f['mean_calls_in_flight']} |",
        f"| CPU seconds during the explain stage: engine / everything else ({os.cpu_count()} cores x the stage = "
        f"{os.cpu_count() * f['explain_s']:.0f} s) | {_got(f, 'engine_cpu_s')} / {_got(f, 'other_cpu_s')} |",
        "| CPU seconds per neuron outside the engine (everything else on the machine / neurons) | "
        + (f"{f['other_cpu_s'] / max(n, 1):.2f} |" if "other_cpu_s" in f else "– |"),
        f"| load average (1 / 5 / 15 min) at the end of the explain stage; of the replay | "
        f"{' / '.join(map(str, f.get('load_explain', ['–'])))}; {' / '.join(map(str, f['load_replay']))} |",
        f"| benchmark wall time | {f['total_s']} s |",
        "",
        f"Where a neuron's time went ({f['timed']} neurons with timings; each phase its own time, `neuronscope.timing`):",
        "",
        *_breakdown_table(b),
        "",
        *_cpu_table(f, n),
        *_quarter_table(f),
        "`neuronscope status` at the end:",
        "",
        "```",
        *f["status"].splitlines()[1:],  # the first line names the run's folder
        "```",
        "",
        f"`R5={f['r5']:.2f} fixed_s={b['outside']['median']:.2f}`",
    ]
    return "\n".join(header("Neuron cost: R5 and the per-neuron fixed cost", __file__, argv) + body) + "\n"


if __name__ == "__main__":
    main()
