"""The interface every agent uses, and the per-neuron ledger of LLM usage."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal, Protocol, TypedDict

from ..timing import LLM as LLM_PHASE
from ..timing import Timings

Role = Literal["system", "user", "assistant"]


class Message(TypedDict):
    """One chat message, as the backends and the transcripts carry it."""

    role: Role
    content: str


def continuation_flags(conversation: list[Message]) -> dict:
    """Chat-template flags: a conversation ending with an assistant message is continued
    (answer prefill, e.g. "Explanation:"), any other gets a fresh assistant turn."""
    prefilled = bool(conversation) and conversation[-1]["role"] == "assistant"
    return {"add_generation_prompt": not prefilled, "continue_final_message": prefilled}


@dataclass(frozen=True)
class Completion:
    text: str
    tokens_in: int
    tokens_out: int


@dataclass(frozen=True)
class GenParams:
    max_tokens: int = 256
    temperature: float = 0.0
    seed: int = 0
    ignore_eos: bool = False  # generate exactly max_tokens (vLLM's extension; load tests need it)
    # The answer (after any prefill) must match this regular expression: vLLM's structured outputs
    # constrain decoding to it, so a small model cannot leave the format; None: free text.
    regex: str | None = None


class LLM(Protocol):
    """What agents call. Both methods take a batch so one call can fill the engine."""

    def chat(self, conversations: Sequence[list[Message]], params: GenParams) -> list[Completion]:
        """One completion per conversation (the backend applies the model's chat template). A
        conversation that ends with an assistant message is continued from it (answer prefill)."""

    def next_token_logprobs(
        self, prompts: Sequence[list[int]], positions: Sequence[list[int]], top_k: int
    ) -> list[list[dict[int, float]]]:
        """For each token-id prompt, the top_k logprobs of the token *at* each given position
        given all tokens before it (prompt logprobs, one forward pass per prompt)."""

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens."""

    def token_text(self, token_id: int) -> str:
        """The decoded text of one token id."""


class LazyTokenizer:
    """``tokenize``/``token_text`` over a Hugging Face tokenizer loaded on first use. Cached
    properties (the tokenizer, clients) never cross a pickle: each Ray worker makes its own."""

    def _tokenizer_source(self) -> str:
        """The path or hub id ``AutoTokenizer`` loads."""
        raise NotImplementedError

    @cached_property
    def tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self._tokenizer_source())

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if not isinstance(getattr(type(self), k, None), cached_property)}

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def token_text(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])


@dataclass
class Usage:
    calls: int = 0  # requests that reached an engine
    cached: int = 0  # requests answered from the response cache
    tokens_in: int = 0
    tokens_out: int = 0


@dataclass
class Ledger:
    """LLM calls and tokens, per agent, for one neuron's workflow."""

    by_agent: dict[str, Usage] = field(default_factory=lambda: defaultdict(Usage))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, agent: str, calls: int, tokens_in: int, tokens_out: int, cached: int = 0) -> None:
        with self._lock:
            u = self.by_agent[agent]
            u.calls += calls
            u.cached += cached
            u.tokens_in += tokens_in
            u.tokens_out += tokens_out

    def total(self, agents: Sequence[str] | None = None) -> Usage:
        out = Usage()
        for name, u in self.by_agent.items():
            if agents is None or name in agents:
                for k, v in vars(u).items():
                    setattr(out, k, getattr(out, k) + v)
        return out

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {k: vars(v).copy() for k, v in self.by_agent.items()}


@dataclass(frozen=True)
class CallKind:
    """How one kind of engine call is made, cached and counted."""

    name: str  # the call's kind, part of its cache key
    params: dict  # the call's parameters, part of its cache key
    run: Callable[[list], list]  # the engine call on a batch of items
    encode: Callable  # a result as the cache stores it (JSON)
    decode: Callable  # and back
    tokens: Callable[..., tuple[int, int]]  # (item, result) -> (tokens in, tokens out)


class Metered:
    """An LLM wrapper that books every call under ``agent`` in a ledger, through an optional
    response cache (a hit counts its tokens, since the work it stands for is the same, but no call).
    A batch's keys are looked up together and its new answers stored together. The time blocked on
    the LLM goes into ``timings`` (phase ``llm``)."""

    def __init__(self, llm: LLM, ledger: Ledger, cache=None, timings: Timings | None = None):
        self.llm = llm
        self.ledger = ledger
        self.cache = cache
        self.timings = timings or Timings()

    def _cached(self, agent: str, kind: CallKind, items: list) -> list:
        keys = [self.cache.key(kind.name, it, kind.params) for it in items] if self.cache else []
        found = self.cache.get_many(keys) if self.cache else [None] * len(items)
        todo = [i for i, f in enumerate(found) if f is None]
        fresh = []
        if todo:
            with self.timings.phase(LLM_PHASE):
                fresh = kind.run([items[i] for i in todo])
        results = [kind.decode(f) if f is not None else None for f in found]
        for i, r in zip(todo, fresh):
            results[i] = r
        if self.cache and todo:
            self.cache.put_many({keys[i]: kind.encode(r) for i, r in zip(todo, fresh)})
        t_in, t_out = map(sum, zip(*(kind.tokens(it, r) for it, r in zip(items, results)))) if items else (0, 0)
        self.ledger.add(agent, len(todo), t_in, t_out, cached=len(items) - len(todo))
        return results

    def chat(self, agent: str, conversations: Sequence[list[Message]], params: GenParams) -> list[Completion]:
        kind = CallKind(
            "chat",
            vars(params),
            run=lambda convs: self.llm.chat(convs, params),
            encode=lambda c: vars(c),
            decode=lambda d: Completion(**d),
            tokens=lambda _, c: (c.tokens_in, c.tokens_out),
        )
        return self._cached(agent, kind, list(conversations))

    def next_token_logprobs(self, agent: str, prompts, positions, top_k: int):
        kind = CallKind(
            "prompt_logprobs",
            {"top_k": top_k},
            run=lambda its: self.llm.next_token_logprobs([i[0] for i in its], [i[1] for i in its], top_k),
            # JSON object keys are strings: keep token ids as ints on the way back.
            encode=lambda r: [sorted(d.items()) for d in r],
            decode=lambda r: [{int(t): lp for t, lp in d} for d in r],
            tokens=lambda it, _: (len(it[0]), 0),
        )
        return self._cached(agent, kind, [[list(p), list(q)] for p, q in zip(prompts, positions)])

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text)

    def token_text(self, token_id: int) -> str:
        return self.llm.token_text(token_id)
