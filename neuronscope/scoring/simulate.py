"""The all-at-once logprob simulator (Bills et al. 2023); ``simulation.py`` scores it.

The prompt is built from token ids, so the position of every activation slot is known exactly:
header(explanation), then one line ``<token text>\\t<slot>\\n`` per window token. One prompt-logprob
pass reads, at each slot, the model's distribution over the numerals; the prediction is their
expected value. The slot token itself is a placeholder: only what comes before it is conditioned on.

The scale is 0..10 only where every numeral is one token; where "10" is two tokens (SmolLM2:
"1","0") it is 0..9, since reading a single slot would count a predicted 10 as a 1. Predictions are
returned on the 0-10 scale either way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import prompts
from ..exemplars import Exemplar, escape
from ..llm.agents import Agent

TOP_K = 20
SLOT = "unknown"  # Bills et al.'s placeholder; a single token on the bundled tokenizer


@dataclass
class Vocab:
    """Token ids the simulator needs from the explainer's tokenizer, looked up once."""

    numerals: dict[int, int]  # token id -> value, for the numerals 0..top
    tab: list[int]
    newline: list[int]
    slot: int
    top: int  # the scale's highest numeral: 10, or 9 where "10" is not a single token

    @classmethod
    def of(cls, llm) -> Vocab:
        ids = {v: llm.tokenize(str(v)) for v in range(11)}
        top = 10 if len(ids[10]) == 1 else 9
        if any(len(ids[v]) != 1 for v in range(top + 1)):
            raise ValueError(
                f"the explainer's tokenizer has no single-token numerals 0..{top}: "
                f"{ {v: len(i) for v, i in ids.items() if len(i) != 1} } token(s)"
            )
        numerals = {ids[v][0]: v for v in range(top + 1)}
        return cls(numerals, llm.tokenize("\t"), llm.tokenize("\n"), llm.tokenize(SLOT)[0], top)

    def header(self, explanation: str) -> str:
        return prompts.raw_text(Agent.SIMULATE, explanation=explanation, top=self.top, mid=round(self.top * 0.4))


def build_prompt(llm, vocab: Vocab, explanation: str, tokens) -> tuple[list[int], list[int]]:
    """(token ids, slot positions) of the simulator prompt for one exemplar window."""
    ids = list(llm.tokenize(vocab.header(explanation) + "\n"))
    slots = []
    for tok in tokens:
        # Each token on its own line: tabs/newlines inside would break the line format.
        ids += llm.tokenize(escape(tok)) or llm.tokenize("␣")
        ids += vocab.tab
        slots.append(len(ids))
        ids.append(vocab.slot)
        ids += vocab.newline
    return ids, slots


def expected_value(logprobs: dict[int, float], numerals: dict[int, int]) -> float:
    """Expected numeral under the top-k distribution, renormalised over the numerals present;
    0 when no numeral is in the top-k (the simulator did not predict a number there)."""
    found = [(numerals[t], math.exp(lp)) for t, lp in logprobs.items() if t in numerals]
    total = sum(p for _, p in found)
    return sum(v * p for v, p in found) / total if total > 0 else 0.0


def simulate(llm, agent: Agent, jobs: list[tuple[str, list[Exemplar]]], vocab: Vocab) -> list[list[np.ndarray]]:
    """Predicted 0-10 activation per token, for each (explanation, exemplars) job: all jobs go
    in one next_token_logprobs call, so the engine batches them."""
    built = [build_prompt(llm, vocab, x, e.tokens) for x, exs in jobs for e in exs]
    out = llm.next_token_logprobs(agent, [b[0] for b in built], [b[1] for b in built], TOP_K) if built else []
    scale = 10 / vocab.top
    preds = [np.array([expected_value(d, vocab.numerals) * scale for d in per_pos]) for per_pos in out]
    result, at = [], 0
    for _, exs in jobs:
        result.append(preds[at : at + len(exs)])
        at += len(exs)
    return result
