"""Builders shared by the explain tests (no tests here): RECORDS rows from real sentences with planted activations."""

from __future__ import annotations

import re

import pandas as pd
import pyarrow as pa

from neuronscope.schema import RECORDS

MONTHS = {
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
}


# The workflow tests' month neuron: a dozen sentences, each firing on its month, and quiet
# sentences for its random exemplars.
SENTENCES = [
    f"The {w} report was filed in {m} by the clerk."
    for w, m in zip(
        ["first", "second", "third", "fourth", "fifth", "sixth", "last", "new", "old", "big", "small", "late"],
        ["January", "March", "May", "July", "August", "October", "June", "April", "December", "May", "June", "July"],
    )
]
RANDOMS = [f"The river ran {n} miles past the old mill." for n in ["two", "three", "four", "five", "six", "seven"]]


def words(text: str) -> list[str]:
    """Word-level 'tokens' with their leading space, as a BPE tokenizer would give them."""
    return re.findall(r"\s*\S+", text)


def planted(tokens: list[str], hot: set[str], peak: float = 5.0) -> list[float]:
    return [peak if t.strip(" ,.;") in hot else 0.1 * (i % 3) for i, t in enumerate(tokens)]


def records(
    sentences: list[str],
    hot: set[str],
    layer: int = 0,
    neuron: int = 0,
    n_top: int | None = None,
    randoms: list[str] = (),
) -> pd.DataFrame:
    """One neuron's RECORDS rows: sentences containing a hot word are 'top' (ranked by max
    activation, ties by order), the rest and ``randoms`` are 'random'."""
    rows, top = [], []
    for wid, s in enumerate(list(sentences) + list(randoms)):
        toks = words(s)
        acts = planted(toks, hot, peak=5.0 - 0.1 * (wid % 7))
        row = {
            "layer": layer,
            "neuron": neuron,
            "window_id": 1000 + wid,
            "tokens": toks,
            "token_ids": list(range(len(toks))),
            "activations": acts,
            "max_pos": max(range(len(acts)), key=acts.__getitem__),
            "max_act": max(acts),
        }
        (top if wid < len(sentences) and row["max_act"] > 1 else rows).append(row)
    top.sort(key=lambda r: -r["max_act"])
    top = top[:n_top] if n_top else top
    out = [{**r, "kind": "top", "rank": i} for i, r in enumerate(top)]
    out += [{**r, "kind": "random", "rank": i} for i, r in enumerate(rows)]
    return pd.DataFrame(out)


def month_neurons(store, n: int) -> None:
    """Records of ``n`` alike month neurons in layer 1, written into ``store``."""
    frames = [records(SENTENCES, MONTHS, layer=1, neuron=i, randoms=RANDOMS) for i in range(n)]
    df = pd.concat(frames, ignore_index=True)
    df["window_id"] = df["window_id"] + 100 * df["neuron"]
    store.write_parquet("records/layer_001/part-00000.parquet", pa.Table.from_pandas(df, schema=RECORDS))


MONTH_SENTENCES = [
    "The harvest festival is held every year in October, when the leaves turn red.",
    "She was born on a cold morning in January, just after the storm.",
    "Our lease ends in March, so we will move before the spring rains.",
    "The school year starts in September and ends in June.",
    "In May the garden is full of tulips and small white flowers.",
    "He sent the letter in April, but it did not arrive until summer.",
    "The river floods almost every February after the snow melts.",
    "They married in August under a tent on the beach.",
    "The report was published in December, a week before the holidays.",
    "Prices rose sharply in July because of the drought.",
    "The committee meets again in November to vote on the budget.",
    "Last June we drove across the country in an old van.",
    "The ship left the harbour in March with forty sailors aboard.",
    "By October the nights were long and the wind was cold.",
    "The contract was signed in January and work began at once.",
    "Every April the town holds a market in the square.",
]
ANIMAL_SENTENCES = [
    "A small dog barked at the mailman from behind the fence.",
    "The horse pulled the cart slowly up the muddy hill.",
    "An old cat slept all afternoon on the warm windowsill.",
    "The farmer counted his sheep before closing the gate.",
    "A fox crept along the hedge looking for the chickens.",
    "The children fed bread to the ducks at the pond.",
]
PLAIN_SENTENCES = [
    "The committee could not agree on the new rules for the library.",
    "He poured a cup of tea and read the paper by the window.",
    "The bridge was painted green and repaired after the accident.",
    "Most of the students finished the test before the bell rang.",
    "She kept the keys in a drawer next to the old radio.",
    "The road to the village was narrow and full of holes.",
    "They built a wooden table and four chairs for the kitchen.",
    "The lamp flickered twice and then the room went dark.",
]
ANIMALS = {"dog", "horse", "cat", "sheep", "fox", "ducks", "chickens"}


def token_records(
    llm, top_sentences: list[str], random_sentences: list[str], hot: set[str], layer: int, neuron: int
) -> pd.DataFrame:
    """RECORDS rows with the explainer's real tokens; activation planted on tokens in ``hot``
    (peak varies a little by sentence so ranks are distinct), small noise elsewhere."""
    rows = []
    for wid, s in enumerate(list(top_sentences) + list(random_sentences)):
        ids = llm.tokenize(s)
        toks = [llm.token_text(i) for i in ids]
        peak = 4.0 - 0.05 * wid
        acts = [peak if t.strip() in hot else 0.05 * ((i * 7 + wid) % 5) for i, t in enumerate(toks)]
        kind = "top" if wid < len(top_sentences) else "random"
        rows.append(
            {
                "layer": layer,
                "neuron": neuron,
                "kind": kind,
                "window_id": layer * 10_000 + neuron * 100 + wid,
                "tokens": toks,
                "token_ids": ids,
                "activations": acts,
                "max_pos": max(range(len(acts)), key=acts.__getitem__),
                "max_act": max(acts),
            }
        )
    df = pd.DataFrame(rows)
    df["rank"] = df.groupby("kind")["max_act"].rank(ascending=False, method="first").astype(int) - 1
    return df


class WordVocabulary:
    """Tokenizer stand-in for test embedders: a vocabulary of everyday English words, which the
    activating-words clustering ranks word similarities against (``cluster.reference``)."""

    WORDS = (
        "the",
        "of",
        "and",
        "to",
        "in",
        "is",
        "that",
        "for",
        "it",
        "as",
        "was",
        "with",
        "be",
        "by",
        "on",
        "not",
        "he",
        "this",
        "are",
        "or",
        "his",
        "from",
        "at",
        "which",
        "but",
        "have",
        "an",
        "they",
        "you",
        "were",
        "her",
        "she",
        "there",
        "one",
        "all",
        "we",
        "their",
        "been",
        "has",
        "would",
        "when",
        "if",
        "so",
        "no",
        "what",
        "will",
        "can",
        "more",
        "who",
        "out",
        "up",
        "them",
        "some",
        "could",
        "into",
        "time",
        "other",
        "than",
        "then",
        "its",
        "only",
        "new",
        "like",
        "now",
        "over",
        "also",
        "after",
        "first",
        "way",
        "even",
        "made",
        "man",
        "many",
        "before",
        "must",
        "through",
        "back",
        "years",
        "where",
        "much",
        "your",
        "well",
        "should",
        "down",
        "say",
        "day",
        "good",
        "still",
        "own",
        "see",
        "men",
        "might",
        "long",
        "great",
        "life",
        "little",
        "world",
        "just",
        "any",
        "these",
        "old",
        "same",
        "few",
        "came",
        "never",
        "last",
        "place",
        "make",
        "house",
        "while",
        "work",
        "under",
        "part",
        "people",
        "thought",
        "left",
        "around",
        "take",
        "know",
        "said",
        "home",
        "light",
        "done",
        "night",
        "yet",
        "far",
        "young",
        "here",
        "told",
        "look",
        "half",
        "kind",
        "less",
        "things",
        "name",
        "open",
        "going",
        "set",
        "saw",
        "end",
        "asked",
        "word",
        "speak",
        "heard",
        "sound",
        "keep",
        "upon",
        "shall",
        "love",
        "come",
        "give",
        "stand",
        "walk",
        "run",
        "fall",
        "hold",
        "bring",
        "leave",
        "live",
        "die",
        "fight",
        "think",
        "feel",
        "tell",
        "call",
        "seem",
        "water",
        "stone",
        "river",
        "table",
        "window",
        "paper",
        "music",
        "garden",
        "street",
        "money",
        "market",
        "winter",
        "summer",
        "morning",
        "evening",
        "village",
        "city",
        "church",
        "school",
        "letter",
        "story",
    )

    def get_vocab(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.WORDS)}


def with_negative(df: pd.DataFrame, negative: pd.DataFrame, scale: float = 1.0) -> pd.DataFrame:
    """``df`` (one neuron's records) with a negative side, as the recorder keeps it: ``negative``'s
    top exemplars as its bottom-k, their activations negated and times ``scale``, window ids apart."""
    bottom = negative[negative["kind"] == "top"].copy()
    bottom["kind"] = "bottom"
    bottom["window_id"] += 50_000
    bottom["activations"] = [[-scale * a for a in acts] for acts in bottom["activations"]]
    bottom["max_act"] = -scale * bottom["max_act"]
    return pd.concat([df, bottom], ignore_index=True)
