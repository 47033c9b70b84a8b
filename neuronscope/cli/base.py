"""The shape of a ``neuronscope`` subcommand (after vLLM's ``entrypoints/cli/types.py``)."""

from __future__ import annotations

import argparse
from abc import ABC, abstractmethod

from ..logs import Progress


class Command(ABC):
    """One subcommand: its name and help line, its arguments, and what it does. Heavy imports
    wait for ``run``: the parser is built before the environment the libraries read is set."""

    name: str
    help: str

    @abstractmethod
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The command's arguments and flags."""

    @abstractmethod
    def run(self, args: argparse.Namespace, progress: Progress) -> None:
        """Do the command, printing its result on stdout; a NeuronScopeError ends it with status 2."""
