"""Stage flags generated from the pydantic config models, and the config they make."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from ..config import CausalConfig, ExplainConfig, LLMConfig, RecordConfig, RunConfig, load_config
from ..errors import NeuronScopeError

# (section, model, flag prefix)
SECTIONS: dict[str, tuple[type[BaseModel], str]] = {
    "record": (RecordConfig, ""),
    "explain": (ExplainConfig, ""),
    "llm": (LLMConfig, "llm-"),
    "causal": (CausalConfig, "causal-"),
}


def add_flags(p: argparse.ArgumentParser, section: str, skip: tuple[str, ...] = ()) -> None:
    """One flag per field of a config section (``SECTIONS``), except those in ``skip``."""
    model, prefix = SECTIONS[section]
    group = p.add_argument_group(f"{section} settings")
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        flag = "--" + prefix + name.replace("_", "-")
        # Values stay strings here: pydantic validates and converts them, naming any bad one.
        group.add_argument(flag, dest=f"{section}.{name}", default=None, metavar=name.upper(), help=flag_help(field))


def flag_help(field: FieldInfo) -> str:
    """A config field's description, its allowed values when it is a Literal, and its default."""
    allowed = get_args(field.annotation) if get_origin(field.annotation) is Literal else ()
    one_of = f"one of: {', '.join(map(str, allowed))}; " if allowed else ""
    # argparse %-formats help strings
    return f"{field.description or ''} ({one_of}default: {field.default})".replace("%", "%%")


def config_from_args(args: argparse.Namespace, base: dict | None = None) -> RunConfig:
    """The --config file (or the defaults) with ``base`` and then the flags given on top, validated."""
    overrides: dict[str, dict] = {k: dict(v) for k, v in (base or {}).items()}
    for key, value in vars(args).items():
        if "." in key and value is not None:
            section, name = key.split(".", 1)
            overrides.setdefault(section, {})[name] = value
    return load_config(args.config, overrides)


def names_a_hub_id(args: argparse.Namespace) -> bool:
    """Whether the command's models name a Hugging Face hub id (to be fetched) rather than only
    bundled models and local folders (which need no network, and then no hub call is made)."""
    if not hasattr(args, "config"):
        return False
    try:
        cfg = config_from_args(args)
    except NeuronScopeError:
        return False  # the command itself reports the bad config
    names = (cfg.record.model, cfg.llm.model, cfg.explain.embedder)
    return any(not n.startswith("bundled:") and not Path(n).expanduser().exists() for n in names)
