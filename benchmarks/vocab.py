"""The output side of every neuron (``neuronscope/record/vocab.py``) for the whole bundled model.

On the bundled SmolLM2-135M, ``--layers`` x ``--neurons`` (default all 30 x 1536 = 46,080): the
OUTPUT_TOKENS table as the record stage writes it, into a scratch run, end to end: the model and
tokenizer loaded, the vocabulary decoded, each layer's down-projection columns scaled by the
final norm and projected through the unembedding, the top and bottom 10 tokens kept, the parts
written. Beside it, the projection and top-k alone (the model already loaded).

vocab_s = the end-to-end seconds (goal <= 60 for the whole model). Appends a section to
benchmarks/RESULTS.md; the last printed line is ``vocab_s=... neurons=... per_layer_s=...``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from common import append_results, header

from neuronscope.layout import OUTPUT_TOKENS, prefix
from neuronscope.models import arch
from neuronscope.models.bundled import resolve_model
from neuronscope.record.driver import SHARD_NEURONS
from neuronscope.record.hooks import load_model
from neuronscope.record.vocab import TOP_K, OutputLens, write_output_tokens
from neuronscope.selection import parse_selection
from neuronscope.store import Store

MODEL = "bundled:smollm2-135m"
GOAL_S = 60.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", default=None, help="layers, e.g. '0-5'; default all")
    ap.add_argument("--neurons", default=None, help="neurons of each layer, e.g. '0-255'; default all")
    ap.add_argument("--results", default=None, help="the RESULTS.md to append to")
    args = ap.parse_args()

    path = resolve_model(MODEL).path
    model, device = load_model(path)
    layers = parse_selection(args.layers, arch.n_layers(model.config), "layer")
    neurons = parse_selection(args.neurons, arch.n_neurons(model.config), "neuron")
    n = len(layers) * len(neurons)
    del model

    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(tmp)
        t0 = time.perf_counter()
        done = write_output_tokens(store, path, layers, neurons, SHARD_NEURONS)
        total = time.perf_counter() - t0
        rows = store.read_parquet(prefix(OUTPUT_TOKENS)).num_rows
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(tmp) for f in fs)
    assert rows == n, (rows, n)

    # the projection and top-k alone, the model loaded and the vocabulary decoded beforehand
    from transformers import AutoTokenizer

    model, _ = load_model(path)
    t = time.perf_counter()
    lens = OutputLens(model, AutoTokenizer.from_pretrained(path))
    setup = time.perf_counter() - t
    per_layer = []
    for layer in layers:
        t = time.perf_counter()
        lens.rank(layer, neurons)
        per_layer.append(time.perf_counter() - t)
    compute = sum(per_layer)
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    cfg = model.config
    vocab, d_model = lens.unembed.shape

    text = "\n".join(
        header("Output tokens of every neuron (vocab.py)", __file__)
        + [
            f"{len(layers)} layers x {len(neurons)} neurons = {n:,} neurons of {MODEL}: down-projection columns "
            f"(d_model {d_model}) x final-norm scale x unembedding ({vocab:,} tokens), top and bottom {TOP_K} "
            f"per neuron, on {device} with {torch.get_num_threads()} torch threads "
            f"({cfg.model_type}, {'tied' if getattr(cfg, 'tie_word_embeddings', False) else 'own'} LM head).",
            "",
            "| measure | value |",
            "|---|---|",
            f"| **vocab_s**: `write_output_tokens` end to end, model load to the last part (goal <= {GOAL_S:.0f}) "
            f"| **{total:.1f}** |",
            f"| parts written / rows | {done['parts']} / {rows:,} |",
            f"| size on disk | {size / 1e6:.1f} MB |",
            f"| projection and top-k alone, all layers | {compute:.1f} s |",
            f"| per layer, median (min-max) | {sorted(per_layer)[len(per_layer) // 2]:.2f} s "
            f"({min(per_layer):.2f}-{max(per_layer):.2f}) |",
            f"| scaled unembedding and vocabulary decoded once | {setup:.2f} s |",
            f"| load average (1 / 5 / 15 min) at the end | {load} |",
        ]
    )
    print(text)
    if args.results:
        append_results(text, args.results)
    else:
        append_results(text)
    print(f"vocab_s={total:.1f} neurons={n} per_layer_s={compute / len(layers):.2f}")


if __name__ == "__main__":
    main()
