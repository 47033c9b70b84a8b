"""The record stage: activation exemplars and stats per MLP neuron, via Ray Data."""

from .driver import record
from .source import list_corpus

__all__ = ["list_corpus", "record"]
