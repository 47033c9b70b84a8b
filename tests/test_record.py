"""The record stage on tiny random-weight models: exactness against brute force, determinism,
stats, GPT-2 hooks, schema."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from record_helpers import TINY, ZERO_NEURON, brute, expected_strata, expected_top, tiny_dir, tiny_model

from neuronscope.config import RecordConfig
from neuronscope.errors import ConfigError, CorpusError, ModelError, NeuronScopeError
from neuronscope.layout import output_tokens_key, records_key, stats_key
from neuronscope.models import arch
from neuronscope.record import record
from neuronscope.record.bestk import PAD_CODE
from neuronscope.record.fold import LayerFold, token_codes
from neuronscope.record.hashing import sample_keys, strata_keys
from neuronscope.record.topk import EDGES, N_BINS, QUANTILE_LEVELS, Counts, Summary, hist_rows, histogram
from neuronscope.results.records import read_neuron
from neuronscope.schema import OUTPUT_TOKENS, RECORDS, STATS
from neuronscope.store import Store

WINDOW = 16
SHARD = 10  # neurons per output part in the tiny-model runs
ROW_GROUP = 50  # rows per row group of a records part in the tiny-model runs: several per part


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory, tokenizer_dir):
    return tiny_dir(tmp_path_factory.mktemp("llama"), tokenizer_dir, "llama")


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory, tokenizer_dir):
    return tiny_dir(tmp_path_factory.mktemp("gpt2"), tokenizer_dir, "gpt2")


def _cfg(model, corpus, **kw):
    # every token in the quantile histogram, so that quantiles can be checked against exact ones
    # both sides, and strata small enough that some fill and sample (the corpus has ~60 windows)
    base = dict(
        model=model,
        corpus=corpus,
        window=WINDOW,
        top_k=6,
        random_k=5,
        quantile_k=3,
        negative="on",
        bottom_k=4,
        batch_size=4,
        seed=3,
        quantile_sample=1.0,
    )
    return RecordConfig(**{**base, **kw})


def _run(ray_local, tmp_path, cfg, progress=None):
    store = Store.open(str(tmp_path))
    summary = record(cfg, store, progress)
    return summary, store


def _read(store, prefix):
    df = store.read_parquet(prefix).to_pandas()
    return df.sort_values([c for c in ("layer", "neuron", "kind", "rank") if c in df.columns]).reset_index(drop=True)


def _assert_same(a, b):
    a, b = a.reset_index(drop=True), b.reset_index(drop=True)
    floats = [c for c in ("mean", "std", "max_act") if c in a.columns]
    lists = [c for c in ("activations", "promoted_weights", "suppressed_weights") if c in a.columns]
    other = [c for c in a.columns if c not in floats + lists]
    assert a[other].astype(str).equals(b[other].astype(str))
    np.testing.assert_allclose(a[floats].to_numpy(float), b[floats].to_numpy(float), rtol=1e-5, atol=1e-6)
    for c in lists:
        np.testing.assert_allclose(np.stack(a[c]), np.stack(b[c]), rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def llama_run(ray_local, tmp_path_factory, llama_dir, corpus):
    from neuronscope.record import driver

    cfg = _cfg(llama_dir, corpus)
    root = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(driver, "SHARD_NEURONS", SHARD)  # 24 neurons: parts 0, 1, 2 per layer
        mp.setattr(driver, "RECORDS_ROW_GROUP_ROWS", ROW_GROUP)
        summary, store = _run(ray_local, root, cfg)
    store.local_root = root
    return cfg, summary, store


def test_topk_exact_against_brute_force(llama_run, llama_dir):
    cfg, summary, store = llama_run
    windows, acts = brute(llama_dir, cfg)
    assert summary["n_windows"] == len(windows) and summary["n_tokens"] == windows.size
    rec = _read(store, "records/")
    top = rec[rec.kind == "top"]
    n_neurons = acts[0].shape[2]
    assert sorted(set(top.layer)) == [0, 1, 2] and len(top) == 3 * n_neurons * cfg.top_k
    for (layer, neuron), g in top.groupby(["layer", "neuron"]):
        a = acts[layer][:, :, neuron]
        wid, pos, val = expected_top(a, cfg.top_k)
        g = g.sort_values("rank")
        np.testing.assert_array_equal(g.window_id, wid)
        np.testing.assert_array_equal(g.max_pos, pos)
        np.testing.assert_allclose(g.max_act, val, rtol=1e-5, atol=1e-6)
        for _, r in g.iterrows():
            np.testing.assert_array_equal(r.token_ids, windows[r.window_id])
            np.testing.assert_allclose(r.activations, a[r.window_id], rtol=1e-5, atol=1e-6)
            assert len(r.tokens) == WINDOW
    zero = top[top.neuron == ZERO_NEURON]
    # all activations tie at 0: the first k tokens of the corpus, in order
    assert (zero.max_act == 0).all() and (zero.window_id == 0).all()
    assert list(zero[zero.layer == 0].sort_values("rank").max_pos) == list(range(cfg.top_k))


def test_bottomk_exact_against_brute_force(llama_run, llama_dir):
    cfg, summary, store = llama_run
    _windows, acts = brute(llama_dir, cfg)
    rec = _read(store, "records/")
    bottom = rec[rec.kind == "bottom"]
    assert summary["negative"] and len(bottom) == 3 * acts[0].shape[2] * cfg.bottom_k
    for (layer, neuron), g in bottom.groupby(["layer", "neuron"]):
        a = acts[layer][:, :, neuron]
        wid, pos, val = expected_top(-a, cfg.bottom_k)  # the most negative first, ties as top-k's
        g = g.sort_values("rank")
        np.testing.assert_array_equal(g.window_id, wid)
        np.testing.assert_array_equal(g.max_pos, pos)
        np.testing.assert_allclose(g.max_act, -val, rtol=1e-5, atol=1e-6)
        for _, r in g.iterrows():
            np.testing.assert_allclose(r.activations, a[r.window_id], rtol=1e-5, atol=1e-6)
    zero = bottom[(bottom.neuron == ZERO_NEURON) & (bottom.layer == 0)].sort_values("rank")
    assert (zero.window_id == 0).all() and list(zero.max_pos) == list(range(cfg.bottom_k))


def test_strata_exact_against_brute_force(llama_run, llama_dir):
    """Both sides' strata: the octave range from the final max, per stratum the quantile_k
    smallest keys of the windows inside it, each with its window's activations and extreme."""
    cfg, _, store = llama_run
    windows, acts = brute(llama_dir, cfg)
    rec = _read(store, "records/")
    sizes = []
    for layer, a_layer in acts.items():
        n = a_layer.shape[2]
        for sign, prefix in ((1, "quantile_"), (-1, "negative_quantile_")):
            keys = strata_keys(cfg.seed, layer, torch.arange(n), torch.arange(len(windows)), sign).numpy()
            mine = rec[(rec.layer == layer) & rec.kind.str.startswith(prefix)]
            for neuron in range(n):
                a = a_layer[:, :, neuron]
                want = expected_strata(sign * a, keys[:, neuron], cfg.quantile_bins, cfg.quantile_k)
                for j, wids in enumerate(want):
                    g = mine[(mine.neuron == neuron) & (mine.kind == f"{prefix}{j}")].sort_values("rank")
                    assert list(g.window_id) == wids, (layer, neuron, sign, j)
                    assert list(g["rank"]) == list(range(len(wids)))
                    for _, r in g.iterrows():
                        w = a[r.window_id]
                        np.testing.assert_allclose(r.activations, w, rtol=1e-5, atol=1e-6)
                        assert r.max_pos == (w.argmax() if sign > 0 else w.argmin())
                        assert r.max_act == pytest.approx((sign * w).max() * sign, rel=1e-5)
                    sizes.append(len(wids))
            assert len(mine) == sum(sizes[-n * cfg.quantile_bins :])
    # sampled strata (full, more windows than k inside), partial ones and empty ones all occur
    assert {0, cfg.quantile_k} <= set(sizes) and len(set(sizes)) > 2


def test_a_recorded_neuron_exports_its_strata_in_their_places(llama_run):
    from neuronscope.record.interop import export_neuron

    cfg, _, store = llama_run
    rec = _read(store, "records/")
    q = rec[rec.kind.str.startswith("quantile_")]
    sizes = q.groupby(["layer", "neuron", "kind"]).size().unstack(fill_value=0)
    layer, neuron = next(i for i, r in sizes.iterrows() if (r == 0).any() and r.iloc[-1] > 0)  # an empty stratum
    exported = export_neuron(str(store.local_root), layer, neuron)
    assert [len(b) for b in exported["random_sample_by_quantile"]] == list(sizes.loc[(layer, neuron)])
    peak = rec[(rec.layer == layer) & (rec.neuron == neuron) & (rec.kind == "top")].max_act.max()
    edges = exported["quantile_boundaries"]
    assert len(edges) == cfg.quantile_bins - 1 and edges[-1] <= peak < 2 * edges[-1]


@pytest.mark.parametrize("batch_size,actors", [(3, 2), (64, 1)])
def test_same_result_for_any_batching(llama_run, ray_local, tmp_path, batch_size, actors, monkeypatch):
    from neuronscope.record import driver

    cfg, _, store = llama_run
    # Once the session's vLLM engine is up it holds one of the 2 CPUs: the second recorder is then
    # never placed, and the pass would wait the whole ACTOR_WAIT_S (10 min) before running with one.
    monkeypatch.setattr(driver, "ACTOR_WAIT_S", 45.0)
    _, other = _run(ray_local, tmp_path, cfg.model_copy(update=dict(batch_size=batch_size, num_actors=actors)))
    kinds = set(_read(store, "records/").kind)
    assert {"top", "random", "bottom", "quantile_3", "negative_quantile_0"} <= kinds
    for prefix in ("records/", "stats/"):
        _assert_same(_read(store, prefix), _read(other, prefix))


@pytest.fixture
def hold_cpus(ray_local):
    """Hold CPUs of the test Ray (as an LLM engine would) so that exactly ``n`` stay free."""
    held = []

    @ray_local.remote
    class Holder:
        def ready(self):
            return True

    def hold(n: int) -> None:
        # Until exactly n are free: the session's vLLM engine may hold one already, and actors of
        # earlier tests may still be releasing theirs.
        deadline = time.monotonic() + 120
        while (free := int(ray_local.available_resources().get("CPU", 0))) != n:
            assert time.monotonic() < deadline, f"{free} CPUs free, never {n}"
            if free > n:
                held.append(Holder.options(num_cpus=free - n).remote())
                ray_local.get(held[-1].ready.remote())
            else:
                time.sleep(0.1)

    def release() -> None:
        """Free what is held (as an autoscaler's new node would bring CPUs)."""
        for h in held:
            ray_local.kill(h)
        held.clear()

    hold.release = release
    yield hold
    release()


def test_no_recorder_started_is_a_clear_error_after_a_bounded_wait(llama_run, ray_local, hold_cpus, monkeypatch):
    from neuronscope.record import driver

    cfg, _, _ = llama_run
    hold_cpus(0)
    monkeypatch.setattr(driver, "ACTOR_WAIT_S", 3.0)
    monkeypatch.setattr(driver, "PROGRESS_EVERY_S", 1.0)
    seen: list[str] = []
    message = r"no recording actor \(1 CPU each\) started in 3 s on the Ray cluster \(2 CPUs, 0 GPUs in all\)"
    with pytest.raises(NeuronScopeError, match=message):
        driver._start_recorders(cfg.model_copy(update=dict(num_actors=2)), ([0], [0, 1]), seen.append)
    assert any("0/2 recording actors up" in m and "(0 CPUs free now)" in m for m in seen), seen


def test_a_recorder_is_requested_and_starts_when_a_cpu_comes_free(
    llama_run, ray_local, tmp_path, hold_cpus, monkeypatch
):
    """Every CPU held by other work at the start (an autoscaler about to add a node): the recorder
    is requested anyway, waited for with a progress line, and records once the CPU is free."""
    from neuronscope.record import driver

    cfg, _, store = llama_run
    hold_cpus(0)
    monkeypatch.setattr(driver, "PROGRESS_EVERY_S", 1.0)
    seen: list[str] = []
    threading.Timer(4.0, hold_cpus.release).start()
    _, other = _run(ray_local, tmp_path, cfg.model_copy(update=dict(num_actors=1)), progress=seen.append)
    assert any("0/1 recording actors up" in m for m in seen), seen
    for prefix in ("records/", "stats/"):
        _assert_same(_read(store, prefix), _read(other, prefix))


def test_recorders_the_cluster_cannot_place_in_time_are_left_out(
    llama_run, ray_local, tmp_path, hold_cpus, monkeypatch
):
    """Other work holding all CPUs but one: of two recorders requested one starts; after the
    bounded wait the pass runs with it (a streaming split cannot wait for a reader that never comes)."""
    from neuronscope.record import driver

    cfg, _, store = llama_run
    hold_cpus(1)
    monkeypatch.setattr(driver, "ACTOR_WAIT_S", 45.0)
    seen: list[str] = []
    _, other = _run(ray_local, tmp_path, cfg.model_copy(update=dict(num_actors=2)), progress=seen.append)
    assert any("1 of 2 recording actors started in 45 s; recording with 1" in m for m in seen), seen
    for prefix in ("records/", "stats/"):
        _assert_same(_read(store, prefix), _read(other, prefix))


def _own_recorders():
    """The recorder actors' worker processes of this test session's Ray (started under this
    process): never another program's."""
    import psutil

    me = os.getpid()
    for p in psutil.process_iter(["cmdline"]):
        if any("ray::Recorder" in c for c in p.info["cmdline"] or []):
            try:
                if me in {q.pid for q in p.parents()}:
                    yield p
            except psutil.NoSuchProcess:
                continue


def _kill_first_recorder(running, before: set[int]) -> int | None:
    """SIGKILL the first of our recorder actors' worker processes to appear (not one of
    ``before``, recorders of earlier runs that may still be going away), loading its model or
    folding; its pid, or None if the pass ended before one was seen."""
    while running.is_alive():
        for p in _own_recorders():
            if p.pid not in before:
                p.kill()
                return p.pid
        time.sleep(0.01)
    return None


@pytest.mark.slow
def test_a_recorder_killed_mid_pass_is_retried_and_the_result_is_unchanged(llama_run, ray_local, tmp_path):
    cfg, _, store = llama_run
    seen: list[str] = []
    done: dict = {}
    running = threading.Thread(target=lambda: done.update(run=_run(ray_local, tmp_path, cfg, seen.append)))
    before = {p.pid for p in _own_recorders()}
    running.start()
    killed = _kill_first_recorder(running, before)
    running.join()
    assert killed is not None and "run" in done, seen
    assert any("a recording actor died" in m and "starting the pass over (2/3)" in m for m in seen), seen
    for prefix in ("records/", "stats/"):
        _assert_same(_read(store, prefix), _read(done["run"][1], prefix))


def test_random_sample_and_stats(llama_run, llama_dir):
    cfg, _, store = llama_run
    _windows, acts = brute(llama_dir, cfg)
    rec = _read(store, "records/")
    rnd = rec[rec.kind == "random"]
    assert len(rnd) == 3 * acts[0].shape[2] * cfg.random_k
    for _, r in rnd.iterrows():
        np.testing.assert_allclose(r.activations, acts[r.layer][r.window_id, :, r.neuron], rtol=1e-5, atol=1e-6)
        assert r.max_act == pytest.approx(max(r.activations))
    # neurons draw different samples; another seed draws another sample
    per_neuron = rnd[rnd.layer == 0].groupby("neuron").window_id.apply(tuple)
    assert per_neuron.nunique() > 1
    code = torch.arange(1000)
    keys = [sample_keys(seed, 0, torch.arange(4), code) for seed in (cfg.seed, cfg.seed, cfg.seed + 1)]
    assert torch.equal(keys[0], keys[1]) and not torch.equal(keys[0], keys[2]) and (keys[0] >= 0).all()
    assert len(torch.unique(keys[0])) == keys[0].numel()

    stats = _read(store, "stats/")
    for _, s in stats.iterrows():
        a = acts[s.layer][:, :, s.neuron].reshape(-1).astype(np.float64)
        assert s.n_tokens == a.size
        assert s["mean"] == pytest.approx(a.mean(), abs=1e-6)
        assert s["std"] == pytest.approx(a.std(), rel=1e-4, abs=1e-6)
        assert s["min"] == pytest.approx(a.min()) and s["max"] == pytest.approx(a.max())
        assert list(s.quantile_levels) == pytest.approx(list(QUANTILE_LEVELS))
        exact = np.quantile(a, QUANTILE_LEVELS, method="inverted_cdf")
        # histogram sketch: within half a bin (8 per octave) of the exact value, or tiny
        for q, e in zip(s.quantiles, exact):
            assert abs(q - e) <= 0.062 * abs(e) + 2e-4, (s.layer, s.neuron, q, e)


COUNTS = Counts(4, 3, quantile_bins=3, quantile_k=2, negative=True, bottom_k=3)


def _summarize(acts: torch.Tensor, batch: int, hist_rate: float, actors: int) -> Summary:
    """Summary of (windows, T, neurons) acts fed in batches of ``batch`` windows, in shuffled order,
    dealt round-robin to ``actors`` folds (each skipping what cannot beat its own floors), merged."""
    folds = [LayerFold(2, torch.arange(acts.shape[2]), COUNTS, 7, hist_rate) for _ in range(actors)]
    starts = list(range(0, len(acts), batch))
    for i, start in enumerate(np.random.default_rng(batch).permutation(starts).tolist()):
        wids = torch.arange(start, min(start + batch, len(acts)))
        folds[i % actors].add(acts[wids], token_codes(wids, acts.shape[1]))
    s = folds[0].finish()
    for f in folds[1:]:
        s.merge(f.finish())
    return s


def test_summaries_do_not_depend_on_batching_and_sampled_quantiles(monkeypatch):
    from neuronscope.record import fold, topk

    g = torch.Generator().manual_seed(1)
    acts = (torch.randn(40, 8, 6, generator=g) * torch.logspace(-1, 2, 6)).round(decimals=1)  # ties
    acts[:, :, 0] = 0.5
    one = _summarize(acts, len(acts), 0.25, 1)
    # floors from the batches before: candidate windows only, all dense, or split by neuron
    # the last: the int32 histogram added into the Summary's every 5 tokens, not at the end only
    for batch, actors, sparse_windows, flush in [
        (1, 1, 4, 1 << 30),
        (3, 1, 4, 1 << 30),
        (7, 1, 4, 1 << 30),
        (7, 3, 4, 1 << 30),
        (7, 1, 2, 1 << 30),
        (2, 2, 2, 5),
    ]:
        monkeypatch.setattr(topk, "SPARSE_WINDOWS", sparse_windows)
        monkeypatch.setattr(fold, "HIST_FLUSH_TOKENS", flush)
        other = _summarize(acts, batch, 0.25, actors)
        for name in ("rnd_key", "rnd_code", "rnd_val", "rnd_win", "hist", "min", "max"):
            np.testing.assert_array_equal(getattr(one, name), getattr(other, name), err_msg=name)
        for side in ("top", "bottom"):
            a, b = getattr(one, side), getattr(other, side)
            for name in ("val", "code", "win"):
                np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=f"{side} {name}")
            for name in ("top", "key", "code", "val", "win"):
                np.testing.assert_array_equal(
                    getattr(a.strata, name), getattr(b.strata, name), err_msg=f"{side} strata {name}"
                )
        np.testing.assert_allclose(one.sum, other.sum, rtol=1e-5)
    # all tied: the first tokens, at either end; every window in the top octave, none negative
    assert list(one.top.code[0]) == [0, 1, 2, 3] and list(one.bottom.code[0]) == [0, 1, 2]
    strata = one.top.strata.code[0]
    assert (strata[:-1] == PAD_CODE).all() and (strata[-1] != PAD_CODE).all()
    assert (one.bottom.strata.code[0] == PAD_CODE).all()
    # the histogram counts the same hash-chosen quarter of the tokens for every neuron
    code = ((torch.arange(40)[:, None] << 20) + torch.arange(8)).reshape(-1)
    counted = hist_rows(7, code, 0.25)
    assert one.hist_count == len(counted) and 0.1 < len(counted) / len(code) < 0.4
    exact = np.quantile(
        acts.reshape(-1, 6)[counted].numpy().astype(np.float64), QUANTILE_LEVELS, axis=0, method="inverted_cdf"
    ).T
    assert np.all(np.abs(one.quantiles(QUANTILE_LEVELS) - exact) <= 0.062 * np.abs(exact) + 2e-4)
    assert np.isnan(Summary(2, COUNTS).quantiles(QUANTILE_LEVELS)).all()  # nothing counted


def test_histogram_bins_match_their_edges():
    x = torch.randn(300, 5) * 10 ** torch.empty(300, 5).uniform_(-6, 6)
    x[:7, 0] = torch.tensor([0.0, -0.0, 2**-13, -(2**-13), 2**13, float("inf"), 1.0])
    m = np.searchsorted(EDGES, np.abs(x.numpy()), side="right")  # 0 below the range, then bin by bin
    bins = np.where(x.numpy() < 0, N_BINS // 2 - m, N_BINS // 2 + m)
    expected = np.stack([np.bincount(bins[:, j], minlength=N_BINS) for j in range(5)])
    np.testing.assert_array_equal(histogram(x).numpy(), expected)


def test_schema_round_trip(llama_run):
    _, _, store = llama_run
    keys = store.list("records/") + store.list("stats/") + store.list("output_tokens/")
    assert records_key(0) in keys and stats_key(2) in keys and output_tokens_key(1, 2) in keys
    for k in keys:
        path = next(p for p in store.local_root.rglob("*.parquet") if str(p).endswith(k.lstrip("/")))
        schema = pq.read_schema(path)
        expected = {"records": RECORDS, "stats": STATS, "output_tokens": OUTPUT_TOKENS}[k.split("/")[0]]
        assert schema.remove_metadata().equals(expected), k


def test_a_neuron_is_read_from_its_own_row_groups(llama_run):
    """Records parts are written in row groups of a few neurons, so a workflow's filtered read of
    one neuron skips the rest of its part; and it reads exactly that neuron's rows."""
    _, _, store = llama_run
    key = records_key(1, 1)
    meta = pq.ParquetFile(store.local_root / key).metadata
    assert meta.num_row_groups > 1 and max(meta.row_group(i).num_rows for i in range(meta.num_row_groups)) <= ROW_GROUP
    groups = [meta.row_group(i).column(1).statistics for i in range(meta.num_row_groups)]  # the neuron column
    assert all(g.min >= 10 and g.max < 20 for g in groups) and any(g.max - g.min < 9 for g in groups)
    whole = store.read_parquet(key).to_pandas()
    one = read_neuron(store, [key], 1, 13)
    assert len(one) == (whole["neuron"] == 13).sum() > 0 and set(one["neuron"]) == {13}


def test_gpt2_hooks_mlp_act_output(ray_local, tmp_path, gpt2_dir, corpus):
    cfg = _cfg(gpt2_dir, corpus, layers="1", neurons="0-9,40", top_k=4, random_k=2, negative="auto")
    summary, store = _run(ray_local, tmp_path, cfg)
    _windows, acts = brute(gpt2_dir, cfg)
    rec = _read(store, "records/")
    top = rec.query("kind == 'top'")
    assert summary["neurons"] == 11 and sorted(set(top.neuron)) == list(range(10)) + [40]
    # GELU is not a signed activation: auto leaves the negative side off
    assert not summary["negative"] and not rec.kind.str.contains("bottom|negative").any()
    for neuron, g in top.groupby("neuron"):
        wid, pos, _val = expected_top(acts[1][:, :, neuron], cfg.top_k)
        np.testing.assert_array_equal(g.sort_values("rank").window_id, wid)
        np.testing.assert_array_equal(g.sort_values("rank").max_pos, pos)
    # so a GPT-2 neuron is explained as before: one side, no verdict on a negative one
    from fakes import PlantedEmbedder, ScriptedLLM

    from neuronscope.config import ExplainConfig
    from neuronscope.explain import NeuronOptions, explain_neuron

    c = ExplainConfig(n_explain=2, n_heldout_top=1, n_heldout_random=1, candidates=1)
    res = explain_neuron(1, 0, rec[rec.neuron == 0], ScriptedLLM(), c, NeuronOptions(PlantedEmbedder()))
    assert {(r["polarity"], r["status"]) for r in res.rows} == {(1, "ok")}, res.rows[0]["error"]
    assert not any(e.agent == "polarity" for e in res.transcript)


def test_errors_name_the_value(ray_local, tmp_path, llama_dir, corpus):
    store = Store.open(str(tmp_path))
    with pytest.raises(ConfigError, match="layer 3 is out of range"):
        record(_cfg(llama_dir, corpus, layers="3"), store)
    with pytest.raises(ConfigError, match="neuron 24 is out of range"):
        record(_cfg(llama_dir, corpus, neurons="0,24"), store)
    with pytest.raises(ModelError, match="bundled:nope"):
        record(_cfg("bundled:nope", corpus), store)
    short = tmp_path / "short.txt"
    short.write_text("two words\n")
    with pytest.raises(CorpusError, match="too short"):
        record(_cfg(llama_dir, str(short)), store)


@pytest.mark.parametrize("model_type", sorted(TINY))
def test_negative_auto_is_on_for_gated_mlps(model_type):
    from neuronscope.record.udf import exemplar_counts

    config = tiny_model(model_type, 64).config
    counts = {v: exemplar_counts(RecordConfig(negative=v, top_k=5), arch.signed(config)) for v in ("auto", "on", "off")}
    assert counts["auto"].negative == (model_type != "gpt2")
    assert counts["on"].negative and not counts["off"].negative and counts["on"].bottom_k == 5


def test_unsupported_architecture_lists_supported():
    class Cfg:
        model_type = "mamba"

    with pytest.raises(ModelError, match="'mamba'.*gpt2.*llama"):
        arch.site(Cfg())


def test_plan_groups_shards_into_passes_within_the_memory_budget(monkeypatch):
    from neuronscope.record import driver

    monkeypatch.setattr(driver, "SHARD_NEURONS", 10)
    neurons = list(range(24))
    plan = lambda layers, done, budget: driver.plan_passes(layers, neurons, done, 100, budget)
    assert plan([0, 1, 2], set(), 6000) == [  # 60 cells of 100 bytes
        ([0, 1, 2], list(range(20))),
        ([0, 1, 2], list(range(20, 24))),
    ]
    assert plan([0, 1], {(0, 0), (1, 0), (0, 1)}, 6000) == [
        ([1], list(range(10, 20))),
        ([0, 1], list(range(20, 24))),
    ]
    assert plan([0], {(0, 0), (0, 1), (0, 2)}, 6000) == []
    # 20 cells: a shard of 10 neurons takes 2 of its layers per pass; one cell is the least a pass holds
    assert plan([0, 1, 2], set(), 2000) == [
        ([0, 1], list(range(10))),
        ([2], list(range(10))),
        ([0, 1], list(range(10, 20))),
        ([2], list(range(10, 20))),
        ([0, 1, 2], list(range(20, 24))),
    ]
    assert len(plan([0, 1], set(), 1)) == 2 * 3


@pytest.mark.parametrize("negative", ["off", "on"])
def test_the_whole_bundled_model_records_in_one_pass_at_the_defaults(negative):
    from neuronscope.record import driver
    from neuronscope.record.udf import exemplar_counts

    cfg = RecordConfig(negative=negative)
    counts = exemplar_counts(cfg, signed=True)
    side = cfg.top_k + cfg.quantile_bins * cfg.quantile_k
    assert counts.per_neuron() == side + cfg.random_k + (side if negative == "on" else 0)
    size = driver.cell_bytes(counts, cfg.window)
    assert size == counts.per_neuron() * 64 * 4
    passes = driver.plan_passes(list(range(30)), list(range(1536)), set(), size, cfg.pass_memory_gib * (1 << 30))
    # the positive side fits one pass; the negative side too doubles the windows held: two passes
    assert len(passes) == (1 if negative == "off" else 2)
    assert sorted((layer, n) for layers, ns in passes for layer in layers for n in ns) == [
        (layer, n) for layer in range(30) for n in range(1536)
    ]


def test_rerun_resumes_missing_shards(llama_run, tmp_path, monkeypatch):
    import shutil

    from neuronscope.record import driver

    cfg, summary, full = llama_run
    assert summary["shards"] == summary["shards_recorded"] == 9 and summary["passes"] == 1
    assert summary["output_token_shards"] == 9
    assert records_key(1, 2) in full.list("records/")
    shutil.copytree(full.local_root, tmp_path, dirs_exist_ok=True)
    store = Store.open(str(tmp_path))
    store.delete(records_key(1, 1))  # a lost shard ...
    store.delete(stats_key(2, 1))  # ... and one whose stats never landed
    store.delete(output_tokens_key(0, 2))  # an output-token part too
    monkeypatch.setattr(driver, "SHARD_NEURONS", SHARD)
    again = record(cfg, store)
    assert again["shards_recorded"] == 2 and again["output_token_shards"] == 1
    for prefix in ("records/", "stats/", "output_tokens/"):
        _assert_same(_read(full, prefix), _read(store, prefix))
    again = record(cfg, store)
    assert again["shards_recorded"] == again["output_token_shards"] == 0
