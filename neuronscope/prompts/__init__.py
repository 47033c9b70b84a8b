"""Versioned prompt templates: ``templates/NAME.vN.txt``, rendered into chat messages.

A template is a sequence of ``### role`` sections (system / user / assistant; earlier
user/assistant pairs are the few-shot example). ``{name}`` fields are filled with str.format, so
literal braces are written ``{{ }}``. The version is part of the file name (its one source) and
is recorded in the output, so a changed prompt is never confused with an old one; a test pins
each versioned file's text (``tests/golden/prompt_versions.sha256``): new text, new version.
``template_of`` names the template a conversation was rendered from.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Sequence
from functools import cache
from importlib import resources
from typing import cast

from ..llm.agents import Agent
from ..llm.base import Message, Role

TEMPLATES = resources.files(__package__).joinpath("templates")
_FILE = re.compile(r"(\w+)\.(v\d+)\.txt")
_SECTION = re.compile(r"^### (system|user|assistant)\s*$", re.M)


def _versions() -> dict[Agent, str]:
    """Each agent's template version, read from the file names: the one place it is written."""
    out: dict[Agent, str] = {}
    for f in TEMPLATES.iterdir():
        m = _FILE.fullmatch(f.name)
        if not m:
            continue
        name = Agent(m[1])  # a template is named after its agent
        if name in out:
            raise ValueError(f"template {name} has two versions ({out[name]}, {m[2]}): keep the current one")
        out[name] = m[2]
    return out


VERSIONS = _versions()


def template_id(name: Agent) -> str:
    return f"{name}.{VERSIONS[name]}"


@cache
def load(name: Agent) -> list[tuple[Role, str]]:
    """(role, text) sections of the current version of template ``name``."""
    text = TEMPLATES.joinpath(f"{template_id(name)}.txt").read_text("utf-8")
    pieces = _SECTION.split(text)
    if pieces[0].strip():
        raise ValueError(f"template {template_id(name)} has text before its first ### section")
    # _SECTION matches the three roles only
    return [(cast(Role, role), body.strip("\n")) for role, body in zip(pieces[1::2], pieces[2::2])]


def render(name: Agent, **fields) -> list[Message]:
    """Chat messages of template ``name`` with ``fields`` filled in."""
    return [{"role": role, "content": body.format(**fields)} for role, body in load(name)]


@cache
def _opening(name: Agent) -> tuple[tuple[Role, str], ...]:
    """The sections of template ``name`` before its first field (its system text and few-shot
    example), as every conversation rendered from it opens."""
    out = []
    for role, body in load(name):
        if any(f is not None for _, f, _, _ in string.Formatter().parse(body)):
            break
        out.append((role, body.format()))
    return tuple(out)


def template_of(messages: Sequence[Message]) -> Agent | None:
    """The agent whose chat template ``messages`` were rendered from (follow-ups and an answer
    prefill after it allowed): the one whose opening sections open the conversation, the longest
    where several do; None for any other. Templates read as one token-id prompt (the simulator,
    detection, fuzzing) open with a field and match nothing."""
    found, longest = None, 0
    for name in VERSIONS:
        opening = _opening(name)
        if longest < len(opening) <= len(messages) and all(
            m["role"] == role and m["content"] == text for m, (role, text) in zip(messages, opening)
        ):
            found, longest = name, len(opening)
    return found


def raw_text(name: Agent, **fields) -> str:
    """A template with a single section (e.g. the simulator header), filled in."""
    sections = load(name)
    if len(sections) != 1:
        raise ValueError(f"template {template_id(name)} has {len(sections)} sections, expected 1")
    return sections[0][1].format(**fields)


def as_text(messages: list[Message]) -> str:
    """A stable plain-text form of messages, for golden files and transcripts."""
    return "".join(f"### {m['role']}\n{m['content']}\n" for m in messages)


def template_versions(names: Iterable[Agent]) -> str:
    return "+".join(template_id(n) for n in names)
