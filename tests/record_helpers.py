"""Shared by the record tests: tiny random-weight models of every supported architecture, a
small corpus with ties, and brute-force activations to check the recorder against."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from neuronscope.models import arch
from neuronscope.record.driver import load_windows
from neuronscope.record.hooks import capture, load_model

# transformers config class and its size arguments, per model_type (2 layers, hidden 32)
_GATED = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)
TINY = {
    "gpt2": ("GPT2Config", dict(n_embd=32, n_inner=64, n_layer=2, n_head=4, n_positions=128)),
    "llama": ("LlamaConfig", _GATED),
    "mistral": ("MistralConfig", _GATED),
    "qwen2": ("Qwen2Config", _GATED),
    "qwen3": ("Qwen3Config", {**_GATED, "head_dim": 8}),
    "gemma2": ("Gemma2Config", {**_GATED, "head_dim": 8}),
    "gemma3_text": ("Gemma3TextConfig", {**_GATED, "head_dim": 8}),
    "phi3": ("Phi3Config", _GATED),
}


def tiny_model(model_type: str, vocab_size: int, **overrides):
    """A random-weight CausalLM of ``model_type`` built from its transformers config class."""
    import transformers

    cls_name, kwargs = TINY[model_type]
    config = getattr(transformers, cls_name)(vocab_size=vocab_size, **{**kwargs, **overrides})
    assert config.model_type == model_type
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def save_tiny(model, tokenizer, folder) -> str:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def aim_at_token(model, layer: int, neuron: int, token: int, sign: float = 1.0) -> None:
    """Make the neuron's write direction ``sign`` x the token's unembedding divided by the final
    norm's scale, with the token's unembedding the longest, so that the token ranks first."""
    u = arch.unembedding(model)
    with torch.no_grad():
        u[token] *= 10
        direction = sign * u[token] / arch.final_norm_scale(model)
        arch.write_directions(model, layer)[neuron] = direction


ZERO_NEURON = 5  # tiny_dir zeroes its gate/up rows in the llama: 0 everywhere, a tie on every token


def tiny_dir(folder, tokenizer_dir: str, kind: str) -> str:
    """A saved 3-layer llama with 24 MLP neurons (ZERO_NEURON zeroed) or a gpt2 of 64, in ``folder``."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    if kind == "llama":
        model = tiny_model(
            "llama",
            len(tok),
            hidden_size=16,
            intermediate_size=24,
            num_hidden_layers=3,
            num_attention_heads=2,
            max_position_embeddings=64,
        )
        for layer in model.model.layers:
            layer.mlp.gate_proj.weight.data[ZERO_NEURON] = 0
            layer.mlp.up_proj.weight.data[ZERO_NEURON] = 0
    else:  # n_inner left unset: 4 x hidden size
        model = tiny_model("gpt2", len(tok), n_embd=16, n_inner=None, n_head=2, n_positions=64)
    return save_tiny(model, tok, folder)


@pytest.fixture(scope="module")
def tokenizer_dir():
    from neuronscope.models.bundled import resolve_model

    return resolve_model("bundled:smollm2-135m").path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Varied lines, then one short line repeated: the repeats make identical windows (ties)."""
    rng = np.random.default_rng(0)
    words = [
        "the",
        "a",
        "king",
        "queen",
        "night",
        "day",
        "love",
        "death",
        "sword",
        "crown",
        "rose",
        "thou",
        "art",
        "fair",
    ]
    lines = [" ".join(rng.choice(words, size=rng.integers(3, 12))) for _ in range(40)]
    lines += ["O Romeo"] * 60
    p = tmp_path_factory.mktemp("corpus") / "c.txt"
    p.write_text("\n".join(lines) + "\n")
    return str(p)


def brute(model_dir, cfg):
    """Every neuron's activation at every token, one window at a time: (windows, {layer: (W, T, N)})."""
    from transformers import AutoTokenizer

    windows, _ = load_windows(cfg, AutoTokenizer.from_pretrained(model_dir))
    model, _ = load_model(model_dir)
    layers = list(range(arch.n_layers(model.config)))
    neurons = torch.arange(arch.n_neurons(model.config))
    acts = {layer: [] for layer in layers}
    with capture(model, layers, neurons) as run:
        for w in windows:
            for layer, a in run(torch.as_tensor(w[None], dtype=torch.int64)).items():
                acts[layer].append(a[0].numpy())
    return windows, {layer: np.stack(v) for layer, v in acts.items()}


def expected_top(a: np.ndarray, k: int):
    """(window_id, position, value) of the k best tokens of (windows, T) activations, ties by position."""
    n_win, t = a.shape
    wid, pos = np.divmod(np.arange(n_win * t), t)
    order = np.lexsort((pos, wid, -a.reshape(-1)))[:k]
    return wid[order], pos[order], a.reshape(-1)[order]


def expected_strata(a: np.ndarray, keys: np.ndarray, bins: int, k: int) -> list[list[int]]:
    """Per stratum (lowest octave first), the window ids a neuron's strata must hold: ``a`` its
    (windows, T) activations times the side's sign, ``keys`` its (windows,) strata keys."""
    value = a.max(axis=1)
    peak = value.max()
    if not peak > 0:
        return [[] for _ in range(bins)]
    top = math.frexp(float(peak))[1] - 1  # 2**top <= peak < 2**(top + 1)
    out = []
    for j in range(bins):
        lo = 2.0 ** (top - bins + 1 + j)
        inside = np.flatnonzero((value >= lo) & (value < 2 * lo))
        out.append(sorted(inside.tolist(), key=lambda w: (keys[w], w))[:k])
    return out


def sorted_table(store, prefix: str):
    """A stored table (records/, stats/) in a fixed row order, its list columns as lists: two
    recordings of the same corpus compare equal whatever order their shards were written in."""
    df = store.read_parquet(prefix).to_pandas()
    df = df.sort_values([c for c in ("layer", "neuron", "kind", "rank") if c in df.columns]).reset_index(drop=True)
    for c in ("activations", "tokens", "token_ids", "quantiles", "quantile_levels"):
        if c in df.columns:
            df[c] = [np.asarray(v).tolist() for v in df[c]]
    return df
