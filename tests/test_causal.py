"""The causal check (neuronscope/causal/) on tiny models with a neuron built to be known: its
write direction is a token's unembedding and each of its mode's windows has that token next
after its peak, so ablating it lowers that token's log probability there, far more than a control
neuron's ablation does. Resume, bad input, `show`, and GPT-2's (non-gated) MLP."""

from __future__ import annotations

import numpy as np
import pytest
from causal_helpers import KNOWN, LATER, LAYER, N_MODE, N_RANDOM, OTHER, RECORDED, explain, known_neuron_run
from record_helpers import tokenizer_dir  # noqa: F401  (a fixture)

from neuronscope import layout, manifest, stages
from neuronscope.config import load_config
from neuronscope.errors import ConfigError, NeuronScopeError
from neuronscope.schema import CAUSAL
from neuronscope.show import show_neuron
from neuronscope.status import run_status
from neuronscope.store import Store


@pytest.fixture(scope="module")
def tok(tokenizer_dir):  # noqa: F811
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


def _check(store: Store, **causal) -> dict:
    return stages.run_causal(load_config(None, {"causal": causal}), store.uri, store.uri, print)


def _rows(store: Store) -> dict[int, dict]:
    table = store.read_parquet(layout.causal_key(LAYER))
    assert table.schema == CAUSAL
    return {r["neuron"]: r for r in table.to_pylist()}


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_ablating_the_known_neuron_lowers_its_token_where_it_fires_more_than_the_control(tmp_path, tok, model_type):
    store = known_neuron_run(tmp_path, tok, model_type)
    summary = _check(store)
    known = _rows(store)[KNOWN]
    assert (known["polarity"], known["mode"], known["n_windows"], known["n_random"]) == (1, 0, N_MODE, N_RANDOM)
    assert known["ablation"] == "mean" and known["control_neuron"] in set(RECORDED) - {KNOWN}
    lo, hi = known["causal_effect_ci"]
    assert lo <= known["causal_effect"] <= hi
    # the neuron matters where it fires: its interval lies above the control's, by a wide margin
    assert lo > known["causal_control_ci"][1] and known["causal_effect"] > 10 * known["causal_control"]
    # and it helped predict the token it writes: ablated, the actual next token (king) is less likely
    assert known["causal_logprob"] > 0.1 and known["causal_logprob"] > 10 * abs(known["causal_logprob_control"])
    assert summary["checked"] == summary["neurons"] == 2 and summary["top_mode_above_control"] >= 0.5
    assert manifest.load(store)["stages"]["causal"]["status"] == "done"
    assert "causal: done" in run_status(store.uri) and "  neurons checked: 2;" in run_status(store.uri)


def test_zero_ablation_is_a_setting_and_an_unknown_one_is_refused_by_name(tmp_path, tok):
    store = known_neuron_run(tmp_path, tok, "llama", explained=(KNOWN,))
    _check(store, ablation="zero")
    known = _rows(store)[KNOWN]
    assert known["ablation"] == "zero" and known["ablation_value"] == 0.0
    with pytest.raises(ConfigError, match=r"causal.ablation='median'"):
        load_config(None, {"causal": {"ablation": "median"}})


def test_a_rerun_skips_done_layers_and_checks_only_neurons_explained_since(tmp_path, tok):
    store = known_neuron_run(tmp_path, tok, "llama")
    _check(store)
    key = layout.causal_key(LAYER)
    before, first = store.read_bytes(key), _rows(store)
    again = _check(store)
    assert (again["layers"], again["layers_skipped"], again["checked"]) == (0, 1, 0)
    assert store.read_bytes(key) == before  # not rewritten
    explain(store, LATER)
    more = _check(store)
    assert (more["layers"], more["checked"], more["neurons"]) == (1, 1, 3)
    rows = _rows(store)
    assert sorted(rows) == [OTHER, LATER, KNOWN] and rows[KNOWN] == first[KNOWN]


def test_a_run_without_explanations_is_refused_before_anything_is_written(tmp_path, tok):
    store = known_neuron_run(tmp_path, tok, "llama", explained=())
    with pytest.raises(NeuronScopeError, match="has no explained modes to check causally"):
        _check(store)
    assert "causal" not in manifest.load(store)["stages"] and not store.list(layout.prefix(layout.CAUSAL))


def test_show_prints_each_modes_causal_check_beside_its_control(tmp_path, tok):
    store = known_neuron_run(tmp_path, tok, "llama", explained=(KNOWN,))
    _check(store)
    text = show_neuron(store.uri, LAYER, KNOWN)
    line = next(x for x in text.splitlines() if "causal (" in x)
    assert f"causal (mean ablation, {N_MODE} windows): KL " in line and " vs control " in line
    assert " vs random windows " in line


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_batching_and_the_shared_prefix_change_nothing(tmp_path, tok, model_type):
    """One window per batch recomputes nothing it shares; sixteen share the prefix before the
    earliest peak through the KV cache: the same figures."""
    store = known_neuron_run(tmp_path, tok, model_type)
    _check(store, batch_size=1)
    one = _rows(store)
    store.delete(layout.causal_key(LAYER))
    _check(store, batch_size=16)
    # atol: a KL near 0 (a neuron without effect) is float32 rounding of log-probabilities, which
    # moves with the batch's shape (by 1.2e-7 on an AMD EPYC CPU, where 1e-7 was allowed); the known
    # neuron's effects (1e-4 to 2e-3) are held to rtol
    for n, row in _rows(store).items():
        for col in ("causal_effect", "causal_control", "causal_random", "causal_logprob"):
            np.testing.assert_allclose(row[col], one[n][col], rtol=1e-3, atol=1e-6)


def test_the_atlas_carries_each_modes_causal_check_beside_its_control(tmp_path, tok):
    from neuronscope.atlas import build_atlas

    store = known_neuron_run(tmp_path, tok, "llama")
    _check(store)
    build_atlas(store.uri, None, lambda _: None)
    table = store.read_parquet(f"{layout.ATLAS}/neurons.parquet").to_pandas().set_index("neuron")
    checked = _rows(store)
    for n in (KNOWN, OTHER):
        for col in ("causal_effect", "causal_control", "causal_random", "control_neuron", "n_windows"):
            assert table.loc[n, col] == checked[n][col], col
        assert list(table.loc[n, "causal_effect_ci"]) == checked[n]["causal_effect_ci"]
    assert np.isnan(table.loc[0, "causal_effect"]) and table.loc[0, "status"] == "unexplained"
    assert "causalLine(m)" in store.read_bytes(f"{layout.ATLAS}/atlas.js").decode()
