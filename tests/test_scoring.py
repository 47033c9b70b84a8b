"""The scorers on tiny hand-made cases whose answers are known, the control, and the self-check."""

from __future__ import annotations

import math

import numpy as np
import pytest
from explain_helpers import MONTH_SENTENCES, MONTHS, PLAIN_SENTENCES, planted, words
from fakes import KeywordEmbedder, LabelLLM

from neuronscope.exemplars import Exemplar, Scale
from neuronscope.scoring import DetectionScorer, EmbeddingScorer, FuzzingScorer, ReaderScorer
from neuronscope.scoring import metrics as M
from neuronscope.scoring.calibration import PASS_AT, calibration_sets, self_check
from neuronscope.scoring.contexts import window_items
from neuronscope.scoring.controls import UNRELATED, control_explanation


def _exemplars(sentences, kind, start=0):
    out = []
    for i, s in enumerate(sentences):
        toks = tuple(words(s))
        acts = tuple(planted(list(toks), MONTHS))
        out.append(Exemplar(start + i, kind, i, toks, acts, int(np.argmax(acts))))
    return out


HELDOUT = _exemplars(MONTH_SENTENCES[:6], "top") + _exemplars(PLAIN_SENTENCES[:6], "random", 100)
FIVE = Scale(5.0)


def test_auroc_balanced_accuracy_and_pairwise_win_known_values():
    assert M.auroc([0.9, 0.8, 0.1, 0.2], [True, True, False, False]) == 1.0
    assert M.auroc([0.1, 0.2, 0.9, 0.8], [True, True, False, False]) == 0.0
    assert M.auroc([0.5, 0.5, 0.5], [True, False, False]) == 0.5, "ties count one half"
    assert M.auroc([0.3, 0.6, 0.4], [True, True, False]) == 0.5
    assert math.isnan(M.auroc([0.1, 0.2], [True, True])), "no negative: undefined, not a number"
    assert M.balanced_accuracy([0.9, 0.2, 0.1, 0.7], [True, True, False, False]) == 0.5
    assert M.pairwise_win([0.9, 0.5, 0.2, math.nan], [0.1, 0.5, 0.3, 0.4]) == pytest.approx((1 + 0.5 + 0 + 0.5) / 4)


def test_resampled_auroc_is_the_weighted_one_for_every_resample_ties_included():
    rng = np.random.default_rng(3)
    values = rng.integers(0, 6, 300) / 5.0  # few distinct values: many ties, within groups and across
    labels = rng.random(300) < 0.3
    groups = rng.integers(0, 40, 300)
    counts, g = M.bootstrap_counts(groups, 50, seed=1)
    fast = M.auroc_resampled(values, labels, g, counts)
    assert np.array_equal(fast, M.auroc_weighted(values, labels, counts[:, g])), "exact, not approximately"
    by_group = M.outranked_by_group(values[:7], values[7:], g[7:], int(g.max()) + 1)
    for j in range(int(g.max()) + 1):
        assert np.array_equal(by_group[:, j], M.outranked(values[:7], values[7:][g[7:] == j]))


def test_reader_word_readings_are_each_words_weighted_vectors_embedded_once_per_window():
    from neuronscope.exemplars import escape
    from neuronscope.models.embedder import embed_cached
    from neuronscope.scoring.reader import ALONE, PAIRED, PREDECESSOR, WINDOW, _unit, word_items

    class Counting(KeywordEmbedder):
        calls = 0

        def encode(self, texts, **kw):
            Counting.calls += 1
            return super().encode(texts, **kw)

    emb = Counting()
    exs = [
        Exemplar(0, "top", 0, ("In", " March", " we", " met", "."), (0.0, 4.0, 0.0, 0.0, 0.0), 1),
        Exemplar(1, "top", 1, ("The", " Ros", "al", "ind", " play", " ran", " long"), (0, 0, 3, 1, 0, 0, 0), 2),
    ]
    items = word_items(exs, Scale(4.0))
    assert [it.word for it in items if it.label] == ["March", "Rosalind"]
    got = ReaderScorer(emb).window_readings([ex.tokens for ex in exs])
    vec = lambda texts: embed_cached(emb, texts)
    alone, before = vec([it.word for it in items]), vec([it.before or "." for it in items])
    window = vec([escape("".join(it.exemplar.tokens)).strip() for it in items])
    want = ALONE * alone + PAIRED * _unit(alone + PREDECESSOR * before) + WINDOW * window
    assert np.array_equal(ReaderScorer(emb)._readings(items), want)
    assert [len(t) for t in got] == [5, 5]  # every word of each window (the full stop is one)
    calls = Counting.calls
    ReaderScorer(emb)._readings(items)  # another neuron's scorer, the same windows: nothing embedded
    assert Counting.calls == calls


def test_lru_computes_each_new_key_once_keeps_the_last_used_and_survives_an_eviction_meanwhile():
    from neuronscope.models.embedder import Lru

    asked: list[list[str]] = []

    def upper(keys):
        asked.append(keys)
        return [k.upper() for k in keys]

    lru = Lru(3)
    assert lru.get(["a", "b", "a"], upper) == ["A", "B", "A"]
    assert lru.get(["c", "a", "d"], upper) == ["C", "A", "D"]
    assert asked == [["a", "b"], ["c", "d"]]  # each new key once, a call's in one batch
    assert list(lru.values) == ["c", "a", "d"]  # b, used least recently, went first
    assert lru.get(["a", "e", "a", "c"], upper) == ["A", "E", "A", "C"]
    assert list(lru.values) == ["e", "a", "c"]  # in the order of each key's last use

    def evicting(keys):  # another thread fills the cache while this call computes
        lru.get(["x", "y", "z"], upper)
        return upper(keys)

    assert lru.get(["a", "q"], evicting) == ["A", "Q"]  # a was found before it went
    assert list(lru.values) == ["z", "a", "q"]


def test_window_items_are_activating_centres_and_quiet_stretches():
    items = window_items(HELDOUT, FIVE)
    pos = [it for it in items if it.label]
    assert len(pos) == 6 and all(it.exemplar.kind == "top" and it.pos == it.exemplar.max_pos for it in pos)
    assert all(it.text.split()[-1].strip(",.") in MONTHS or any(m in it.text for m in MONTHS) for it in pos)
    neg = [it for it in items if not it.label]
    assert neg and all(not any(m in it.text for m in MONTHS) for it in neg)
    assert {it.exemplar.kind for it in neg} == {"random"} or all(it.level < 2 for it in neg)


def test_embedding_scorer_right_above_wrong_and_nothing_at_chance():
    right, wrong, nothing = EmbeddingScorer(KeywordEmbedder())(
        [("month names", HELDOUT), ("river", HELDOUT), ("zzz", HELDOUT)], FIVE
    )
    assert right.score == 1.0 and nothing.score == 0.5 and wrong.score == 0.5
    assert right.values.shape == (len(right.items),)


def test_hard_negatives_keep_the_quiet_contexts_nearest_to_the_activating_ones(minilm):
    scorer = EmbeddingScorer(minilm, hard_negatives=2)
    all_items = EmbeddingScorer(minilm).items(HELDOUT, FIVE)
    kept = scorer.items(HELDOUT, FIVE)
    assert [it for it in kept if it.label] == [it for it in all_items if it.label]
    neg = [it for it in all_items if not it.label]
    assert sum(not it.label for it in kept) == 2 < len(neg)
    # the kept ones are the negatives most like a positive context
    pos = scorer.vectors([it.text for it in all_items if it.label])
    nearest = (scorer.vectors([it.text for it in neg]) @ pos.T).max(axis=1)
    assert {it.text for it in kept if not it.label} == {neg[i].text for i in np.argsort(-nearest)[:2]}
    right, wrong = scorer([("months of the year", HELDOUT), ("animals", HELDOUT)], FIVE)
    assert right.score > wrong.score


@pytest.fixture(scope="module")
def minilm():
    from neuronscope.models.embedder import get_embedder

    return get_embedder("bundled:all-minilm-l6-v2")


def test_embedding_scorer_with_the_bundled_embedder_prefers_the_right_concept(minilm):
    right, wrong = EmbeddingScorer(minilm)([("months of the year", HELDOUT), ("animals", HELDOUT)], FIVE)
    assert right.score > 0.9 and right.score > wrong.score + 0.2


@pytest.mark.parametrize("cls", [DetectionScorer, FuzzingScorer])
def test_label_scorers_read_yes_against_no_and_fall_to_chance_without_either(cls):
    llm = LabelLLM()
    right, wrong, silent = cls(llm)([("month names", HELDOUT), ("colours", HELDOUT), ("silent", HELDOUT)], FIVE)
    assert right.score == 1.0 and right.extra["balanced_accuracy"] == 1.0
    assert wrong.score == 0.5 and silent.score == 0.5 and set(silent.values) == {0.5}
    ids, slots = cls(llm).build_prompt("month names", right.items)
    text = "".join(map(chr, ids))
    assert len(slots) == len(right.items) and "Neuron B fires on: month names." in text
    if cls is FuzzingScorer:  # the activating token is the marked one
        assert "<<" in text.split("Neuron B", 1)[1]


def test_the_control_is_reproducible_unrelated_and_prefers_other_neurons():
    a = control_explanation(3, 7)
    assert a == control_explanation(3, 7) and a in UNRELATED
    assert control_explanation(3, 7, others=["dog names", "sea words"]) in {"dog names", "sea words"}
    picks = {control_explanation(3, n, embedder=KeywordEmbedder(), avoid="month names") for n in range(20)}
    assert picks <= set(UNRELATED) and not any("month" in p for p in picks)


def test_self_check_passes_a_scorer_that_sees_and_flags_one_that_cannot(minilm):
    good = self_check(lambda shown: ReaderScorer(minilm, shown))
    assert good.passed and good.discrimination >= PASS_AT and good.right_mean > good.wrong_mean
    assert set(good.kinds) == {"words", "words (puzzle form)", "over-general", "garbage", "other neuron"}
    assert "passed" in good.line()

    class Blind(EmbeddingScorer):  # same interface, every context looks alike: cannot separate
        def values(self, jobs):
            return [np.zeros(len(its)) for _, its in jobs]

    bad = self_check(lambda shown: Blind(minilm))
    assert not bad.passed and bad.discrimination == 0.5 and "FAILED" in bad.line()
    # the old default judge falls for word lists: the self-check now says so
    lists = self_check(lambda shown: EmbeddingScorer(minilm))
    assert not lists.passed and lists.kinds["words"] < PASS_AT <= lists.kinds["other neuron"]
    assert len(calibration_sets()) >= 5


@pytest.fixture
def hand_written_run(tmp_path):
    """A run holding only records, written by hand in the records schema."""
    import pyarrow as pa
    from explain_helpers import records

    from neuronscope.schema import RECORDS
    from neuronscope.store import Store

    df = records(MONTH_SENTENCES, MONTHS, layer=2, neuron=5, randoms=PLAIN_SENTENCES)
    Store.open(str(tmp_path / "run")).write_parquet(
        "records/layer_002/part-00000.parquet", pa.Table.from_pandas(df, schema=RECORDS, preserve_index=False)
    )
    return str(tmp_path / "run")


def test_score_command_scores_a_users_explanation_beside_its_control(hand_written_run, capsys):
    import json

    from neuronscope.cli import main

    def score(text, *extra):
        assert (
            main(["score", hand_written_run, "--layer", "2", "--neuron", "5", text, "--scorer", "embedding", *extra])
            == 0
        )
        return capsys.readouterr().out

    right, wrong = json.loads(score("months of the year", "--json")), json.loads(score("kinds of fish", "--json"))
    assert right["default"] == "reader" and set(right["scores"]) == {"embedding"}
    r, w = right["scores"]["embedding"], wrong["scores"]["embedding"]
    assert r["score"] > 0.9 and r["score"] > r["control"] + 0.2 and w["score"] < r["score"]
    assert r["interval"][0] <= r["score"] <= r["interval"][1] and right["lexical_explanation"]
    text = score("months of the year")
    assert "embedding" in text and " vs words " in text and " vs control " in text
    # by default the run's own judge, with its interval, beside the words baseline and the control
    assert main(["score", hand_written_run, "--layer", "2", "--neuron", "5", "months of the year"]) == 0
    text = capsys.readouterr().out
    assert "reader" in text and "the run's judge" in text and "words:" in text and "[" in text


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["--layer", "2", "--neuron", "6", "x", "--scorer", "embedding"], "no records for layer 2 neuron 6"),
        (["--layer", "2", "--neuron", "5", "x", "--scorer", "astrology"], "unknown scorer 'astrology'"),
        (["--layer", "2", "--neuron", "5", "  ", "--scorer", "embedding"], "the explanation to score is empty"),
    ],
)
def test_score_command_bad_input_is_a_clear_error(hand_written_run, capsys, argv, fragment):
    from neuronscope.cli import main

    assert main(["score", hand_written_run, *argv]) == 2
    assert fragment in capsys.readouterr().err


def test_summary_flags_an_uncalibrated_judge_and_shows_every_score_beside_its_control(tmp_path):
    from neuronscope import manifest
    from neuronscope.results import write_result
    from neuronscope.schema import explanation_row
    from neuronscope.store import Store
    from neuronscope.summary import summary_table

    store = Store.open(str(tmp_path / "run"))
    check = {"scorer": "simulation", "discrimination": 0.52, "passed": False, "kinds": {"word list": 0.52}}
    manifest.note_stage(store, "explain", "self_check", check)
    # the judge is the simulation scorer: its scores and the stored simulation scores are the same
    scores = {"score": 0.31, "mode_score": 0.31, "baseline_score": 0.12, "control_score": 0.29}
    scores |= {f"sim_{k}": v for k, v in scores.items() if k != "mode_score"}
    scores |= {"score_ci": [0.21, 0.41], "lexical_score": 0.2, "lexical_score_ci": [0.1, 0.3]}
    row = explanation_row(
        1, 2, mode=0, n_modes=1, explanation="x", scorer="simulation", calibrated=False, method="both", **scores
    )
    write_result(store, 1, 2, [row], [])
    lines = summary_table(store).splitlines()
    assert lines[0] == (
        "scorer: simulation, self-check FAILED: scores uncalibrated (the right name scores higher on 52% of pairs "
        "against its worst false-explanation kind (word list))"
    )
    assert "0.31±.10" in lines[3] and "0.12 " in lines[3] and "0.20±.10" in lines[3] and "0.29 " in lines[3]
    assert "control  0.29" in lines[-3] and "words  0.20" in lines[-3]
    assert "simulation r: neuronscope  0.31 vs  0.29" in lines[-2]
    assert lines[-1] == "modes per neuron (1 neurons, mean 1.00): 1 mode: 1 (100%); single-mode share by layer: 1: 100%"


def test_window_guesses_decompose_the_auroc_and_show_only_real_errors():
    sc = EmbeddingScorer(KeywordEmbedder())
    items = sc.items(HELDOUT, FIVE)
    y = np.array([it.label for it in items])
    perfect = sc.result(y.astype(float), items)
    assert perfect.score == 1.0 and perfect.mistakes() == ([], []), "nothing to fix when every context is ranked right"
    assert set(perfect.guesses[y]) == {10.0} and set(perfect.guesses[~y]) == {0.0}
    worst_neg = int(np.flatnonzero(~y)[0])
    v = y.astype(float)
    v[worst_neg] = 2.0  # one quiet context above every activating one
    r = sc.result(v, items)
    _misses, alarms = r.mistakes()
    assert [(a[0], a[1]) for a in alarms] == [(items[worst_neg].exemplar, items[worst_neg].pos)]
    assert np.mean(r.guesses[y]) / 10 == pytest.approx(r.score)


def test_the_embedder_dtype_is_as_configured_and_auto_follows_the_cpu():
    import torch

    from neuronscope.models.cpu import native_bf16
    from neuronscope.models.embedder import embed, get_embedder, resolve_dtype

    assert resolve_dtype("float32") == "float32" and resolve_dtype("bfloat16") == "bfloat16"
    assert resolve_dtype("auto") == ("bfloat16" if native_bf16() else "float32")
    full = get_embedder("bundled:all-minilm-l6-v2", "float32")
    assert next(full.parameters()).dtype == torch.float32
    if native_bf16():  # emulated bf16 is ~100x slower: checked only where the CPU has it
        half = get_embedder("bundled:all-minilm-l6-v2", "bfloat16")
        assert next(half.parameters()).dtype == torch.bfloat16
        texts = ["the king of France", "a red rose", "March"]
        a, b = embed(full, texts), embed(half, texts)
        assert a.dtype == b.dtype == np.float32 and np.all(np.sum(a * b, axis=1) > 0.99)
