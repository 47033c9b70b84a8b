"""Strict parsing of agent answers: good answers parse, malformed ones raise with a reason."""

from __future__ import annotations

import pytest

from neuronscope.explain.parse import ParseError, components, example_features, explanation, not_a_copy


def test_the_example_answers_features_are_dropped_from_an_answer():
    """The 135M deconstructor repeats its few-shot features on texts they do not fit; they are
    left out, and an answer with nothing of its own leaves its exemplar without features."""
    from neuronscope import prompts
    from neuronscope.llm.agents import Agent

    shown = example_features(prompts.render(Agent.DECONSTRUCT, exemplar="<text>x</text>"))
    assert shown == {"day of the week", "time of a meeting"}
    assert components("- Day of the week.\n- month name\n", drop=shown) == ["month name"]
    assert components("- day of the week\n- time of a meeting\n", drop=shown) == []


@pytest.mark.parametrize(
    "answer,expected",
    [
        ("- month name\n- word after 'in'\n- time of the year", ["month name", "word after 'in'", "time of the year"]),
        ("Features:\n* Month name.\n\n- date", ["Month name", "date"]),
        ("- month name\n- Month Name", ["month name"]),  # duplicates folded
        ("  • capitalized proper noun  ", ["capitalized proper noun"]),
        ("- weapon\n- " + " ".join(["word"] * 9), ["weapon"]),  # an over-long feature beside good ones is dropped
    ],
)
def test_components_good(answer, expected):
    assert components(answer) == expected


def test_components_truncated_answer_drops_the_cut_line():
    assert components("- month\n- fruit\n- fruit\n-", truncated=True) == ["month", "fruit"]
    with pytest.raises(ParseError):
        components("- month\n-", truncated=False)


@pytest.mark.parametrize(
    "answer,reason",
    [
        ("", "no '- ' lines"),
        ("The word is a month.", "does not start with '- '"),
        ("- month name\nSure! Here you go", "does not start with '- '"),
        ("- " + " ".join(["word"] * 9), "1 to 8 words"),
        ("\n".join(f"- feature {i}" for i in range(7)), "at most 6"),
    ],
)
def test_components_malformed(answer, reason):
    with pytest.raises(ParseError, match=reason):
        components(answer)


@pytest.mark.parametrize(
    "answer,expected",
    [
        ("Explanation: names of months", "names of months"),
        ('Sure.\nexplanation:  "month names, in dates."\nMore text', "month names, in dates"),
        ("EXPLANATION: May", "May"),
        ("Explanation: the word <<May>>", "the word May"),
        ("Explanation: month (10), fruit (9)", "month, fruit"),  # our marks copied from the prompt are removed
        ("Explanation: <text>swords</text> and spears", "swords and spears"),
    ],
)
def test_explanation_good(answer, expected):
    assert explanation(answer) == expected


@pytest.mark.parametrize(
    "answer,reason",
    [
        ("names of months", "no line starts with 'Explanation:'"),
        ("Explanation:   ", "empty"),
        ("Explanation: " + " ".join(["w"] * 26), "longer than 25 words"),
        ("Explanation: tokens like <b>", "without < or >"),
    ],
)
def test_explanation_malformed(answer, reason):
    with pytest.raises(ParseError, match=reason):
        explanation(answer)


def _conversation():
    from neuronscope import prompts

    return prompts.render(
        "explain",
        components="place; country",
        exemplars="<text>the army marched from <<France>> into the hills of Wales</text>\nStrongest: France (10)",
        tokens="France (1)",
        pushed="",
    )


@pytest.mark.parametrize(
    "phrase", ["the army marched from France", "marched from France into the hills", "weather", "Weather."]
)
def test_a_copy_of_the_text_or_of_the_example_answer_is_rejected(phrase):
    with pytest.raises(ParseError, match="copies the text|example's answer"):
        not_a_copy(explanation("Explanation: " + phrase), _conversation())


@pytest.mark.parametrize(
    "phrase",
    ["names of countries", "France and other countries", "weather in France", "countries an army marches from"],
)
def test_an_explanation_in_its_own_words_passes(phrase):
    not_a_copy(phrase, _conversation())


def test_the_decoding_constraints_admit_only_what_the_parsers_read():
    import re

    from neuronscope.explain.agents import COMPONENTS_REGEX, EXPLANATION_REGEX

    for text in (" weather", " kings, queens and princes", ' "quoted" words (plural)'):
        assert re.fullmatch(EXPLANATION_REGEX, text) and explanation("Explanation:" + text)
    for text in (" <<rain>>", " two\nlines", "weather", " ", " " + "x" * 120):
        assert not re.fullmatch(EXPLANATION_REGEX, text), text
    comps = "- month name\n- after 'in'\n"
    assert re.fullmatch(COMPONENTS_REGEX, comps) and components(comps) == ["month name", "after 'in'"]
    for text in ("month name\n", "- <<x>>\n", "- a\n" * 4, "Features:\n- a\n"):
        assert not re.fullmatch(COMPONENTS_REGEX, text), text


def test_a_looping_explanation_is_malformed():
    with pytest.raises(ParseError, match="repeats 'england' 3 times"):
        explanation("Explanation: England and England or England and France")
    # the loop follows the answer: the first clause is kept
    assert (
        explanation("Explanation: number of people; number of couples; number of people who died") == "number of people"
    )
    # one unit said again and again is that unit (the markup's levels are dropped first)
    assert explanation("Explanation: darkness (1) of darkness (1) of darkness (1) of darkness (1) of") == "darkness"
    assert explanation("Explanation: dark night dark night dark night") == "dark night"
    # a list that loops over the same items keeps each item once
    assert (
        explanation("Explanation: number ratified (5), number ratified (3), number ratified (4), Number ratified")
        == "number ratified"
    )
    assert explanation("Explanation: England, France, england, Wales, France") == "England, France, Wales"
    assert explanation("Explanation: the word the, twice in the text") == "the word the, twice in the text"
