"""Typed transcript entries write exactly the JSON objects stored runs hold, and read them back."""

from __future__ import annotations

import json

import pytest

from neuronscope.llm.agents import Agent
from neuronscope.results.transcript import (
    AgentAnswer,
    AgentFailure,
    ClusterEntry,
    LedgerEntry,
    NeuronError,
    OtherEntry,
    RefineDecision,
    RefineFailure,
    ScoreEntry,
    SplitEntry,
    TimingEntry,
    TriageEntry,
    entry_from_json,
)

MESSAGES = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Explanation:"}]
# (entry, the object earlier versions wrote for it, key order included)
STORED = [
    (
        AgentAnswer(Agent.EXPLAIN, 1, 0, MESSAGES, "Explanation: months", parsed="months"),
        {
            "agent": "explain",
            "item": 1,
            "attempt": 0,
            "messages": MESSAGES,
            "raw": "Explanation: months",
            "parsed": "months",
        },
    ),
    (
        AgentAnswer(Agent.DECONSTRUCT, 0, 2, MESSAGES, "no", error="no feature lines"),
        {
            "agent": "deconstruct",
            "item": 0,
            "attempt": 2,
            "messages": MESSAGES,
            "raw": "no",
            "error": "no feature lines",
        },
    ),
    (
        AgentFailure(Agent.SINGLE_PASS, "malformed; baseline missing"),
        {"agent": "single_pass", "error": "malformed; baseline missing"},
    ),
    (
        SplitEntry(7.5, [1, 2], [3], [4]),
        {"agent": "split", "max_act": 7.5, "explain": [1, 2], "heldout": [3], "validation": [4]},
    ),
    (
        TriageEntry(0.25, 2, True),
        {"agent": "triage", "baseline_score": 0.25, "word_modes": 2, "full": True, "withheld": False},
    ),
    (
        ClusterEntry("components", True, 2, {"2": 0.5}, [], 2, {"1": 0, "2": 1}),
        {
            "agent": "cluster",
            "variant": "components",
            "used": True,
            "k": 2,
            "silhouettes": {"2": 0.5},
            "merges": [],
            "n_modes": 2,
            "modes": {"1": 0, "2": 1},
        },
    ),
    (
        ScoreEntry("detection", "mode heldout", "months", [3], [0.9], 1.0, {"balanced_accuracy": 0.75}),
        {
            "agent": "score",
            "scorer": "detection",
            "purpose": "mode heldout",
            "explanation": "months",
            "window_ids": [3],
            "values": [0.9],
            "score": 1.0,
            "balanced_accuracy": 0.75,
        },
    ),
    (
        RefineDecision("simulation", 0, 1, "words", "months", 0.1, 0.8, True, "validation", [4]),
        {
            "agent": "refine_decision",
            "scorer": "simulation",
            "mode": 0,
            "round": 1,
            "old": "words",
            "new": "months",
            "old_score": 0.1,
            "new_score": 0.8,
            "kept": True,
            "judged_on": "validation",
            "window_ids": [4],
        },
    ),
    (
        RefineFailure(0, False, "refine agent answer malformed"),
        {"agent": "refine_decision", "round": 0, "kept": False, "error": "refine agent answer malformed"},
    ),
    (NeuronError("ValueError: no records"), {"agent": "error", "error": "ValueError: no records"}),
    (
        TimingEntry(1700000000.5, 1700000012.25, {"queue": 0.5, "read": 0.25, "llm": 9.0, "judge reader": 2.0}),
        {
            "agent": "timing",
            "started": 1700000000.5,
            "finished": 1700000012.25,
            "seconds": {"queue": 0.5, "read": 0.25, "llm": 9.0, "judge reader": 2.0},
        },
    ),
    (
        LedgerEntry({"explain": {"calls": 1, "cached": 0, "tokens_in": 9, "tokens_out": 3}}),
        {"agent": "ledger", "explain": {"calls": 1, "cached": 0, "tokens_in": 9, "tokens_out": 3}},
    ),
]


@pytest.mark.parametrize("entry,stored", STORED, ids=[type(e).__name__ for e, _ in STORED])
def test_an_entry_writes_the_stored_object_and_reads_it_back(entry, stored):
    assert json.dumps(entry.to_json()) == json.dumps(stored)  # same keys in the same order
    back = entry_from_json(json.loads(json.dumps(stored)))
    assert type(back) is type(entry) and back == entry


def test_an_object_of_no_known_shape_is_kept_as_it_is():
    for obj in ({"agent": "trivial", "prompt": "p", "answer": "a"}, {"agent": "explain", "neuron": 7}, {"x": 1}):
        entry = entry_from_json(obj)
        assert isinstance(entry, OtherEntry) and entry.to_json() == obj and entry.agent == obj.get("agent", "")


def test_agent_names_serialise_as_plain_strings():
    assert json.dumps({Agent.SIMULATE_BASELINE: Agent.CONTROL}) == '{"simulate_baseline": "control"}'
    assert f"{Agent.SINGLE_PASS}.v2" == "single_pass.v2" and Agent("refine") is Agent.REFINE


def test_a_transcript_line_is_strict_json_whatever_the_entry_holds():
    import math

    import numpy as np

    from neuronscope.results.outputs import entry_line, jsonable

    plain = {"agent": "score", "values": [0.25, 1.0, 3], "ids": np.arange(3), "x": np.float32(0.5), "k": np.int64(2)}
    odd = {"agent": "score", "values": [0.25, math.nan], "arr": np.array([1.0, np.inf]), "keys": {np.int64(3): 1}}
    for entry in (plain, odd):  # the encoder's own path, and the one through jsonable (NaN, a numpy key)
        assert json.loads(entry_line(entry)) == json.loads(json.dumps(jsonable(entry), allow_nan=False))
    assert json.loads(entry_line(odd))["values"] == [0.25, None] and json.loads(entry_line(odd))["keys"] == {"3": 1}
