"""The architecture table on tiny random-weight models of every supported family: the hooked
activations equal the MLP's own computation from its input, and one full record run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from record_helpers import TINY, brute, expected_top, save_tiny, tiny_model

from neuronscope.config import RecordConfig
from neuronscope.errors import ModelError
from neuronscope.models import arch
from neuronscope.record import record
from neuronscope.record.hooks import capture, load_model
from neuronscope.store import Store


def _neurons_from_input(model_type: str, mlp, x: torch.Tensor) -> torch.Tensor:
    """The MLP neuron activations computed from the MLP's input with its own weights."""
    if model_type == "gpt2":
        return mlp.act(mlp.c_fc(x))
    if model_type == "phi3":  # gate and up projections fused in one matrix
        gate, up = mlp.gate_up_proj(x).chunk(2, dim=-1)
        return mlp.activation_fn(gate) * up
    return mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x)


def _blocks(model):
    return model.transformer.h if model.config.model_type == "gpt2" else model.model.layers


@pytest.mark.parametrize("model_type", sorted(TINY))
def test_hooks_capture_the_mlp_neurons(model_type):
    model = tiny_model(model_type, vocab_size=256)
    assert model.config.model_type in arch.ARCHITECTURES
    assert arch.n_layers(model.config) == 2 and arch.n_neurons(model.config) == 64
    inputs: dict[int, torch.Tensor] = {}
    handles = [
        b.mlp.register_forward_pre_hook(lambda m, args, i=i: inputs.__setitem__(i, args[0]))
        for i, b in enumerate(_blocks(model))
    ]
    ids = torch.randint(0, 256, (3, 10), generator=torch.Generator().manual_seed(1))
    neurons = torch.tensor([0, 5, 17, 63])
    with capture(model, [0, 1], neurons) as run:
        got = run(ids)
    for h in handles:
        h.remove()
    for layer in (0, 1):
        with torch.inference_mode():
            expected = _neurons_from_input(model_type, _blocks(model)[layer].mlp, inputs[layer])[..., neurons]
        assert got[layer].shape == (3, 10, 4)
        torch.testing.assert_close(got[layer], expected.float(), rtol=1e-5, atol=1e-6)
        assert got[layer].abs().max() > 0


def test_unknown_architecture_names_it_and_the_supported_list(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert", "architectures": ["BertModel"]}')
    with pytest.raises(ModelError, match=r"'bert'.*gemma3_text.*gpt2.*llama.*mistral.*phi3.*qwen2.*qwen3"):
        load_model(str(tmp_path))


def test_record_run_on_phi3(ray_local, tmp_path_factory, tokenizer_dir, corpus):
    """One Ray run on a fused-MLP architecture: the recorded top-k is the brute-force one."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    model_dir = save_tiny(
        tiny_model("phi3", len(tok), hidden_size=16, num_attention_heads=2), tok, tmp_path_factory.mktemp("phi3")
    )
    cfg = RecordConfig(
        model=model_dir, corpus=corpus, window=16, top_k=3, random_k=2, batch_size=8, neurons="0-7", layers="1"
    )
    store = Store.open(str(tmp_path_factory.mktemp("run")))
    summary = record(cfg, store)
    assert summary["shards_recorded"] == 1 and summary["output_token_shards"] == 1
    # the output side of the same neurons, from the weights
    outputs = store.read_parquet("output_tokens/").to_pandas()
    assert outputs["layer"].tolist() == [1] * 8 and outputs["neuron"].tolist() == list(range(8))
    assert all(len(t) == 10 for t in outputs["promoted_tokens"])
    _, acts = brute(model_dir, cfg)
    top = store.read_parquet("records/").to_pandas().query("kind == 'top'")
    assert sorted(set(top.neuron)) == list(range(8))
    for neuron, g in top.groupby("neuron"):
        wid, pos, val = expected_top(acts[1][:, :, neuron], cfg.top_k)
        g = g.sort_values("rank")
        np.testing.assert_array_equal(g.window_id, wid)
        np.testing.assert_array_equal(g.max_pos, pos)
        np.testing.assert_allclose(g.max_act, val, rtol=1e-5, atol=1e-6)
