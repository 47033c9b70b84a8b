"""The tests' shared test doubles (registered in conftest.py): a character tokenizer, scripted
LLMs and planted sentence embedders, so the workflow runs without an engine or a model, with
scores known in advance. Import the classes; the ``ray_by_value`` fixture ships them to Ray
workers, which cannot import the tests folder."""

from __future__ import annotations

import numpy as np
import pytest
from explain_helpers import MONTHS, WordVocabulary

from neuronscope import prompts
from neuronscope.llm.agents import Agent
from neuronscope.llm.base import Completion, Message


class CharTokenizer:
    """One token per character (so slot positions and windows can be checked by hand), both as
    the LLM interface's ``tokenize``/``token_text`` and as a Hugging Face tokenizer; EOS = 0."""

    eos_token_id = 0

    def tokenize(self, text):
        return [ord(c) for c in text]

    def token_text(self, i):
        return chr(i)

    def __call__(self, texts, add_special_tokens=False):
        assert add_special_tokens is False
        return {"input_ids": [[ord(c) for c in t] for t in texts]}


def agent_of(conversation: list[Message]) -> Agent:
    """The agent a conversation is from, read from its template."""
    agent = prompts.template_of(conversation)
    assert agent is not None, f"not an agent's conversation: {conversation[:1]}"
    return agent


def attempt_of(conversation: list[Message]) -> int:
    """0 for an agent's first ask, then one more per corrective follow-up before it (each follows
    the malformed answer it corrects); an answer prefill at the end is not counted."""
    prefilled = conversation[-1]["role"] == "assistant"
    return (len(conversation) - len(prompts.load(agent_of(conversation))) - prefilled) // 2


class Clock:
    """A clock that moves only when told (``Timings(clock)``): timings checked without sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ScriptedLLM(CharTokenizer):
    """Chat answers scripted per agent; the 'simulator' predicts 9 on month lines and 0
    elsewhere when the explanation mentions months (so scores are known to be high), and 0
    everywhere otherwise."""

    def __init__(
        self,
        deconstruct="- month name\n- date",
        explain="Explanation: month names",
        refine="Explanation: month names",
        single_pass=None,
    ):
        self.answers = {
            Agent.DECONSTRUCT: deconstruct,
            Agent.EXPLAIN: explain,
            Agent.REFINE: refine,
            Agent.SINGLE_PASS: single_pass or explain,
        }
        self.seen = []
        self.params = []

    def chat(self, conversations, params):
        out = []
        self.params.append(params)
        for conv in conversations:
            self.seen.append(conv)
            answer = self.answers[agent_of(conv)]
            if conv[-1]["role"] == "assistant":  # a prefilled answer is continued, as real backends do
                answer = answer.removeprefix(conv[-1]["content"])
            out.append(Completion(answer, sum(len(m["content"]) for m in conv), 5))
        return out

    def next_token_logprobs(self, prompts, positions, top_k):
        result = []
        for ids, pos in zip(prompts, positions):
            text = "".join(map(chr, ids))
            knows = "fires on: month" in text
            per = []
            for p in pos:
                line = text[: p - 1].rsplit("\n", 1)[-1]
                per.append({ord("9" if line.strip(" ,.") in MONTHS and knows else "0"): 0.0, ord("x"): -2.0})
            result.append(per)
        return result


class LabelLLM(CharTokenizer):
    """The detection and fuzzing scorers' LLM: answers Yes (logprob 0) at a slot whose text holds a
    month when the explanation is about months, No elsewhere; and no label at all for the
    'silent' explanation."""

    def next_token_logprobs(self, agent, prompts, positions, top_k):
        out = []
        for ids, pos in zip(prompts, positions):
            text = "".join(map(chr, ids))
            about = text.rsplit("fires on:", 1)[1].split("\n", 1)[0]
            per = []
            for p in pos:
                ctx = text[:p].rsplit("Text:", 1)[1]
                if "silent" in about:
                    per.append({ord("x"): 0.0})
                else:
                    hit = "month" in about and any(m in ctx for m in MONTHS)
                    per.append({ord(" "): -0.1, ord("Y" if hit else "N"): -0.5, ord("N" if hit else "Y"): -3.0})
            out.append(per)
        return out


class PlantedEmbedder:
    """Texts about months point one way, any other text another (a length term keeps them apart)."""

    tokenizer = WordVocabulary()

    def encode(self, texts, **_):
        return np.array(
            [
                [1.0, 0.0, 0.01 * len(t)]
                if any(m.lower() in t.lower() for m in MONTHS | {"month"})
                else [0.0, 1.0, 0.01 * len(t)]
                for t in texts
            ]
        )


class KeywordEmbedder:
    """Texts naming months, or holding one, point one way; other contexts (long texts) another;
    other explanations (short texts) a third, as far from both."""

    tokenizer = WordVocabulary()

    def encode(self, texts, **_):
        def vec(t):
            return (
                [1.0, 0, 0]
                if any(m in t for m in MONTHS) or "month" in t
                else [0, 1.0, 0]
                if len(t.split()) > 4
                else [0, 0, 1.0]
            )

        return np.array([vec(t) for t in texts])


class FeatureEmbedder:
    """Embeds a feature text by the keywords it holds (month, number, verb), so component
    clustering can be checked without a model."""

    def encode(self, texts, **_):
        keys = ["month", "number", "verb"]
        return np.array([[1.0 if k in t else 0.0 for k in keys] + [0.01 * len(t)] for t in texts])


@pytest.fixture
def ray_by_value(ray_local, request):
    """The test's Ray, with the test doubles of this module, the explain builders and the test's
    own module pickled by value (workers cannot import the tests folder)."""
    import sys

    import explain_helpers

    for mod in (sys.modules[__name__], explain_helpers, request.module):
        ray_local.cloudpickle.register_pickle_by_value(mod)
    return ray_local
