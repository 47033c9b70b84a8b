"""The output side of every neuron (record/vocab.py) on tiny random-weight models: a neuron aimed
at a token's unembedding promotes it first (gated Llama, GPT-2's transposed Conv1D), every
architecture's accessors agree with the model's own modules, chunks change nothing, and the
table round-trips through the run, `show` and resumes."""

from __future__ import annotations

import json
from operator import attrgetter

import numpy as np
import pandas as pd
import pytest
import torch
from record_helpers import TINY, aim_at_token, save_tiny, tiny_model, tokenizer_dir  # noqa: F401  (a fixture)

from neuronscope import layout
from neuronscope.models import arch
from neuronscope.record.vocab import OutputLens, pending, write_output_tokens
from neuronscope.results import neuron_rows, output_token_keys, read_output_tokens
from neuronscope.schema import OUTPUT_TOKENS
from neuronscope.show import show_neuron
from neuronscope.store import Store

TOKEN = " king"


class Names:
    """A stand-in tokenizer: token i reads "t<i>"."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def batch_decode(self, ids):
        return [f"t{i[0]}" for i in ids]


def _randomise_final_norm(model) -> torch.Tensor:
    """A final norm scale far from uniform, so that leaving it out would show; its weight."""
    norm = attrgetter(arch.site(model.config).final_norm)(model)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(norm.weight.shape, generator=torch.Generator().manual_seed(3)) * 1.5 + 0.25)
    return norm.weight


@pytest.fixture(scope="module")
def tok(tokenizer_dir):  # noqa: F811
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_a_neuron_aimed_at_a_token_promotes_it_first(tok, model_type):
    """Llama: a gated MLP, (d_model, neurons) down_proj, RMSNorm, its own LM head; GPT-2: Conv1D
    c_proj of (neurons, d_model), LayerNorm, tied embeddings."""
    model = tiny_model(model_type, len(tok))
    _randomise_final_norm(model)
    (king,) = tok.encode(TOKEN)
    aim_at_token(model, 1, 7, king)
    aim_at_token(model, 1, 9, king, sign=-1.0)
    lens = OutputLens(model, tok)
    table = lens.table(1, [7, 9, 0])
    assert table.schema == OUTPUT_TOKENS and table.num_rows == 3
    up, down, other = table.to_pylist()
    assert (up["layer"], up["neuron"]) == (1, 7)
    assert up["promoted_ids"][0] == king and up["promoted_tokens"][0] == TOKEN
    assert down["suppressed_ids"][0] == king and down["suppressed_tokens"][0] == TOKEN
    for r in (up, down, other):
        assert len(r["promoted_ids"]) == len(r["suppressed_ids"]) == 10
        assert r["promoted_weights"] == sorted(r["promoted_weights"], reverse=True)
        assert r["suppressed_weights"] == sorted(r["suppressed_weights"])
        assert r["promoted_tokens"] == tok.batch_decode([[i] for i in r["promoted_ids"]])
    assert up["promoted_weights"][0] > 0 > down["suppressed_weights"][0]


def _logits_from_the_modules(model, layer: int, neuron: int) -> torch.Tensor:
    """What one unit of the neuron does to the logits through the model's own down projection,
    final norm and LM head, less what nothing does (the biases), up to the norm's positive factor."""
    s = arch.site(model.config)
    down = attrgetter(s.down)(attrgetter(s.layers)(model)[layer])
    norm, head = attrgetter(s.final_norm)(model), model.get_output_embeddings()
    unit = torch.zeros(1, arch.n_neurons(model.config))
    unit[0, neuron] = 1.0
    with torch.no_grad():
        wrote = down(unit) - down(torch.zeros_like(unit))
        return (head(norm(wrote)) - head(norm(torch.zeros_like(wrote))))[0]


@pytest.mark.parametrize("model_type", sorted(TINY))
def test_every_architecture_reads_its_output_side_as_its_modules_compute_it(model_type):
    model = tiny_model(model_type, vocab_size=256)
    _randomise_final_norm(model)
    neurons = [0, 5, 63]
    ids_hi, w_hi, ids_lo, w_lo = OutputLens(model, Names(256), k=256).rank(1, neurons)
    for i, n in enumerate(neurons):
        expected = _logits_from_the_modules(model, 1, n).numpy()
        np.testing.assert_array_equal(ids_hi[i][:10], np.argsort(-expected, kind="stable")[:10])
        # the same logits up to one positive factor (the norm's division by the RMS or std)
        got = np.empty(256, np.float32)
        got[ids_hi[i]] = w_hi[i]
        factor = float(expected @ got / (got @ got))
        assert factor > 0
        np.testing.assert_allclose(got * factor, expected, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(ids_lo[i], ids_hi[i][::-1])
        np.testing.assert_allclose(w_lo[i], w_hi[i][::-1])


def test_chunks_and_a_padded_unembedding_change_nothing():
    model = tiny_model("llama", vocab_size=300)
    whole = OutputLens(model, Names(250)).table(0, list(range(64)))
    chunked = OutputLens(model, Names(250), chunk_bytes=3 * 250 * 4).table(0, list(range(64)))
    for col in OUTPUT_TOKENS.names:  # the same rows; weights up to the matmul's rounding
        a, b = whole[col].to_pylist(), chunked[col].to_pylist()
        if col.endswith("weights"):
            np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-5, atol=1e-7)
        else:
            assert a == b, col
    ids = np.concatenate(whole["promoted_ids"].to_pylist() + whole["suppressed_ids"].to_pylist())
    assert ids.max() < 250  # the rows past the tokenizer are never ranked


def test_the_table_round_trips_resumes_and_shows(tmp_path, tok):
    model = tiny_model("llama", len(tok))
    (king,) = tok.encode(TOKEN)
    aim_at_token(model, 1, 3, king)
    folder = save_tiny(model, tok, tmp_path / "model")
    store = Store.open(str(tmp_path / "run"))
    neurons = list(range(0, 64, 2))
    assert write_output_tokens(store, folder, [0, 1], neurons, shard_size=16)["parts"] == 8  # 4 shards a layer
    assert sorted(output_token_keys(store)) == [0, 1]
    assert output_token_keys(store)[1] == [layout.output_tokens_key(1, s) for s in range(4)]
    table = store.read_parquet(layout.prefix(layout.OUTPUT_TOKENS))
    assert table.schema == OUTPUT_TOKENS and table.num_rows == 2 * len(neurons)
    back = table.to_pandas().sort_values(["layer", "neuron"])
    assert back[back["layer"] == 1]["neuron"].tolist() == neurons
    expected = OutputLens(model, tok).table(1, neurons).to_pandas()
    pd.testing.assert_frame_equal(back[back["layer"] == 1].reset_index(drop=True), expected)
    # one neuron's row, read with a filter
    row = read_output_tokens(store, output_token_keys(store)[1], 1, 2)
    r = expected[expected["neuron"] == 2].iloc[0]
    assert row["neuron"] == 2 and row["promoted_tokens"] == list(r["promoted_tokens"])
    assert row["suppressed_weights"] == list(r["suppressed_weights"])
    assert read_output_tokens(store, output_token_keys(store)[1], 1, 3) is None  # not selected
    assert read_output_tokens(store, [], 1, 2) is None  # the run has no output side
    assert neuron_rows(store, layout.prefix(layout.OUTPUT_TOKENS), 0, 4)["neuron"].tolist() == [4]
    # a rerun writes nothing (the model is not even loaded); a wider selection only what is missing
    assert write_output_tokens(store, "no/such/model", [0, 1], neurons, 16)["parts"] == 0
    assert write_output_tokens(store, folder, [1], [3], shard_size=16)["parts"] == 0  # its shard is there
    assert pending(store, [0, 1, 2], list(range(64)), 16) == {
        2: {s: list(range(16 * s, 16 * s + 16)) for s in range(4)}
    }
    shown = show_neuron(store.uri, 1, 2).splitlines()
    promotes = next(line.strip() for line in shown if line.strip().startswith("promotes:"))
    suppresses = next(line.strip() for line in shown if line.strip().startswith("suppresses:"))
    first_up = f"{json.dumps(r['promoted_tokens'][0], ensure_ascii=False)} {r['promoted_weights'][0]:+.2f}"
    assert promotes.startswith(f"promotes: {first_up}, ") and promotes.count(", ") == 9
    first_down = f"{json.dumps(r['suppressed_tokens'][0], ensure_ascii=False)} {r['suppressed_weights'][0]:+.2f}"
    assert suppresses.startswith(f"suppresses: {first_down}, ")
