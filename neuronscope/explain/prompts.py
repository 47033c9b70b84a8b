"""Versioned prompt templates: ``prompts/NAME.vN.txt``, rendered into chat messages.

A template is a sequence of ``### role`` sections (system / user / assistant; earlier
user/assistant pairs are the few-shot example). ``{name}`` fields are filled with str.format, so
literal braces are written ``{{ }}``. The version is part of the file name and is recorded in the
output, so a changed prompt is never confused with an old one.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from ..llm.base import Message

VERSIONS = {
    "deconstruct": "v2",
    "explain": "v2",
    "refine": "v2",
    "single_pass": "v2",
    "simulate": "v2",
    "detection": "v1",
    "fuzzing": "v1",
}
_SECTION = re.compile(r"^### (system|user|assistant)\s*$", re.M)


def template_id(name: str) -> str:
    return f"{name}.{VERSIONS[name]}"


@cache
def load(name: str) -> list[tuple[str, str]]:
    """(role, text) sections of the current version of template ``name``."""
    text = resources.files(__package__).joinpath("prompts", f"{template_id(name)}.txt").read_text("utf-8")
    pieces = _SECTION.split(text)
    if pieces[0].strip():
        raise ValueError(f"template {template_id(name)} has text before its first ### section")
    return [(role, body.strip("\n")) for role, body in zip(pieces[1::2], pieces[2::2])]


def render(name: str, **fields) -> list[Message]:
    """Chat messages of template ``name`` with ``fields`` filled in."""
    return [{"role": role, "content": body.format(**fields)} for role, body in load(name)]


def raw_text(name: str, **fields) -> str:
    """A template with a single section (e.g. the simulator header), filled in."""
    sections = load(name)
    if len(sections) != 1:
        raise ValueError(f"template {template_id(name)} has {len(sections)} sections, expected 1")
    return sections[0][1].format(**fields)


def as_text(messages: list[Message]) -> str:
    """A stable plain-text form of messages, for golden files and transcripts."""
    return "".join(f"### {m['role']}\n{m['content']}\n" for m in messages)


def template_versions(names) -> str:
    return "+".join(template_id(n) for n in names)
