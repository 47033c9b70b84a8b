"""The ``neuronscope`` command. Stage flags are generated from the pydantic config models."""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import NeuronScopeError
from .commands import COMMANDS
from .flags import names_a_hub_id


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="neuronscope", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_arguments(sub.add_parser(command.name, help=command.help))
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    # before anything imports huggingface_hub, which reads it once
    os.environ.setdefault("HF_HUB_OFFLINE", "0" if names_a_hub_id(args) else "1")
    from ..logs import printer

    command = next(c for c in COMMANDS if c.name == args.command)
    progress = printer()
    try:
        command.run(args, progress)
    except NeuronScopeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


def job(command: str) -> None:
    """Entry for ``ray_jobs/*.py``: ``command`` with the job's own arguments."""
    sys.exit(main([command, *sys.argv[1:]]))


__all__ = ["build_parser", "job", "main"]
