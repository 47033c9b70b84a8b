"""R1/R2: the recording actor's per-batch work alone, in one process, against forwards and a naive one.

What it times: the record stage's recording actor (``neuronscope.record.udf.Recorder``) called
directly on batches of windows made beforehand, i.e. its forward with hooks on every MLP neuron,
the top-k / random sample / quantile stats folded batch by batch, and its final stats. What it
does not time: Ray, Ray Data and the actor pool, reading and tokenizing the corpus, merging the
actors' summaries, building the records and writing Parquet. ``benchmarks/atlas.py`` times the
whole ``record`` stage, all of that included (R1_e2e).

On the bundled SmolLM2-135M, all 30 layers x 1536 neurons, windows of the bundled corpus, the
record stage's default top-k / random-k / window / seed, one batch size and one torch thread
count for everything:

- throughput, in one process, the contenders taking turns batch by batch (so that load from
  other processes hits them alike): the plain forward ``model(input_ids)``; the forward of the
  decoder stack alone (no final norm / LM head, which the recorder skips too); the recorder
  (first run untimed over the preceding tokens, so that it works from its top-k floors as an
  actor does after its first batches); the naive recorder, which keeps every activation and
  computes top-k, sample and stats at the end.
- peak memory (VmHWM of a fresh child process, model load included) of the recorder and the
  naive one over N and 4N tokens.

R1 = recorder tokens/s / decoder-stack forward tokens/s (the stricter of the two forwards; the
ratio to the full forward is reported too). R2 = recorder tokens/s / naive tokens/s.
Appends a section to benchmarks/RESULTS.md; the last printed line is ``R1=... R2=...``.

``--driver-memory`` runs another section instead (R5): the whole ``record`` stage, Ray Data
included, over a corpus of JSONL shards and over 4 times as many, each in a fresh driver process
that starts its own Ray: the driver's peak RSS (the corpus is read and windowed by Ray Data tasks,
so it should not grow with the corpus) and the time from the start of the pass to the first batch
any recorder folds. The subject is a tiny random-weight llama (2 layers, 64 neurons, the bundled
tokenizer) so that the corpus, not the forward, is the work. R5 = driver peak at 4N / at N tokens
(goal <= 1.1); the last printed line is ``R5=... first_batch_s=...``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch
from common import append_results, header, peak_rss_mb, run_child

from neuronscope.config import RecordConfig
from neuronscope.record.topk import QUANTILE_LEVELS

MODEL = "bundled:smollm2-135m"
CORPUS = "bundled:shakespeare"
CFG = RecordConfig(model=MODEL, corpus=CORPUS)  # the record stage's defaults
TOP_K, RANDOM_K, WINDOW, SEED = CFG.top_k, CFG.random_k, CFG.window, CFG.seed
STRATA = f"strata {CFG.quantile_bins} x {CFG.quantile_k}, negative side {CFG.negative}"
TIMES = (
    "Times the recording actor's per-batch work only (`Recorder` called in-process on windows made "
    "beforehand: hooked forward, top-k / sample / stats fold, final stats); not Ray Data, the actor pool, "
    "corpus reading and tokenizing, merging or Parquet writes (`benchmarks/atlas.py` times `record` end to end)."
)


def _windows(n_tokens: int) -> np.ndarray:
    from transformers import AutoTokenizer

    from neuronscope.models.bundled import resolve_model
    from neuronscope.record.driver import load_windows

    cfg = CFG.model_copy(update={"max_tokens": n_tokens})
    return load_windows(cfg, AutoTokenizer.from_pretrained(resolve_model(MODEL).path))[0]


def _batches(windows: np.ndarray, batch_size: int):
    for start in range(0, len(windows), batch_size):
        w = windows[start : start + batch_size]
        yield {"window_id": np.arange(start, start + len(w), dtype=np.int64), "tokens": w}


class InProcessActor:
    """The record stage's per-batch path: the recording actor's fold of each batch."""

    def __init__(self, path: str, threads: int):
        from neuronscope.models import arch
        from neuronscope.record.udf import Recorder

        self.actor = Recorder(CFG.model_copy(update={"model": path, "torch_threads": threads}), LAYERS, NEURONS)
        assert len(NEURONS) == arch.n_neurons(self.actor.model.config)

    def step(self, batch: dict) -> None:
        self.actor(batch)

    def finish(self) -> None:
        for s in self.actor.summaries().values():
            s.stats()


class Naive:
    """Keeps every activation of every neuron; top-k, random sample and stats at the end."""

    def __init__(self, model):
        self.model = model
        self.kept: dict[int, list[torch.Tensor]] = {layer: [] for layer in LAYERS}

    def step(self, batch: dict) -> None:
        from neuronscope.record.hooks import capture

        # hooked only while it runs, so that the same model also serves the plain forwards
        with capture(self.model, LAYERS, torch.arange(len(NEURONS))) as run:
            acts = run(torch.as_tensor(batch["tokens"], dtype=torch.int64))
        for layer, a in acts.items():
            self.kept[layer].append(a.reshape(-1, a.shape[-1]).clone())

    def finish(self) -> None:
        gen = torch.Generator().manual_seed(SEED)
        for layer in LAYERS:
            a = torch.cat(self.kept[layer])  # (tokens, neurons)
            a.topk(TOP_K, dim=0)
            a[torch.randperm(len(a), generator=gen)[:RANDOM_K]].clone()
            a.mean(0), a.std(0), a.amin(0), a.amax(0)
            for q in QUANTILE_LEVELS:
                a.kthvalue(max(1, int(np.ceil(q * len(a)))), dim=0)
            self.kept[layer] = []


def _load(threads: int):
    from neuronscope.models.bundled import resolve_model
    from neuronscope.record.hooks import load_model

    torch.set_num_threads(threads)
    path = resolve_model(MODEL).path
    return path, load_model(path, "cpu")[0]


def _configure(path: str) -> None:
    from transformers import AutoConfig

    from neuronscope.models import arch

    global LAYERS, NEURONS
    config = AutoConfig.from_pretrained(path)
    LAYERS, NEURONS = list(range(arch.n_layers(config))), list(range(arch.n_neurons(config)))


def child(kind: str, n_tokens: int, batch_size: int, threads: int) -> dict:
    """One contender over n_tokens in this (fresh) process: its time and peak RSS."""
    path, model = _load(threads)
    _configure(path)
    windows = _windows(n_tokens)
    worker = InProcessActor(path, threads) if kind == "record" else Naive(model)
    if kind == "record":
        del model  # the recorder holds its own copy, as a Ray actor does
    t0 = time.perf_counter()
    for batch in _batches(windows, batch_size):
        worker.step(batch)
    worker.finish()
    seconds = time.perf_counter() - t0
    return {"kind": kind, "tokens": int(windows.size), "seconds": seconds, "peak_rss_mb": peak_rss_mb()}


def throughput(args) -> dict:
    """Tokens/s of the four contenders over the same batches, taking turns batch by batch."""
    path, model = _load(args.threads)
    _configure(path)
    recorder = InProcessActor(path, args.threads)
    naive = Naive(model)
    windows = _windows(args.warmup_tokens + args.tokens)
    warmup = windows[: args.warmup_tokens // WINDOW]
    for b in _batches(warmup, args.batch_size):
        recorder.step(b)  # untimed: an actor's floors after its first batches, as over most of a run
    batches = [
        {"window_id": b["window_id"] + len(warmup), "tokens": b["tokens"]}
        for b in _batches(windows[len(warmup) :], args.batch_size)
    ]

    def full(b):
        with torch.inference_mode():
            model(input_ids=torch.as_tensor(b["tokens"], dtype=torch.int64), use_cache=False)

    def stack(b):
        with torch.inference_mode():
            model.model(input_ids=torch.as_tensor(b["tokens"], dtype=torch.int64), use_cache=False)

    contenders = {"forward": full, "stack": stack, "record": recorder.step, "naive": naive.step}
    seconds = dict.fromkeys(contenders, 0.0)
    full(batches[0])  # warm-up
    for i, b in enumerate(batches):
        names = list(contenders)
        for name in names[i % 4 :] + names[: i % 4]:  # rotate who goes first
            t = time.perf_counter()
            contenders[name](b)
            seconds[name] += time.perf_counter() - t
    for name, worker in (("record", recorder), ("naive", naive)):
        t = time.perf_counter()
        worker.finish()
        seconds[name] += time.perf_counter() - t
    tokens = sum(b["tokens"].size for b in batches)
    return {"tokens": tokens, "tok_s": {k: tokens / v for k, v in seconds.items()}}


def _section(args, tp: dict, mem: dict, wall: float) -> tuple[str, float, float]:
    """The RESULTS.md section, R1 and R2."""
    tok_s = tp["tok_s"]
    r1, r1_full = tok_s["record"] / tok_s["stack"], tok_s["record"] / tok_s["forward"]
    r2 = tok_s["record"] / tok_s["naive"]
    n, n4 = args.mem_tokens, 4 * args.mem_tokens
    lines = header("Recording (R1, R2)", __file__) + [
        TIMES,
        "",
        f"{args.threads} torch threads. Model {MODEL}, all {len(LAYERS)} layers x {len(NEURONS)} neurons; "
        f"corpus {CORPUS}; batch {args.batch_size} x {WINDOW} tokens; top-k {TOP_K}, random-k {RANDOM_K}, {STRATA} "
        "(the naive recorder keeps no strata).",
        "",
        f"Throughput over the same {tp['tokens']} tokens, contenders taking turns batch by batch; the "
        f"recorder first saw the {args.warmup_tokens} tokens before them, untimed (its top-k floors "
        "after the first batches of an actor, as over most of a run):",
        "",
        "| contender | tokens/s |",
        "|---|---|",
        f"| plain forward `model(input_ids)` | {tok_s['forward']:.0f} |",
        f"| forward of the decoder stack (no LM head) | {tok_s['stack']:.0f} |",
        f"| recorder (Recorder: fold per batch) | {tok_s['record']:.0f} |",
        f"| naive (keep every activation, top-k at the end) | {tok_s['naive']:.0f} |",
        "",
        f"R1 = recorder / decoder-stack forward = **{r1:.3f}** (goal >= 0.90); recorder / full forward = {r1_full:.3f}.  ",
        f"R2 = recorder / naive = **{r2:.2f}** (goal >= 3).",
        "",
        "Peak RSS of a fresh process over N and 4N tokens (model load included):",
        "",
        "| contender | N tokens | peak MB | 4N tokens | peak MB | growth |",
        "|---|---|---|---|---|---|",
    ]
    for kind in ("record", "naive"):
        a, b = mem[(kind, n)], mem[(kind, n4)]
        lines.append(
            f"| {kind} | {a['tokens']} | {a['peak_rss_mb']:.0f} | {b['tokens']} | {b['peak_rss_mb']:.0f} | "
            f"x{b['peak_rss_mb'] / a['peak_rss_mb']:.2f} |"
        )
    lines += ["", f"Wall time of the benchmark: {wall:.0f} s."]
    return "\n".join(lines), r1, r2


def _tiny_model(folder: Path) -> str:
    """A random-weight 2-layer llama with 64 MLP neurons and the bundled model's tokenizer."""
    import transformers
    from transformers import AutoTokenizer

    from neuronscope.models.bundled import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model(MODEL).path)
    config = transformers.LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=WINDOW,
    )
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def _shards(folder: Path, n_tokens: int, shard_tokens: int) -> int:
    """JSONL shards of Shakespeare's speeches, cycled, ~``n_tokens`` tokens (4 characters a token)
    in shards of ~``shard_tokens``; returns the corpus's bytes."""
    from neuronscope.corpus import load_documents

    folder.mkdir(parents=True, exist_ok=True)
    speeches = list(load_documents(CORPUS))
    total, shard, i = 0, 0, 0
    while total < 4 * n_tokens:
        with open(folder / f"part-{shard:05d}.jsonl", "w", encoding="utf-8") as fh:
            written = 0
            while written < 4 * shard_tokens and total + written < 4 * n_tokens:
                line = json.dumps({"text": speeches[i % len(speeches)]}) + "\n"
                fh.write(line)
                written += len(line)
                i += 1
        total += written
        shard += 1
    return total


def driver_child(corpus: str, model: str, threads: int) -> dict:
    """One whole record stage in this fresh process (its driver): peak RSS, first batch, seconds."""
    import tempfile

    import ray

    from neuronscope.record import record
    from neuronscope.store import Store

    ray.init(num_cpus=max(2, threads), include_dashboard=False, log_to_driver=False)
    cfg = RecordConfig(model=model, corpus=corpus, window=WINDOW, num_actors=1, torch_threads=threads, seed=SEED)
    with tempfile.TemporaryDirectory(prefix="ns-r5-") as out:
        t0 = time.perf_counter()
        summary = record(cfg, Store.open(out))
        seconds = time.perf_counter() - t0
    ray.shutdown()
    return {
        "tokens": summary["n_tokens"],
        "shards": summary["corpus_shards"],
        "seconds": seconds,
        "first_batch_s": summary["first_batch_s"],
        "peak_rss_mb": peak_rss_mb(),
    }


def driver_memory(args) -> None:
    """R5: the record stage's driver memory at N and 4N corpus tokens, and time to first batch."""
    import tempfile

    t0 = time.time()
    runs = []
    with tempfile.TemporaryDirectory(prefix="ns-r5-") as tmp:
        model = _tiny_model(Path(tmp) / "model")
        for n in (args.corpus_tokens, 4 * args.corpus_tokens):
            folder = Path(tmp) / f"corpus-{n}"
            size = _shards(folder, n, args.shard_tokens)
            got = run_child(
                __file__, "--driver-child", f"{folder}/*.jsonl", "--model", model, "--threads", args.threads
            )
            runs.append({**got, "mb": size / (1 << 20)})
    a, b = runs
    r5 = b["peak_rss_mb"] / a["peak_rss_mb"]
    lines = header("Recording driver memory (R5)", __file__) + [
        "The whole `record` stage in a fresh driver process that starts its own Ray, over JSONL shards "
        "of Shakespeare's speeches and over 4 times as many; a tiny random-weight llama (2 layers x 64 "
        f"neurons, the bundled tokenizer) as the subject, so that the corpus is the work; window {WINDOW}, "
        f"one recorder, {args.threads} torch threads. First batch: from the start of the pass to the "
        "first batch a recorder folded (dataset built, recorder started, first shard read and windowed).",
        "",
        "| corpus tokens | shards | MB | driver peak RSS MB | first batch s | stage s |",
        "|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r['tokens']} | {r['shards']} | {r['mb']:.0f} | {r['peak_rss_mb']:.0f} | "
            f"{r['first_batch_s']:.1f} | {r['seconds']:.0f} |"
        )
    lines += [
        "",
        f"R5 = driver peak at 4N / at N tokens = **{r5:.3f}** (goal <= 1.1).",
        "",
        f"Wall time of the benchmark: {time.time() - t0:.0f} s.",
    ]
    text = "\n".join(lines)
    append_results(text, args.results)
    print(text)
    print(f"R5={r5:.3f} first_batch_s={a['first_batch_s']:.1f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=8192, help="tokens for the throughput runs")
    p.add_argument(
        "--warmup-tokens", type=int, default=16384, help="tokens the recorder sees (untimed) before the throughput runs"
    )
    p.add_argument("--mem-tokens", type=int, default=4096, help="N: memory is measured at N and 4N tokens")
    p.add_argument("--batch-size", type=int, default=32, help=f"windows of {WINDOW} tokens per batch")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.md")))
    p.add_argument(
        "--driver-memory", action="store_true", help="R5 instead: the record stage's driver memory over N and 4N tokens"
    )
    p.add_argument("--corpus-tokens", type=int, default=5_000_000, help="R5: N, corpus tokens of the smaller run")
    p.add_argument("--shard-tokens", type=int, default=2_500_000, help="R5: tokens per JSONL shard")
    p.add_argument("--child", choices=["record", "naive"], help=argparse.SUPPRESS)
    p.add_argument("--driver-child", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.driver_child:
        print(json.dumps(driver_child(args.driver_child, args.model, args.threads)))
        return
    if args.driver_memory:
        driver_memory(args)
        return
    if args.child:
        print(json.dumps(child(args.child, args.tokens, args.batch_size, args.threads)))
        return

    t0 = time.time()
    tp = throughput(args)
    flags = ("--batch-size", args.batch_size, "--threads", args.threads)
    mem = {
        (kind, n): run_child(__file__, "--child", kind, "--tokens", n, *flags)
        for kind in ("record", "naive")
        for n in (args.mem_tokens, 4 * args.mem_tokens)
    }
    text, r1, r2 = _section(args, tp, mem, time.time() - t0)
    append_results(text, args.results)
    print(text)
    print(f"R1={r1:.3f} R2={r2:.2f}")


if __name__ == "__main__":
    main()
