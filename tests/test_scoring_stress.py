"""The stress kinds on small planted neurons: each false explanation is what its kind says, and
the reader judge prefers the truth to a list of the words it was shown."""

from __future__ import annotations

import pytest

from neuronscope.exemplars import SplitSizes, key, lexical_explanation, load, needed, shown_words, split
from neuronscope.record.synthetic import TUNING
from neuronscope.scoring.claims import lexical_claim
from neuronscope.scoring.stress import (
    GARBAGE,
    GENERAL,
    KINDS,
    Case,
    false_explanations,
    one_other,
    puzzle_form,
    stress,
    top_words,
    win_rates,
)

SIZES = SplitSizes(explain=6, heldout_top=12, heldout_random=16, validation_top=2, validation_random=2)


@pytest.fixture(scope="module")
def cases():
    """Three planted neurons over the bundled corpus: one concept, two concepts, a context rule."""
    from transformers import AutoTokenizer

    from neuronscope.config import RecordConfig
    from neuronscope.models.bundled import resolve_model
    from neuronscope.record.driver import load_windows
    from neuronscope.record.synthetic import ConceptWindows, Rule

    tok = AutoTokenizer.from_pretrained(resolve_model("bundled:smollm2-135m").path)
    windows, _ = load_windows(RecordConfig(window=64, max_tokens=200_000), tok)
    rules = [
        Rule(("animals",)),
        Rule(("colours", "weapons")),
        Rule(("family members",), TUNING.contexts["family members"]),
    ]
    planted = ConceptWindows(windows, tok, TUNING.concepts).plant(rules, *needed(SIZES), seed=1)
    out = []
    for p in planted:
        sp = split(load(p.table), SIZES)
        out.append(Case(TUNING.truth(p.concepts, p.context), sp.explain, sp.heldout, sp.scale))
    return out


def _kinds(cases, i) -> dict[str, list[str]]:
    c = cases[i]
    out: dict[str, list[str]] = {}
    for kind, text in false_explanations(c.truth, top_words(c.explain, c.scale), i, one_other(cases, i)):
        out.setdefault(kind, []).append(text)
    return out


def test_the_word_kinds_list_the_words_the_explainer_was_shown_firing(cases):
    for i, c in enumerate(cases):
        kinds = _kinds(cases, i)
        ws = top_words(c.explain, c.scale)
        assert kinds["words"] == [", ".join(ws)] == [lexical_explanation(c.explain, c.scale)]
        vocab = {w for concept in c.truth.concepts for w in TUNING.concepts[concept]}
        assert 2 <= len(ws) <= 5 and all(w.lower() in vocab for w in ws), ws
        # the puzzle form quotes the first three, and the reader takes it as the same kind of list
        assert kinds["words (puzzle form)"] == [puzzle_form(ws[:3])]
        assert kinds["words (puzzle form)"][0].startswith(f'instances of the words "{ws[0]}", "{ws[1]}"')
        assert lexical_claim(kinds["words (puzzle form)"][0], shown_words(c.explain, c.scale)) == {
            key(w) for w in ws[:3]
        }


def test_a_sibling_swaps_the_first_concept_for_its_near_miss(cases):
    for i, c in enumerate(cases):
        (sib,) = _kinds(cases, i)["sibling"]
        assert sib != c.truth.text and TUNING.siblings[c.truth.concepts[0]] in sib
        assert all(other in sib for other in c.truth.concepts[1:])
    assert _kinds(cases, 1)["sibling"] == ["metals; weapons"]
    assert _kinds(cases, 2)["sibling"] == ["friends and servants after 'my'"]


def test_the_concept_and_context_kinds_apply_where_the_neuron_has_them(cases):
    one, two, context = (_kinds(cases, i) for i in range(3))
    assert cases[1].truth.text == "colours; weapons" and two["one concept only"] == ["colours", "weapons"]
    assert "one concept only" not in one and "wrong context" not in one and "wrong context" not in two
    assert cases[2].truth.text == "family members after 'my'"
    assert context["wrong context"] == ["family members after 'his or her'"]


def test_the_fixed_kinds_rotate_through_their_phrasings_and_other_neurons_share_no_concept(cases):
    for i, c in enumerate(cases):
        kinds = _kinds(cases, i)
        assert kinds["over-general"] == [GENERAL[i]] and kinds["garbage"] == [GARBAGE[i]]
        (other,) = kinds["other neuron"]
        assert other != c.truth.text and not any(concept in other for concept in c.truth.concepts)
        assert set(kinds) <= set(KINDS)


def test_the_reader_prefers_the_truth_to_the_words_it_was_shown(cases):
    from neuronscope.models.embedder import get_embedder
    from neuronscope.scoring import ReaderScorer

    minilm = get_embedder("bundled:all-minilm-l6-v2")
    trials = stress(lambda shown: ReaderScorer(minilm, shown), cases)
    lists = [t for t in trials if t.kind in ("words", "words (puzzle form)")]
    assert len(lists) == 6 and all(t.right > t.wrong for t in lists), [(t.false, t.right, t.wrong) for t in lists]
    rates = win_rates(trials)
    assert list(rates) == [k for k in KINDS if k in rates] and min(rates.values()) >= 0.75, rates
