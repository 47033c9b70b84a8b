"""The LLM agents. Each renders its versioned template, sends a batch of conversations in one
``chat`` call, parses strictly, and re-asks only the malformed ones with a corrective follow-up."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial

from .. import prompts
from ..errors import AgentOutputError
from ..exemplars import CONTEXT_AFTER, Exemplar, Scale, describe, escape, mark, mode_tokens, word_at
from ..llm.agents import Agent
from ..llm.base import GenParams, Message, Metered
from ..results.transcript import AgentAnswer, AgentFailure, Entry
from . import parse

# Short answers: a 135M explainer drifts on long generations, and tokens out are the cost.
# The token cap also bounds an explanation to about 20 words: longer ones simulate badly.
# Decoding is constrained to the formats the parsers read (parse.FORMATS): one plain line after
# the "Explanation:" prefill (no markup, no second line), or 1 to 3 "- " feature lines (the prompt
# asks for 1 to 3; a fourth and later line were repeats of the first ones).
EXPLANATION_REGEX = r" [A-Za-z0-9\"'(][^\n<>]{0,100}"
COMPONENTS_REGEX = r"(- [A-Za-z0-9\"'(][^\n<>]{0,60}\n){1,3}"
PARAMS = {
    Agent.DECONSTRUCT: GenParams(max_tokens=24, regex=COMPONENTS_REGEX),
    Agent.EXPLAIN: GenParams(max_tokens=24, regex=EXPLANATION_REGEX),
    Agent.REFINE: GenParams(max_tokens=24, regex=EXPLANATION_REGEX),
    Agent.SINGLE_PASS: GenParams(max_tokens=24, regex=EXPLANATION_REGEX),
}
# Deconstruct asks what the marked word means where it stands: half the explainers' context
# before it is enough (it is called once per explain exemplar, so its context is paid 8 times).
DECONSTRUCT_BEFORE = 8
RETRY_TEMPERATURE = 0.7
# A mode's further candidate explanations are sampled, seeded (SAMPLE_SEED x k for the k-th), so
# that reruns agree.
SAMPLE_TEMPERATURE = 0.9
SAMPLE_SEED = 1000
EXPLANATION_PREFILL = "Explanation:"


@dataclass(frozen=True)
class AgentSession:
    """Where one neuron's agents ask: the metered LLM (its ledger books every call), the corrective
    follow-ups a malformed answer gets, and the transcript every answer goes into."""

    llm: Metered
    retries: int
    transcript: list[Entry]


@dataclass(frozen=True)
class AnswerSpec:
    """How a batch's answers are asked for and checked. ``parser(text, truncated=...)`` reads an
    answer (ParseError when malformed); ``params`` default to the agent's ``PARAMS``; a ``prefill``
    starts the answer (e.g. "Explanation:"), so a small model only has to continue the required
    format; ``guard(parsed, conversation)`` raises ParseError for a well-formed answer that is still
    unusable (e.g. a copy of the prompt's text); with ``give_up(i, reason)``, an answer still
    malformed after the retries gets its return value instead of failing the batch."""

    parser: Callable
    params: GenParams | None = None
    prefill: str = ""
    guard: Callable | None = None
    give_up: Callable[[int, str], object] | None = None


def run_batch(s: AgentSession, agent: Agent, conversations: list[list[Message]], spec: AnswerSpec) -> list:
    """Parsed answers, one per conversation; AgentOutputError if one stays malformed after
    ``s.retries`` corrective follow-ups (never a guessed value)."""
    params = spec.params or PARAMS[agent]
    convs = [list(c) for c in conversations]
    results: list = [None] * len(convs)
    todo = list(range(len(convs)))
    for attempt in range(s.retries + 1):
        # Greedy decoding would repeat a malformed answer: retries sample, seeded, so reruns agree.
        p = params if attempt == 0 else replace(params, temperature=RETRY_TEMPERATURE, seed=params.seed + attempt)
        start: list[Message] = [{"role": "assistant", "content": spec.prefill}] if spec.prefill else []
        answers = s.llm.chat(agent, [convs[i] + start for i in todo], p)
        failed = []
        for i, ans in zip(todo, answers):
            text = spec.prefill + ans.text
            entry = AgentAnswer(agent, i, attempt, convs[i] + start, text)
            try:
                results[i] = spec.parser(text, truncated=ans.tokens_out >= p.max_tokens)
                if spec.guard:
                    spec.guard(results[i], conversations[i])
                entry.parsed = results[i]
            except parse.ParseError as e:
                entry.error = str(e)
                failed.append((i, text, str(e)))
            s.transcript.append(entry)
        if not failed:
            return results
        for i, raw, reason in failed:
            convs[i] = convs[i] + [
                {"role": "assistant", "content": raw},
                {"role": "user", "content": f"Wrong format: {reason}. Answer again, {_format_of(spec.parser)}."},
            ]
        todo = [i for i, _, _ in failed]
    if spec.give_up is not None:
        for i, _, reason in failed:
            results[i] = spec.give_up(i, reason)
        return results
    i, raw, reason = failed[0]
    raise AgentOutputError(
        f"{agent} agent answer malformed after {s.retries + 1} attempt(s): {reason}; last answer {raw[:120]!r}",
        agent=agent,
    )


def _format_of(parser: Callable) -> str:
    return parse.FORMATS[getattr(parser, "func", parser)]  # a partial names the parser it wraps


EXPLANATION_ANSWER = AnswerSpec(parse.explanation, prefill=EXPLANATION_PREFILL, guard=parse.not_a_copy)


def _explanations(s: AgentSession, agent: Agent, convs: list[list[Message]]) -> list[str]:
    """One explanation per conversation: the "Explanation:" prefill, and no copy of the prompt."""
    return run_batch(s, agent, convs, EXPLANATION_ANSWER)


def deconstruct(s: AgentSession, exemplars: list[Exemplar], scale: Scale) -> list[list[str]]:
    """Atomic semantic components per exemplar: one tiny call per exemplar, all in one batch.
    The example's own features are dropped from the answers, and an answer still malformed after
    the retries leaves its exemplar without features (recorded): an exemplar may have none."""
    convs = [prompts.render(Agent.DECONSTRUCT, exemplar=describe(e, scale, DECONSTRUCT_BEFORE)) for e in exemplars]
    parser = partial(parse.components, drop=parse.example_features(convs[0])) if convs else parse.components

    def no_features(i: int, reason: str) -> list[str]:
        s.transcript.append(
            AgentFailure(Agent.DECONSTRUCT, f"exemplar {exemplars[i].window_id}: {reason}; no features")
        )
        return []

    return run_batch(s, Agent.DECONSTRUCT, convs, AnswerSpec(parser, give_up=no_features))


def exemplar_lines(exemplars: list[Exemplar], scale: Scale) -> str:
    """The exemplars as the agents read them, one ``describe`` block each."""
    return "\n".join(describe(e, scale) for e in exemplars)


def tokens_line(exemplars: list[Exemplar], scale: Scale) -> str:
    """'king (5), queen (2)': the firing words of these exemplars, each with the number of texts
    it fires in: what even a weak explainer can name."""
    return ", ".join(escape(t) for t in mode_tokens(exemplars, scale))


def pushed_line(promoted: Sequence[str]) -> str:
    """The templates' ``{pushed}`` field: a line naming the tokens the neuron's output promotes
    (each stripped and escaped, once, undecodable pieces left out), after a newline; "" without
    any, so the prompt reads as before."""
    words = dict.fromkeys(t.strip() for t in promoted)
    shown = [escape(w) for w in words if w.strip("\ufffd")]
    return f"\nWhen it fires, the model is pushed towards: {', '.join(shown)}" if shown else ""


def explain_modes(
    s: AgentSession,
    modes: list[list[Exemplar]],
    components: list[list[str]],
    scale: Scale,
    n: int = 1,
    promoted: Sequence[str] = (),
) -> list[list[str]]:
    """Up to ``n`` candidate explanations per semantic mode, from that mode's exemplars and
    components (and the tokens the neuron's output promotes, where known): the greedy answer,
    then ``n - 1`` sampled ones (seeded). An answer still malformed after its retries is left out
    (recorded), so a mode may get none."""
    convs = [
        prompts.render(
            Agent.EXPLAIN,
            exemplars=exemplar_lines(ex, scale),
            tokens=tokens_line(ex, scale),
            components="; ".join(escape(c) for c in comps) or "(none)",
            pushed=pushed_line(promoted),
        )
        for ex, comps in zip(modes, components)
    ]

    def none(i: int, reason: str) -> None:
        s.transcript.append(AgentFailure(Agent.EXPLAIN, f"mode {i}: {reason}; candidate left out"))

    out: list[list[str]] = [[] for _ in convs]
    for k in range(n):
        params = (
            PARAMS[Agent.EXPLAIN]
            if k == 0
            else replace(PARAMS[Agent.EXPLAIN], temperature=SAMPLE_TEMPERATURE, seed=SAMPLE_SEED * k)
        )
        spec = replace(EXPLANATION_ANSWER, params=params, give_up=none)
        for mode, answer in zip(out, run_batch(s, Agent.EXPLAIN, convs, spec)):
            if answer is not None and answer not in mode:
                mode.append(answer)
    return out


def single_pass(s: AgentSession, exemplars: list[Exemplar], scale: Scale, promoted: Sequence[str] = ()) -> str:
    """The Bills et al. baseline: one explanation from all explain exemplars (and the tokens the
    neuron's output promotes, where known)."""
    conv = prompts.render(
        Agent.SINGLE_PASS,
        exemplars=exemplar_lines(exemplars, scale),
        tokens=tokens_line(exemplars, scale),
        pushed=pushed_line(promoted),
    )
    return _explanations(s, Agent.SINGLE_PASS, [conv])[0]


def case_lines(cases: list[tuple[Exemplar, int, float]], scale: Scale) -> str:
    """'<text>...<<word>>...</text> true 9, guessed 1' lines; the mark is on the case's whole word only."""
    lines = []
    for ex, pos, pred in cases:
        w = word_at(ex.tokens, pos)
        start, end = (w.start, w.end) if w else (pos, pos + 1)
        lo, hi = max(0, start - 8), min(len(ex.tokens), end + CONTEXT_AFTER)
        text = escape("".join(ex.tokens[lo:start])) + mark(escape("".join(ex.tokens[start:end])))
        text += escape("".join(ex.tokens[end:hi]))
        true = int(scale.scaled([max(ex.activations[start:end])])[0])
        lines.append(f"<text>{text.strip()}</text> true {true}, guessed {round(pred)}")
    return "\n".join(lines) or "(none)"


def refine(
    s: AgentSession,
    explanations: list[str],
    tokens: list[str],
    misses: list[list],
    false_alarms: list[list],
    scale: Scale,
) -> list[str]:
    """A revised explanation per mode, from the judge's misses and false alarms; ``tokens`` is
    each mode's ``tokens_line``."""
    convs = [
        prompts.render(
            Agent.REFINE, explanation=x, tokens=t, misses=case_lines(m, scale), false_alarms=case_lines(f, scale)
        )
        for x, t, m, f in zip(explanations, tokens, misses, false_alarms)
    ]
    return _explanations(s, Agent.REFINE, convs)
