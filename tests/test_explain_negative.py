"""The negative side of a neuron: its view (the negated neuron's records), the rule that decides
when it is explained, its rows beside the positive side's, and how a run counts, resumes, shows
and searches both."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from explain_helpers import MONTHS, RANDOMS, SENTENCES, records, with_negative
from fakes import PlantedEmbedder, ScriptedLLM

from neuronscope.config import ExplainConfig
from neuronscope.exemplars import extremes, flipped, load, strong
from neuronscope.explain import NeuronOptions, explain_neuron
from neuronscope.explain.task import task_summary
from neuronscope.results import rows_table
from neuronscope.results.transcript import PolarityEntry, by_polarity, entries_from_json
from neuronscope.schema import EXPLANATIONS, RECORDS

K, BINS = 4, 3


def _strata(extreme: np.ndarray, prefix: str) -> list[tuple[str, int]]:
    """Every window in its octave stratum of ``extreme`` (the window's max, or minus its min):
    the BINS octaves ending at the octave of the largest, as the recorder's (all windows kept)."""
    top = math.frexp(extreme.max())[1] - 1
    out = []
    for w, v in enumerate(extreme):
        j = math.frexp(v)[1] - 1 - (top - BINS + 1) if v > 0 else -1
        if 0 <= j < BINS:
            out.append((f"{prefix}quantile_{j}", w))
    return out


def _brute_records(acts: np.ndarray, negative: bool) -> pd.DataFrame:
    """One neuron's RECORDS rows from ``acts`` (windows, positions), by brute force: top-k and
    bottom-k tokens (ties by window, then position), random windows (fixed tokens), strata."""
    n_win, n_pos = acts.shape
    flat = [(acts[w, p], w, p) for w in range(n_win) for p in range(n_pos)]
    rows = []

    def add(kind, rank, w, pos, val):
        rows.append(dict(kind=kind, rank=rank, window_id=w, max_pos=pos, max_act=val))

    for r, (v, w, p) in enumerate(sorted(flat, key=lambda t: (-t[0], t[1], t[2]))[:K]):
        add("top", r, w, p, v)
    for r, w in enumerate((3, 0, 5)):  # a uniform sample does not depend on the sign
        add("random", r, w, int(acts[w].argmax()), acts[w].max())
    for kind, w in _strata(acts.max(axis=1), ""):
        add(kind, w, w, int(acts[w].argmax()), acts[w].max())
    if negative:
        for r, (v, w, p) in enumerate(sorted(flat, key=lambda t: (t[0], t[1], t[2]))[:K]):
            add("bottom", r, w, p, v)
        for kind, w in _strata(-acts.min(axis=1), "negative_"):
            add(kind, w, w, int(acts[w].argmin()), acts[w].min())
    df = pd.DataFrame(rows)
    df["activations"] = [acts[w].astype(np.float32).tolist() for w in df["window_id"]]
    df["tokens"] = [[f"t{w}.{p}" for p in range(n_pos)] for w in df["window_id"]]
    df["layer"], df["neuron"], df["token_ids"] = 2, 5, [[] for _ in range(len(df))]
    return pd.DataFrame(pa.Table.from_pandas(df[RECORDS.names], schema=RECORDS).to_pandas())


def _canonical(df: pd.DataFrame) -> pd.DataFrame:
    out = df[["kind", "rank", "window_id", "max_pos", "max_act", "activations"]].copy()
    out["max_act"] = out["max_act"].astype(np.float32)
    out["activations"] = [tuple(np.float32(a) for a in acts) for acts in out["activations"]]
    return out.sort_values(["kind", "rank", "window_id"]).reset_index(drop=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_negative_view_is_the_negated_neuron_s_records(seed):
    acts = np.random.default_rng(seed).normal(size=(12, 6)).round(1)  # rounded: ties
    view = flipped(_brute_records(acts, negative=True))
    want = _brute_records(-acts, negative=False)
    pd.testing.assert_frame_equal(_canonical(view), _canonical(want))
    # the workflow reads it like any neuron's: the negated neuron's top, strata and random
    pools = load(view)
    assert pools.top[0].activations[pools.top[0].max_pos] == pytest.approx(-acts.min())
    assert len(pools.strata) == len({k for k in want["kind"] if k.startswith("quantile_")})


def test_the_rule_takes_a_negative_side_at_least_ratio_times_as_strong():
    assert strong(-1.0, 2.0, 0.5) and strong(-2.7, 1.78, 0.5) and strong(-0.1, 0.0, 0.5)
    assert not strong(-0.9, 2.0, 0.5) and not strong(0.3, 2.0, 0.5) and not strong(-5.0, 1.0, None)
    assert strong(-0.01, 2.0, 0.0)  # ratio 0: any negative side
    signed = with_negative(records(SENTENCES, MONTHS, randoms=RANDOMS), records(SENTENCES, MONTHS), scale=0.4)
    low, high = extremes(signed)
    assert high == pytest.approx(5.0) and low == pytest.approx(-0.4 * 5.0)
    assert extremes(records(SENTENCES, MONTHS)) is None  # no negative side recorded (GPT-2)


def _explain(df: pd.DataFrame, **cfg):
    c = ExplainConfig(
        **{"n_explain": 6, "n_heldout_top": 3, "n_heldout_random": 3, "scorer": "simulation", "candidates": 1, **cfg}
    )
    return explain_neuron(3, 7, pa.Table.from_pandas(df), ScriptedLLM(), c, NeuronOptions(PlantedEmbedder()))


def _signed(scale: float) -> pd.DataFrame:
    pos = records(SENTENCES, MONTHS, layer=3, neuron=7, randoms=RANDOMS)
    return with_negative(pos, records(SENTENCES, MONTHS, layer=3, neuron=7), scale)


def test_a_strong_negative_side_gets_rows_of_its_own_and_a_weak_one_does_not():
    strong_side = _explain(_signed(1.0))
    table = rows_table(strong_side.rows)
    assert table.schema == EXPLANATIONS
    pos, neg = ([r for r in strong_side.rows if r["polarity"] == p] for p in (1, -1))
    assert len(pos) == len(neg) == 1 and all(r["status"] == "ok" for r in pos + neg)
    # the same workflow on the negated neuron: its own explanation, scores, control and baselines
    assert neg[0]["explanation"] == "month names" and neg[0]["score"] > 0.9 > abs(neg[0]["control_score"])
    assert neg[0]["baseline_explanation"] and neg[0]["lexical_explanation"] and neg[0]["llm_tokens_in"] > 0
    assert set(neg[0]["exemplar_ids"]) <= {w + 50_000 for w in range(1000, 1100)}  # the bottom windows
    # the transcript says which side each entry is of: the negative side's follow its verdict
    verdict = next(e for e in strong_side.transcript if isinstance(e, PolarityEntry))
    assert verdict.explained and verdict.polarity == -1 and verdict.min == pytest.approx(-5.0)
    sides = by_polarity(strong_side.transcript)
    assert sides[1][0].agent == sides[-1][0].agent == "split"
    assert sum(e.agent == "split" for e in strong_side.transcript) == 2
    assert by_polarity(entries_from_json([e.to_json() for e in strong_side.transcript])).keys() == {1, -1}
    # the neuron's cost is both sides'; its ledger too
    s = task_summary(3, 7, strong_side.rows)
    assert s.negative is not None and s.tokens == sum(
        pos[0][c] + neg[0][c]
        for c in ("llm_tokens_in", "llm_tokens_out", "baseline_llm_tokens_in", "baseline_llm_tokens_out")
    )
    assert strong_side.ledger.total().tokens_in > pos[0]["llm_tokens_in"] + neg[0]["llm_tokens_in"]

    weak = _explain(_signed(0.4))  # |min| 2.0 < 0.5 x max 5.0
    assert [r["polarity"] for r in weak.rows] == [1] and task_summary(3, 7, weak.rows).negative is None
    (verdict,) = [e for e in weak.transcript if isinstance(e, PolarityEntry)]
    assert not verdict.explained and by_polarity(weak.transcript).keys() == {1}
    off = _explain(_signed(1.0), negative_ratio="off")
    assert [r["polarity"] for r in off.rows] == [1]


def test_a_neuron_without_negative_records_is_explained_as_before():
    plain = _explain(records(SENTENCES, MONTHS, layer=3, neuron=7, randoms=RANDOMS))
    assert [r["polarity"] for r in plain.rows] == [1]
    assert not any(isinstance(e, PolarityEntry) for e in plain.transcript)
    assert task_summary(3, 7, plain.rows).negative is None


def test_a_failed_negative_side_fails_the_neuron_with_the_side_named():
    df = _signed(1.0)
    df.loc[df["kind"] == "bottom", "window_id"] = 77_777  # one window: too few to explain
    res = _explain(df)
    neg = [r for r in res.rows if r["polarity"] == -1]
    assert len(neg) == 1 and neg[0]["status"] == "failed" and "at least 2 top" in neg[0]["error"]
    s = task_summary(3, 7, res.rows)
    assert s.status == "failed" and s.error.startswith("negative side: ") and s.n_modes == 1


# ---- a run of such neurons: resume, budget, dry run, show and the atlas --------------------------


class Cached(ScriptedLLM):
    model_id = "scripted@1"  # the response cache keys on it


class CrashOnNegative(Cached):
    """Kills its worker process on the negative side's first prompt while ``flag`` exists: a
    neuron's task dies between its two sides."""

    def __init__(self, flag: str):
        super().__init__()
        self.flag = flag

    def chat(self, conversations, params):
        import os

        if os.path.exists(self.flag) and any("dog" in m["content"] for c in conversations for m in c):
            os._exit(1)
        return super().chat(conversations, params)


def _signed_run(store, strong_neurons=(0, 1, 2), plain=(3,)) -> None:
    """Month neurons in layer 1: those in ``strong_neurons`` with a strong negative side on animals
    (whose prompts name a dog), those in ``plain`` without a negative side recorded."""
    from explain_helpers import ANIMAL_SENTENCES, ANIMALS

    frames = []
    for n in (*strong_neurons, *plain):
        df = records(SENTENCES, MONTHS, layer=1, neuron=n, randoms=RANDOMS)
        if n in strong_neurons:
            df = with_negative(df, records(ANIMAL_SENTENCES, ANIMALS, layer=1, neuron=n))
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    df["window_id"] = df["window_id"] + 100_000 * df["neuron"]
    store.write_parquet("records/layer_001/part-00000.parquet", pa.Table.from_pandas(df, schema=RECORDS))


CFG = ExplainConfig(n_explain=6, n_heldout_top=3, n_heldout_random=2, max_in_flight=2, compact_every=2)


def test_a_run_killed_between_a_neuron_s_sides_resumes_losing_and_doubling_nothing(tmp_path, ray_by_value):
    from neuronscope.explain import RunContext, explain_run
    from neuronscope.explain.budget import spent_before
    from neuronscope.results import code, read_transcript
    from neuronscope.store import Store

    store = Store.open(str(tmp_path / "run"))
    _signed_run(store)
    flag = tmp_path / "crash"
    flag.touch()
    emb = PlantedEmbedder()
    # one workflow per worker: a crash ends its own neuron's attempt only, not its co-tenants'
    cfg = CFG.model_copy(update={"workflows_per_worker": 1})
    first = explain_run(RunContext(store, store, CrashOnNegative(str(flag)), cfg, embedder=emb))
    # each strong neuron's task died on its negative side (every retry too): recorded as failed,
    # nothing of its positive side kept as done; the plain neuron is done
    assert first.ok == 1 and first.failed == 3 and first.negative == 0, first
    flag.unlink()
    again = explain_run(RunContext(store, store, CrashOnNegative(str(flag)), cfg, embedder=emb))
    assert again.skipped == 1 and again.ok == 3 and again.negative == 3, again
    assert again.methods == {"both": 3, "negative: both": 3}
    rows = store.read_parquet("explanations/").to_pandas()
    assert not store.list("explanations/layer_001/neuron_")  # compacted, the failures replaced
    sides = rows.groupby(["neuron", "polarity", "mode"]).size()
    assert (sides == 1).all()  # no row twice
    assert {(n, p) for n, p, _ in sides.index} == {(0, 1), (0, -1), (1, 1), (1, -1), (2, 1), (2, -1), (3, 1)}
    assert (rows["status"] == "ok").all()
    for n in range(4):
        entries = entries_from_json(read_transcript(store, 1, n))
        assert sum(e.agent == "split" for e in entries) == (2 if n < 3 else 1)
    # a rerun's budget counts both sides of every done neuron, once
    done = spent_before(store, code(np.array([1] * 4), np.arange(4)))
    per_side = rows.drop_duplicates(["neuron", "polarity"])  # each of a side's rows carries its totals
    spent = per_side[["llm_tokens_in", "llm_tokens_out", "baseline_llm_tokens_in", "baseline_llm_tokens_out"]]
    assert done.tokens == int(spent.to_numpy().sum()) and done.negative == 3 and done.explained == 4


def test_a_dry_run_counts_the_negative_sides_the_rule_selects(tmp_path, ray_by_value, monkeypatch):
    from neuronscope.explain import RunContext, estimate_run, explain_run, schedule
    from neuronscope.explain.budget import sides
    from neuronscope.results import RecordsIndex, code
    from neuronscope.store import Store
    from neuronscope.summary import estimate_line

    store = Store.open(str(tmp_path / "run"))
    frames = []
    for n in range(6):  # alike neurons; 0-2 with a negative side as strong, 3 weak, 4-5 none
        df = records(SENTENCES, MONTHS, layer=1, neuron=n, randoms=RANDOMS)
        if n < 4:
            df = with_negative(df, records(SENTENCES, MONTHS, layer=1, neuron=n), 1.0 if n < 3 else 0.3)
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    df["window_id"] = df["window_id"] + 100_000 * df["neuron"]
    store.write_parquet("records/layer_001/part-00000.parquet", pa.Table.from_pandas(df, schema=RECORDS))
    cfg = CFG.model_copy(update={"dry_run": True, "dry_run_sample": 3})
    est = estimate_run(RunContext(store, store, ScriptedLLM(), cfg, embedder=PlantedEmbedder()))
    assert est.pending == 6 and est.negative == 3 and est.sample == 3
    # what a budget reserves: each neuron's workflows, the rule's negative sides as a second one
    codes = code(np.array([1] * 7), np.array([0, 1, 2, 3, 4, 5, 9]))  # 9: no records
    assert sides(store, RecordsIndex.scan(store), codes, 0.5).tolist() == [2, 2, 2, 1, 1, 1, 1]
    assert sides(store, RecordsIndex.scan(store), codes, None).tolist() == [1] * 7
    assert "with 3 negative sides (9 workflows)" in estimate_line(est)
    real = explain_run(RunContext(store, store, ScriptedLLM(), CFG, embedder=PlantedEmbedder()))
    assert real.negative == 3 and est.tokens == real.tokens  # alike workflows: the sample's mean is exact
    # under a budget, triage reserves for the sides of the neurons to come: 9 when none is submitted
    left: list[int] = []

    def spy(t, in_flight, allowed, sides_left, budget):
        left.append(sides_left)
        return True

    monkeypatch.setattr(schedule, "full_fits", spy)
    triage = CFG.model_copy(update={"method": "triage", "budget": 10**9, "max_in_flight": 1})
    store3 = Store.open(str(tmp_path / "run3"))
    store3.write_parquet(
        "records/layer_001/part-00000.parquet", store.read_parquet("records/layer_001/part-00000.parquet")
    )
    explain_run(RunContext(store3, store3, ScriptedLLM(), triage, embedder=PlantedEmbedder()))
    assert left == [9, 7, 5, 3, 2, 1]
    off = cfg.model_copy(update={"negative_ratio": None})
    store2 = Store.open(str(tmp_path / "run2"))
    store2.write_parquet(
        "records/layer_001/part-00000.parquet", store.read_parquet("records/layer_001/part-00000.parquet")
    )
    assert estimate_run(RunContext(store2, store2, ScriptedLLM(), off, embedder=PlantedEmbedder())).negative == 0


def test_show_the_atlas_and_search_present_the_negative_side_as_such(tmp_path):
    from atlas_helpers import MONTHS_TEXT, NEGATIVE_TEXT, make_run, with_negative_side
    from test_atlas import neuron_data

    from neuronscope.atlas import build_atlas
    from neuronscope.atlas.search import AtlasIndex
    from neuronscope.show import show_neuron
    from neuronscope.store import Store
    from neuronscope.summary import summary_table

    path = str(tmp_path / "run")
    store = Store.open(path)
    with_negative_side(store, make_run(store))

    text = show_neuron(path, 3, 0)
    head, _, tail = text.partition("negative side (the explanations say what drives the neuron most negative):")
    assert MONTHS_TEXT in head and "fires on: word (3)" in head and NEGATIVE_TEXT not in head
    assert "mode 0 (llm" in tail and NEGATIVE_TEXT in tail and "fires negative on: word (3)" in tail
    assert "vs control 0.410 [0.38, 0.52]" in tail  # its scores beside its own control
    assert "most negative exemplars (min token in [[ ]]):" in text and "  -5.000  " in text
    lines = summary_table(store).splitlines()
    assert [ln.split()[:3] for ln in lines if ln.split()[:2] == ["3", "0"]] == [["3", "0", "+"], ["3", "0", "-"]]
    assert any(ln.startswith("mean over 1 negative sides:") for ln in lines)

    build_atlas(path)
    atlas = pd.read_parquet(tmp_path / "run" / "atlas" / "neurons.parquet")
    n0 = atlas[(atlas["layer"] == 3) & (atlas["neuron"] == 0)]
    assert list(n0["polarity"]) == [1, -1] and n0["explanation"].iloc[1] == NEGATIVE_TEXT
    page = neuron_data(tmp_path / "run" / "atlas", 3, 0)
    assert [r["polarity"] for r in page["rows"]] == [1, -1]
    assert {e["kind"] for e in page["exemplars"]} >= {"top", "bottom"}
    hits = AtlasIndex.load(Store.open(path + "/atlas")).search("pets and farm animals", k=2)
    neg = next(h for h in hits if h.polarity == -1)
    assert (neg.layer, neg.neuron, neg.control) == (3, 0, 0.41) and "L3 N0 negative side mode 0" in neg.line()


def test_a_neuron_s_extremes_over_several_records_parts_are_its_lowest_and_highest(tmp_path):
    """A layer whose records are still in several parts (one per shard) holds a neuron's first
    bottom and top values in each: its extremes are the lowest and the highest of them, whatever
    the order the parts are read in."""
    from neuronscope.results import RecordsIndex, neuron_extremes
    from neuronscope.store import Store

    store = Store.open(str(tmp_path / "run"))
    month = records(SENTENCES, MONTHS, layer=1, neuron=0)
    weak, strong_side = (with_negative(month, records(SENTENCES, MONTHS, layer=1, neuron=0), s) for s in (0.2, 2.0))
    strong_side["max_act"] = strong_side["max_act"].where(strong_side["kind"] != "top", month["max_act"].max() / 4)
    for i, df in enumerate((weak, strong_side)):
        table = pa.Table.from_pandas(df, schema=RECORDS, preserve_index=False)
        store.write_parquet(f"records/layer_001/part-0000{i}.parquet", table)
    ends = neuron_extremes(store, RecordsIndex.scan(store).keys)
    assert len(ends) == 1 and ends.loc[0, "min"] == pytest.approx(weak["max_act"].min() * 10), (
        "the strong shard's bottom"
    )
    assert ends.loc[0, "max"] == pytest.approx(month["max_act"].max()), "the first shard's top"
