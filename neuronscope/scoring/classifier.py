"""Detection and fuzzing (delphi's definitions), read from label logprobs of the LLM pool.

Every context of one explanation goes in one prompt (the template's few-shot, then one
``Text: <text>...</text>`` / ``Answer: <slot>`` pair per context): one prompt-logprob pass reads
P(Yes) against P(No) at every answer slot. The slot holds a neutral placeholder, so no answer
leaks into the next; the judge never sees an activation.
"""

from __future__ import annotations

import math

import numpy as np

from .. import prompts
from ..exemplars import Exemplar, Scale
from ..llm.agents import Agent
from .contexts import window_items
from .metrics import auroc_weighted, balanced_accuracy
from .scorer import Item, Scorer
from .simulate import SLOT, TOP_K


class LabelScorer(Scorer):
    """Shared by detection and fuzzing: P(Yes | explanation, context) per context, AUROC."""

    metric_name = "auroc"
    mark = False  # fuzzing marks the context's centre token
    template: Agent  # the agent whose prompt template judges, and its calls' default ledger name

    def __init__(self, llm, agent: Agent | None = None):
        self.llm, self.agent = llm, agent or self.template
        self._ids: tuple | None = None

    def _label_ids(self) -> tuple[set[int], set[int], list[int], list[int], int]:
        if self._ids is None:
            first = lambda s: self.llm.tokenize(s)[0]
            yes, no = {first(" Yes"), first("Yes")}, {first(" No"), first("No")}
            # a token shared by both (a bare space on a character tokenizer) says nothing
            self._ids = (
                yes - no,
                no - yes,
                self.llm.tokenize("\nText: "),
                self.llm.tokenize("\nAnswer:"),
                self.llm.tokenize(" " + SLOT)[0],
            )
        return self._ids

    def items(self, exemplars: list[Exemplar], scale: Scale) -> list[Item]:
        return window_items(exemplars, scale, mark=self.mark)

    def build_prompt(self, explanation: str, items: list[Item]) -> tuple[list[int], list[int]]:
        """(token ids, answer-slot positions) of the one prompt judging every item."""
        _, _, text, answer, slot = self._label_ids()
        ids = list(self.llm.tokenize(prompts.raw_text(self.template, explanation=explanation)))
        slots = []
        for it in items:
            ids += text + self.llm.tokenize(f"<text>{it.text}</text>") + answer
            slots.append(len(ids))
            ids.append(slot)
        return ids, slots

    def values(self, jobs: list[tuple[str, list[Item]]]) -> list[np.ndarray]:
        yes, no, *_ = self._label_ids()
        built = [self.build_prompt(x, its) for x, its in jobs if its]
        out = iter(
            self.llm.next_token_logprobs(self.agent, [b[0] for b in built], [b[1] for b in built], TOP_K)
            if built
            else []
        )
        return [np.array([p_yes(d, yes, no) for d in next(out)]) if its else np.zeros(0) for _, its in jobs]

    def statistic(self, values: np.ndarray, items: list[Item], weights: np.ndarray) -> np.ndarray:
        return auroc_weighted(values, [it.label for it in items], weights)

    def guesses(self, values: np.ndarray, items: list[Item]) -> np.ndarray:
        return 10.0 * np.asarray(values, dtype=np.float64)

    def extra(self, values: np.ndarray, items: list[Item]) -> dict:
        return {"balanced_accuracy": balanced_accuracy(values, [it.label for it in items])}


def p_yes(logprobs: dict[int, float], yes: set[int], no: set[int]) -> float:
    """P(Yes) / (P(Yes) + P(No)) from the top-k logprobs at a slot; 0.5 when neither is there."""
    py = sum(math.exp(lp) for t, lp in logprobs.items() if t in yes)
    pn = sum(math.exp(lp) for t, lp in logprobs.items() if t in no)
    return py / (py + pn) if py + pn > 0 else 0.5


class DetectionScorer(LabelScorer):
    """Does the context contain what the explanation describes?"""

    name = "detection"
    template = Agent.DETECTION


class FuzzingScorer(LabelScorer):
    """Is the marked token what the explanation describes? Activating contexts mark the token
    that fires; quiet ones mark their centre token."""

    name = "fuzzing"
    template = Agent.FUZZING
    mark = True
