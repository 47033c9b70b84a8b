"""Planted neurons over the real bundled corpus: the ground truth the mode benchmark relies on."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from neuronscope.config import RecordConfig
from neuronscope.exemplars import word_at
from neuronscope.models.bundled import resolve_model
from neuronscope.record.driver import load_windows
from neuronscope.record.synthetic import CONCEPTS, ConceptWindows
from neuronscope.schema import RECORDS


@pytest.fixture(scope="module")
def corpus():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_model("bundled:smollm2-135m").path)
    windows, _ = load_windows(RecordConfig(window=32, max_tokens=100_000), tok)
    return windows, tok


def test_planted_neurons_fire_on_their_concepts_only(corpus):
    windows, tok = corpus
    sets = [("animals",), ("body parts", "royal titles"), ("colours", "family members", "number words")]
    planted = ConceptWindows(windows, tok).plant(sets, top_k=12, random_k=5, layer=3)
    for p, concepts in zip(planted, sets):
        assert p.table.schema == RECORDS
        df = p.table.to_pandas()
        top, rnd = df[df["kind"] == "top"], df[df["kind"] == "random"]
        assert len(top) == 12 and len(rnd) == 5 and (df["layer"] == 3).all() and (df["neuron"] == p.neuron).all()
        assert not set(top["window_id"]) & set(rnd["window_id"])
        # balanced modes, each top exemplar labelled with one of the neuron's concepts
        assert set(p.truth) == set(top["window_id"])
        assert Counter(p.truth.values()) == {c: 12 // len(concepts) for c in concepts}
        assert list(top["rank"]) == list(range(12)) and top["max_act"].is_monotonic_decreasing
        # the concepts take turns down the ranks, so any split of the ranks keeps them balanced
        by_rank = [p.truth[w] for w in top.sort_values("rank")["window_id"]]
        assert all(set(by_rank[i : i + len(concepts)]) == set(concepts) for i in range(0, 12, len(concepts)))
        for r in top.itertuples():
            words = CONCEPTS[p.truth[r.window_id]]
            hot = [word_at(r.tokens, i) for i, a in enumerate(r.activations) if a >= 0.6]
            # each firing piece ends a whole word of the concept (" p|ale" fires on "ale")
            assert hot and all(w.text.lower() in words for w in hot), (hot, words)
            assert all(w.end - 1 == i for w, i in zip(hot, np.flatnonzero(np.array(r.activations) >= 0.6)))
            assert word_at(r.tokens, r.max_pos).text.lower() in words
            assert list(r.token_ids) == windows[r.window_id].tolist()
            assert "".join(r.tokens) == tok.decode(windows[r.window_id])
        assert (rnd["max_act"] < 1.0).all()


def test_planting_is_deterministic_and_checks_its_input(corpus):
    windows, tok = corpus
    a = ConceptWindows(windows, tok).plant([("weapons", "animals")], top_k=6, random_k=3)
    b = ConceptWindows(windows, tok).plant([("weapons", "animals")], top_k=6, random_k=3)
    assert a[0].table.equals(b[0].table) and a[0].truth == b[0].truth
    with pytest.raises(ValueError, match="unknown concept.*'dragons'"):
        ConceptWindows(windows, tok).plant([("dragons",)], top_k=4, random_k=0)
    with pytest.raises(Exception, match="'weapons' alone; need 500"):
        ConceptWindows(windows, tok).plant([("weapons",)], top_k=500, random_k=0)
    assert np.isfinite(a[0].table.column("max_act").to_numpy()).all()


def test_only_whole_words_count(corpus):
    from neuronscope.record.synthetic import concept_of_tokens

    _, tok = corpus
    text = "So the dog dogged the dogs, and a barrow; by his sword. Horse"
    ids = np.array([tok.encode(text)])
    concept, pieces = concept_of_tokens(tok, ids, CONCEPTS)
    hits = [(p.strip(), list(CONCEPTS)[c]) for p, c in zip(pieces[0], concept[0]) if c >= 0]
    # "dogged" and "barrow" hold concept words only as pieces; the window's last token is never judged
    assert hits == [("dog", "animals"), ("dogs", "animals"), ("sword", "weapons")]


def test_a_word_of_several_pieces_fires_on_its_last_piece(corpus):
    from neuronscope.record.synthetic import TUNING, concept_of_tokens

    windows, tok = corpus
    text = "Then Rosalind spoke to Rosalinde and the duke's man, and the king left"
    ids = np.array([tok.encode(text)])
    concept, pieces = concept_of_tokens(tok, ids, TUNING.concepts)
    names = list(TUNING.concepts)
    hits = [(i, names[c]) for i, c in enumerate(concept[0]) if c >= 0]
    ros = list(pieces[0]).index(" Ros")
    assert pieces[0][ros + 1] == "al" and pieces[0][ros + 2] == "ind"  # the tokenizer splits it
    # "Rosalinde" and "duke's" are other words; the last word, "left", is at the edge and unjudged
    assert hits == [(ros + 2, "women's names"), (list(pieces[0]).index(" king"), "royal titles")]
    # planted over the corpus, a names neuron fires on the names' last pieces only
    (p,) = ConceptWindows(windows, tok, TUNING.concepts).plant([("women's names",)], top_k=8, random_k=4)
    multi = 0
    for r in p.table.to_pandas().itertuples():
        for i in np.flatnonzero(np.array(r.activations) >= 0.6):
            w = word_at(r.tokens, i)
            assert w.text.lower() in TUNING.concepts["women's names"] and i == w.end - 1
            multi += w.end - w.start > 1
    assert multi


def test_a_context_neuron_fires_only_after_its_context_word(corpus):
    from neuronscope.exemplars import words
    from neuronscope.record.synthetic import TUNING, Rule

    windows, tok = corpus
    ctx = TUNING.contexts["family members"]
    assert ctx.after == ("my",)
    (p,) = ConceptWindows(windows, tok, TUNING.concepts).plant([Rule(("family members",), ctx)], top_k=8, random_k=40)
    assert p.context == ctx and TUNING.truth(p.concepts, p.context).text == "family members after 'my'"
    fired = quiet = 0
    for r in p.table.to_pandas().itertuples():
        ws = words(r.tokens)
        for j, w in enumerate(ws[1:-1], 1):
            if w.text.lower() in TUNING.concepts["family members"] and w.start > 0:
                on = r.activations[w.end - 1] >= 0.6
                assert on == (ws[j - 1].text.lower() == "my"), (ws[j - 1].text, w.text)
                fired, quiet = fired + on, quiet + (not on)
    assert fired >= 8 and quiet  # "his father" is in the text, and quiet


def test_concept_tables_never_plant_a_concept_beside_its_near_miss():
    from neuronscope.record.synthetic import HELD_OUT, TUNING

    for table in (TUNING, HELD_OUT):
        assert set(table.siblings) == set(table.concepts)
        sets = table.sets(6, seed=1)
        assert [len(s) for s in sets] == [1] * 6 + [2] * 6 + [3] * 6
        assert not any(table.siblings[a] == b for s in sets for a in s for b in s)
    assert not set(TUNING.concepts) & set(HELD_OUT.concepts)  # held out: never tuned on
