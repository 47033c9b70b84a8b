"""F: the recorder's fold per layer and batch, this tree against a git revision's, on the same activations.

On the bundled SmolLM2-135M, ``--layers`` x all 1536 neurons, windows of the bundled corpus: each
batch's activations are captured once (the hooked forward, untimed), then every contender folds
them into its own running summary, the contenders taking turns in a rotating order so that load
from other processes hits them alike. A contender is a ``LayerFold`` with its exemplar counts:
``--against``'s (its ``neuronscope/record`` modules read from git into a scratch folder) with
that revision's defaults and with this tree's top-k / random-k, and this tree's at its defaults
and with the negative side on. The first ``--warmup-tokens`` fill the lists (a fold works from its
floors after the first batches of an actor, as over most of a run) and are reported apart.

F = this tree's default fold / the revision's default fold, ms per layer and batch after the
warm-up. Appends a section to benchmarks/RESULTS.md; the last printed line is ``F=... F_negative=...``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch
from common import append_results, header

from neuronscope.config import RecordConfig
from neuronscope.record.fold import BatchTokens, LayerFold, token_codes
from neuronscope.record.udf import exemplar_counts

MODEL = "bundled:smollm2-135m"
CORPUS = "bundled:shakespeare"
OLD_MODULES = ("fold", "topk", "bestk")  # the revision's fold imports only these (relatively)
PACKAGE = "record_at_revision"


def _old_record(rev: str, root: Path):
    """The revision's record/fold module, importable beside this tree's."""
    pkg = root / PACKAGE
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name in OLD_MODULES:
        text = subprocess.run(
            ["git", "show", f"{rev}:neuronscope/record/{name}.py"], capture_output=True, text=True, check=True
        ).stdout
        (pkg / f"{name}.py").write_text(text)
    sys.path.insert(0, str(root))
    return importlib.import_module(f"{PACKAGE}.fold")


class Contender:
    """One LayerFold per layer; ``tokens(codes, t)`` makes its per-batch token data."""

    def __init__(self, name: str, folds: dict, tokens):
        self.name, self.folds, self.tokens = name, folds, tokens
        self.seconds: list[float] = []  # per batch, all layers

    def step(self, acts: dict, codes: torch.Tensor, t: int) -> None:
        tokens = self.tokens(codes, t)  # once per batch for every layer, as the recorder does
        start = time.perf_counter()
        for layer, a in acts.items():
            self.folds[layer].add(a, tokens)
        self.seconds.append(time.perf_counter() - start)


def _contenders(args, layers: list[int], old) -> list[Contender]:
    cfg = RecordConfig(model=MODEL, corpus=CORPUS)
    idx = torch.arange(1536)
    rate = cfg.quantile_sample
    new_tokens = lambda codes, t: BatchTokens.of(codes, cfg.seed, rate, t)
    old_tokens = lambda codes, t: old.BatchTokens.of(codes, cfg.seed, rate)
    out = []
    for top_k, random_k in ((args.old_top_k, args.old_random_k), (cfg.top_k, cfg.random_k)):
        folds = {layer: old.LayerFold(layer, idx, top_k, random_k, cfg.seed, rate) for layer in layers}
        out.append(Contender(f"{args.against}, top-k {top_k}, random-k {random_k}", folds, old_tokens))
    for negative in ("off", "on"):
        counts = exemplar_counts(cfg.model_copy(update={"negative": negative}), signed=True)
        folds = {layer: LayerFold(layer, idx, counts, cfg.seed, rate) for layer in layers}
        name = f"this tree, top-k {counts.top_k}, random-k {counts.random_k}, strata {counts.quantile_bins} x {counts.quantile_k}"
        if counts.negative:
            name += f", negative side (bottom-k {counts.bottom_k}, its strata)"
        out.append(Contender(name, folds, new_tokens))
    return out


def measure(args) -> tuple[list[Contender], int, float]:
    """Every contender over the same batches; also the batches of the warm-up and the forward's s/batch."""
    from transformers import AutoTokenizer

    from neuronscope.models.bundled import resolve_model
    from neuronscope.record.driver import load_windows
    from neuronscope.record.hooks import capture, load_model

    torch.set_num_threads(args.threads)
    layers = [int(x) for x in args.layers.split(",")]
    path = resolve_model(MODEL).path
    model = load_model(path, "cpu")[0]
    cfg = RecordConfig(model=MODEL, corpus=CORPUS, max_tokens=args.warmup_tokens + args.tokens)
    windows = load_windows(cfg, AutoTokenizer.from_pretrained(path))[0]
    with tempfile.TemporaryDirectory() as scratch:
        contenders = _contenders(args, layers, _old_record(args.against, Path(scratch)))
        forward = []
        with capture(model, layers, torch.arange(1536)) as run:
            for i, start in enumerate(range(0, len(windows), args.batch_size)):
                ids = torch.as_tensor(windows[start : start + args.batch_size], dtype=torch.int64)
                t0 = time.perf_counter()
                acts = run(ids)
                forward.append(time.perf_counter() - t0)
                codes = token_codes(torch.arange(start, start + len(ids)), ids.shape[1])
                for c in contenders[i % len(contenders) :] + contenders[: i % len(contenders)]:
                    c.step(acts, codes, ids.shape[1])
    warm = -(-args.warmup_tokens // (cfg.window * args.batch_size))
    return contenders, warm, float(np.mean(forward))


def _section(args, contenders: list[Contender], warm: int, forward_s: float) -> tuple[str, float, float]:
    n_layers = len(args.layers.split(","))
    per = lambda c, sl: 1000 * float(np.mean(c.seconds[sl])) / n_layers
    base, new, neg = (per(contenders[i], slice(warm, None)) for i in (0, 2, 3))
    lines = header("Fold per layer and batch (F)", __file__) + [
        f"{args.threads} torch threads; model {MODEL}, layers {args.layers} x 1536 neurons; corpus {CORPUS}; "
        f"batch {args.batch_size} x 64 tokens. Each batch captured once (hooked forward {1000 * forward_s:.0f} ms "
        f"per batch for these layers), then folded by every contender in turn, rotating who goes first.",
        "",
        f"| contender | ms per layer and batch, first {warm} batches | after them ({len(contenders[0].seconds) - warm} batches) |",
        "|---|---|---|",
    ]
    lines += [f"| {c.name} | {per(c, slice(0, warm)):.1f} | {per(c, slice(warm, None)):.1f} |" for c in contenders]
    lines += [
        "",
        f"F = this tree's default fold / {args.against}'s default fold after the warm-up = **{new / base:.2f}**; "
        f"with the negative side: {neg / base:.2f}. A whole-model batch folds 30 such layers.",
        f"Load average (1 / 5 / 15 min) at the end: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}.",
    ]
    return "\n".join(lines), new / base, neg / base


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--against", default="main", help="git revision whose fold is the baseline")
    p.add_argument("--old-top-k", type=int, default=20, help="the baseline's default top-k")
    p.add_argument("--old-random-k", type=int, default=20, help="the baseline's default random-k")
    p.add_argument("--layers", default="3,15,27", help="layers captured and folded")
    p.add_argument("--tokens", type=int, default=40960, help="tokens timed after the warm-up")
    p.add_argument("--warmup-tokens", type=int, default=16384, help="tokens folded first, reported apart")
    p.add_argument("--batch-size", type=int, default=32, help="windows of 64 tokens per batch")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.md")))
    args = p.parse_args()
    t0 = time.time()
    contenders, warm, forward_s = measure(args)
    text, f, f_neg = _section(args, contenders, warm, forward_s)
    text += f"\n\nWall time of the benchmark: {time.time() - t0:.0f} s."
    append_results(text, args.results)
    print(text)
    print(f"F={f:.3f} F_negative={f_neg:.3f}")


if __name__ == "__main__":
    main()
